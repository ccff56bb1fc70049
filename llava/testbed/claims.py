"""The AgilePruner paper's claims, tested on the testbed's results (scripts/testbed/eval.sh writes them;
llava.testbed.report calls this and writes claims.md).

Each claim is measured the same way every time, from the relative accuracies (mean over the benchmarks of
score / unpruned score, llava.eval.summarize), CHAIR_s and the erank of the kept tokens (--pruning-stats):
1. attention-based selection (FasterVLM) beats diversity-based (DivPrune, FPS: their mean) on simple pictures,
   and the reverse on complex ones: mean relative accuracy over the K values run, per regime;
2. for the hybrids (mix, vispruner), --complexity-rule adaptive beats fixed, which beats inverse: mean
   relative accuracy over K and both regimes (runs named mix, mix-adaptive, mix-inverse, ...);
3. diversity methods keep much less erank than the whole image has (the paper: 21.8 of about 100 for DivPrune
   at 64 tokens on POPE), and hallucinate more (CHAIR_s) than attention methods: at K=64, kept erank / image
   erank for DivPrune and FPS, and mean CHAIR_s over K and regimes against FasterVLM's;
4. agile has the best mean relative accuracy of all methods (over K and both regimes; the hybrids' rule
   variants are not separate methods here).

The same claims are judged a second time with each relative accuracy taken over the benchmarks in AT_CHANCE
left out (`without()`): the testbed's model answers position questions at chance unpruned (its patch tokens
do not say where they are; llava.testbed.probe), so there a pruned run's score over the unpruned one is luck,
and with few position questions (7 on the first 30 simple pictures) one answer moves a mean by many points.
"""
import math
import os

ATTENTION = ("fastervlm",)
DIVERSITY = ("divprune", "fps")
HYBRIDS = ("mix", "vispruner")
RULES = ("adaptive", "fixed", "inverse")
AT_CHANCE = ("position",)  # benchmarks the committed testbed model answers at chance unpruned
_NOT_SCORES = ("method", "K", "avg", "n")


def _mean(values):
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def load(results, ckpt, regimes):
    """{regime: (rows by (method, K), pruning stats by (method, K), mean erank of the whole images)}."""
    from llava.eval import summarize as S

    from llava.testbed.report import image_stats

    out = {}
    for regime in regimes:
        _, rows, stats = S.summarize(os.path.join(results, regime), ckpt)
        out[regime] = regime_data(rows, stats, image_stats(results, regime, ckpt)[0])
    return out


def regime_data(rows, stats, image_erank):
    """One regime's entry of load()'s dict, from llava.eval.summarize's rows and stats."""
    return {(r["method"], r["K"]): r for r in rows}, stats, image_erank


def without(data, benches):
    """load()'s dict with every row's relative accuracy recomputed over its benchmarks but `benches`."""
    from llava.eval.summarize import relative_average

    def scores(row):
        return {b: v for b, v in row.items() if b not in _NOT_SCORES and b not in benches}

    out = {}
    for regime, (rows, stats, image_erank) in data.items():
        base = rows.get(("none", 576))
        rows = {key: {**r, "avg": relative_average(scores(r), scores(base))[0] if base else math.nan}
                for key, r in rows.items()}
        out[regime] = (rows, stats, image_erank)
    return out


def _acc(data, regime, method):
    rows = data[regime][0]
    return _mean([r["avg"] for (m, k), r in rows.items() if m == method and k != 576])


def _chair(data, regime, method):
    rows = data[regime][0]
    return _mean([r.get("chair") for (m, k), r in rows.items() if m == method and k != 576])


def _kept_erank(data, regime, method, k=64):
    kept = data[regime][1].get((method, k), {}).get("chair")
    return (kept[0], data[regime][2]) if kept else (math.nan, math.nan)


def _verdict(ok):
    return "n/a (not run)" if ok is None else ("holds" if ok else "does not hold")


def evaluate(data):
    """[(claim, measured, verdict)] for the four claims; a claim whose runs are missing is 'n/a'."""
    regimes = [r for r in ("simple", "complex") if r in data]
    out = []
    # 1
    cells, checks = [], []
    for regime in regimes:
        att = _mean([_acc(data, regime, m) for m in ATTENTION])
        div = _mean([_acc(data, regime, m) for m in DIVERSITY])
        cells.append(f"{regime}: attention {att:.1f}, diversity {div:.1f}")
        if not (math.isnan(att) or math.isnan(div)):
            checks.append(att > div if regime == "simple" else div > att)
    ok = all(checks) if len(checks) == len(regimes) and checks else None
    out.append(("1. attention beats diversity on simple pictures, diversity beats attention on complex ones",
                "; ".join(cells), _verdict(ok)))
    # 2
    cells, checks = [], []
    for hybrid in HYBRIDS:
        names = {"fixed": hybrid, "adaptive": f"{hybrid}-adaptive", "inverse": f"{hybrid}-inverse"}
        accs = {rule: _mean([_acc(data, r, names[rule]) for r in regimes]) for rule in RULES}
        cells.append(f"{hybrid}: " + ", ".join(f"{rule} {accs[rule]:.1f}" for rule in RULES))
        if not any(math.isnan(v) for v in accs.values()):
            checks.append(accs["adaptive"] > accs["fixed"] > accs["inverse"])
    out.append(("2. hybrids: adaptive > fixed > inverse", "; ".join(cells),
                _verdict(all(checks) if len(checks) == len(HYBRIDS) else None)))
    # 3
    cells, checks = [], []
    for regime in regimes:
        ratios = []
        for m in DIVERSITY:
            kept, image = _kept_erank(data, regime, m)
            ratios.append(kept / image if image else math.nan)
            cells.append(f"{regime} {m}@64 kept erank {kept:.1f} of {image:.1f}")
        if not any(math.isnan(x) for x in ratios):
            checks.append(max(ratios) < 0.5)
    div_chair = _mean([_chair(data, r, m) for r in regimes for m in DIVERSITY])
    att_chair = _mean([_chair(data, r, m) for r in regimes for m in ATTENTION])
    cells.append(f"CHAIR_s diversity {div_chair:.1f}, attention {att_chair:.1f}")
    erank_ok = all(checks) if len(checks) == len(regimes) and checks else None
    chair_ok = None if math.isnan(div_chair) or math.isnan(att_chair) else div_chair > att_chair
    out.append(("3. diversity methods keep far less erank than the image has (under half at K=64) and "
                "hallucinate more than attention methods", "; ".join(cells),
                f"erank: {_verdict(erank_ok)}; CHAIR: {_verdict(chair_ok)}"))
    # 4
    methods = sorted({m for r in regimes for (m, k) in data[r][0] if m != "none" and "-" not in m})
    mean = {m: _mean([_acc(data, r, m) for r in regimes]) for m in methods}
    ranked = sorted((m for m in methods if not math.isnan(mean[m])), key=lambda m: -mean[m])
    if "agile" in ranked:
        place = ranked.index("agile") + 1
        best = ", ".join(f"{m} {mean[m]:.1f}" for m in ranked[:3])
        out.append(("4. agile has the best mean relative accuracy",
                    f"agile {mean['agile']:.1f}, place {place} of {len(ranked)} (best: {best})", _verdict(place == 1)))
    else:
        out.append(("4. agile has the best mean relative accuracy", "agile not run", _verdict(None)))
    return out


def markdown(data):
    """The claims table (markdown) for load()'s dict."""
    lines = ["| claim | measured | verdict |", "|---|---|---|"]
    lines += [f"| {c} | {m} | {v} |" for c, m, v in evaluate(data)]
    return "\n".join(lines) + "\n"
