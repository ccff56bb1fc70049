"""Summarise the results of scripts/testbed/eval.sh with llava.eval.summarize: per regime, every method x K.

    python -m llava.testbed.report --results playground/data/testbed/results [--ckpt llava-testbed]

Reads <results>/<regime>/<bench>/scores/<ckpt>/<method>/k<K>.json (the eval-script layout; benches: pope,
colour, counting, position, reading, chair) and the --pruning-stats metadata of the caption answers (one
per image), and writes into <results>:
  table.md                 per regime: the compact table (relative accuracy % per method and K, as the
                           paper's Avg: mean over the benchmarks of score / unpruned score), the unpruned
                           scores, mean erank and CLS-attention entropy of the images, then summarize's
                           full per-benchmark table;
  table.csv                summarize's rows with a regime column;
  relative_accuracy.png    relative accuracy versus K per method, one panel per regime;
  claims.md                the paper's four claims, measured and judged (llava.testbed.claims).
"""
import csv
import io
import json
import math
import os
import sys

from llava.eval import summarize as S
from llava.testbed import claims
from llava.utils import entry_parser


def image_stats(results, regime, ckpt):
    """(mean erank of all visual tokens, mean CLS-attention entropy, images) over the regime's images,
    from the caption answers' pruning metadata (one answer per image; the first run that has them)."""
    root = os.path.join(results, regime, "chair", "answers", ckpt)
    for method in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        for name in sorted(os.listdir(os.path.join(root, method))):
            erank, entropy = [], []
            with open(os.path.join(root, method, name), encoding="utf-8") as f:
                for line in f:
                    stats = json.loads(line).get("metadata", {}).get("pruning") or {}
                    if stats.get("erank_all") is not None and stats.get("attention_entropy") is not None:
                        erank.append(stats["erank_all"])
                        entropy.append(stats["attention_entropy"])
            if erank:
                return sum(erank) / len(erank), sum(entropy) / len(entropy), len(erank)
    return math.nan, math.nan, 0


def compact(rows, benches):
    """Markdown: one row per method, one column per K, cells = relative accuracy (%)."""
    ks = sorted({r["K"] for r in rows if r["method"] != "none"}, reverse=True)
    methods = [m for m in S.METHOD_ORDER if m != "none" and any(r["method"] == m for r in rows)]
    methods += sorted({r["method"] for r in rows} - set(methods) - {"none"})
    cell = {(r["method"], r["K"]): r["avg"] for r in rows}
    lines = ["| method | " + " | ".join(f"K={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    best = [max((cell[o, k] for o in methods if not math.isnan(cell.get((o, k), math.nan))), default=None)
            for k in ks]
    for m in methods:
        vals = [cell.get((m, k), math.nan) for k in ks]
        cells = ["-" if math.isnan(v) else (f"**{v:.1f}**" if v == b else f"{v:.1f}") for v, b in zip(vals, best)]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report(results, ckpt, regimes):
    md, csv_rows, panels, data = [], [], [], {}
    for regime in regimes:
        benches, rows, stats = S.summarize(os.path.join(results, regime), ckpt)
        base = next((r for r in rows if r["method"] == "none"), None)
        erank, entropy, n = image_stats(results, regime, ckpt)
        data[regime] = claims.regime_data(rows, stats, erank)
        md += [f"## {regime}", "",
               f"Images: {n}; mean erank of the 576 visual tokens {erank:.1f}, mean CLS-attention entropy "
               f"{entropy:.2f} nats.", ""]
        if base:
            md += ["Unpruned: " + ", ".join(f"{b} {base[b]:.1f}" for b in benches if b in base)
                   + " (POPE = F1 averaged over the three splits; CHAIR = CHAIR_s, lower is better).", ""]
        used = [b for b in benches if b not in S.LOWER_IS_BETTER and base and base.get(b)]  # as relative_average
        md += ["Relative accuracy (%, mean of score / unpruned score over " + ", ".join(used) + "):", "",
               compact(rows, benches),
               "Per benchmark:", "", S.markdown(benches, rows, stats)]
        csv_rows += [{"regime": regime, **r} for r in csv.DictReader(io.StringIO(S.to_csv(benches, rows)))]
        panels.append((regime, rows, erank))
    with open(os.path.join(results, "table.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(md))
    with open(os.path.join(results, "table.csv"), "w", encoding="utf-8", newline="") as f:
        fields = list(dict.fromkeys(k for r in csv_rows for k in r))  # benchmarks differ per regime (reading)
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(csv_rows)
    plot(panels, os.path.join(results, "relative_accuracy.png"))
    judged = "# The paper's claims on this testbed\n\n" + claims.markdown(data)
    dropped = ", ".join(claims.AT_CHANCE)
    judged += (f"\nThe same, with relative accuracy over the benchmarks but {dropped} (answered at chance by the "
               f"unpruned testbed model, so a pruned run's score there is luck):\n\n"
               + claims.markdown(claims.without(data, claims.AT_CHANCE)))
    with open(os.path.join(results, "claims.md"), "w", encoding="utf-8") as f:
        f.write(judged)
    return "\n".join(md) + "\n" + judged


def plot(panels, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), sharey=True, squeeze=False)
    for ax, (regime, rows, erank) in zip(axes[0], panels):
        methods = sorted({r["method"] for r in rows if r["method"] != "none"}, key=lambda m: S.sort_key((m, 0)))
        for i, m in enumerate(methods):  # 21 methods: ten colours x three markers, agile black and thick
            pts = sorted((r["K"], r["avg"]) for r in rows if r["method"] == m and not math.isnan(r["avg"]))
            if pts:
                style = ({"color": "black", "linewidth": 2.5, "marker": "o"} if m == "agile" else
                         {"color": f"C{i % 10}", "linewidth": 1.2, "marker": "os^"[i // 10 % 3],
                          "linestyle": ("-", "--", ":")[i // 10 % 3]})
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=m, **style)
        ax.axhline(100.0, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"{regime} (mean erank {erank:.0f})")
        ax.set_xlabel("K (visual tokens kept of 576)")
    axes[0][0].set_ylabel("relative accuracy (% of unpruned)")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the plots, not on them
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def build_parser():
    p = entry_parser("llava.testbed.report", __doc__)
    p.add_argument("--results", required=True,
                   help="eval.sh's results folder (<results>/<regime>/<bench>/scores/...); the tables go here too")
    p.add_argument("--ckpt", default="llava-testbed", help="the checkpoint name used in the answers/scores paths")
    p.add_argument("--regimes", nargs="+", default=["simple", "complex"], help="the regimes to report, in order")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        print(report(args.results, args.ckpt, args.regimes))
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
