"""Collect benchmark scores over pruning methods and K into the paper's table layout.

    python -m llava.eval.summarize --eval-dir playground/data/eval --ckpt llava-v1.5-7b \
        --markdown table.md --csv table.csv --plot relative.png

Reads `<eval-dir>/<bench>/scores/<ckpt>/<method>/k<K>.json` (written by each scorer's --score-file,
the eval scripts do that; its "score" is the headline number of that benchmark) and, for
--pruning-stats runs, `<eval-dir>/<bench>/answers/<ckpt>/<method>/k<K>.jsonl`. For benchmarks scored
on a server (VQAv2, VizWiz, MMBench), write the server's number yourself as {"score": 78.5} in that
place.

One row per (method, K), one column per benchmark, and `Avg` = the mean over the benchmarks of
score / unpruned score, in %, as the AgilePruner and FasterVLM tables compute it. The unpruned row is
method `none` (--baseline). Benchmarks where lower is better (CHAIR) are shown but not averaged. The
average uses the benchmarks the row and the baseline both have; `n` says how many.
"""
import csv
import io
import json
import math
import os
import re
import sys

from llava.utils import entry_parser

# the paper's column order; other benchmarks follow alphabetically
ORDER = ["vqav2", "gqa", "vizwiz", "scienceqa", "textvqa", "pope", "MME", "mmbench", "mmbench_cn", "seed_bench",
         "llava-bench-in-the-wild", "mm-vet", "chair"]
LOWER_IS_BETTER = {"chair"}
METHOD_ORDER = ["none", "fastv", "pdrop", "sparsevlm", "sparsevlm_v2", "dart", "fastervlm", "random", "fps", "divprune",
                "visionzip", "prumerge", "prumerge_plus", "holov", "fopru", "vispruner", "mix", "agile"]


def _k_of(name):
    m = re.fullmatch(r"k(\d+)\.json", name)
    return int(m.group(1)) if m else None


def collect(eval_dir, ckpt):
    """{(method, K): {bench: score}} from the score files."""
    table = {}
    if not os.path.isdir(eval_dir):
        raise FileNotFoundError(f"--eval-dir not found: {eval_dir}")
    for bench in sorted(os.listdir(eval_dir)):
        root = os.path.join(eval_dir, bench, "scores", ckpt)
        if not os.path.isdir(root):
            continue
        for method in sorted(os.listdir(root)):
            folder = os.path.join(root, method)
            for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
                k = _k_of(name)
                if k is None:
                    continue
                path = os.path.join(folder, name)
                try:
                    with open(path, encoding="utf-8") as f:
                        score = json.load(f)["score"]
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ValueError(f"{path}: expected a JSON object with a numeric 'score' ({e})") from None
                if score is not None:
                    table.setdefault((method, k), {})[bench] = float(score)
    return table


def pruning_stats(eval_dir, ckpt, keys, benches):
    """{(method, K): {bench: (mean erank_kept, mean attention_entropy, answers with stats)}}."""
    out = {}
    for method, k in keys:
        for bench in benches:
            path = os.path.join(eval_dir, bench, "answers", ckpt, method, f"k{k}.jsonl")
            if not os.path.isfile(path):
                continue
            erank, entropy = [], []
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        stats = json.loads(line).get("metadata", {}).get("pruning")
                    except json.JSONDecodeError:
                        continue
                    if stats:
                        if stats.get("erank_kept") is not None:
                            erank.append(stats["erank_kept"])
                        if stats.get("attention_entropy") is not None:
                            entropy.append(stats["attention_entropy"])
            if erank or entropy:
                mean = lambda v: sum(v) / len(v) if v else math.nan  # noqa: E731
                out.setdefault((method, k), {})[bench] = (mean(erank), mean(entropy), max(len(erank), len(entropy)))
    return out


def sort_key(key):
    method, k = key
    rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return (method != "none", -k, rank, method)


def relative_average(scores, base):
    """(mean of score/base in %, number of benchmarks used) over the higher-is-better benchmarks."""
    ratios = [100.0 * scores[b] / base[b] for b in scores
              if b in base and b not in LOWER_IS_BETTER and base[b]]
    return (sum(ratios) / len(ratios), len(ratios)) if ratios else (math.nan, 0)


def build_rows(table, baseline="none"):
    """(benchmark columns, rows of dicts: method, K, per-bench scores, avg, n)."""
    benches = sorted({b for s in table.values() for b in s}, key=lambda b: (ORDER.index(b) if b in ORDER else 99, b))
    base_keys = sorted(k for k in table if k[0] == baseline)
    if table and not base_keys:
        print(f"note: no scores of --baseline {baseline} (found {', '.join(sorted({k[0] for k in table}))}): "
              f"the Avg column stays empty", file=sys.stderr)
    base = table[base_keys[0]] if base_keys else {}
    rows = []
    for key in sorted(table, key=sort_key):
        avg, n = relative_average(table[key], base) if base else (math.nan, 0)
        rows.append({"method": key[0], "K": key[1], **table[key], "avg": avg, "n": n})
    return benches, rows


def _fmt(v, bench=None):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.0f}" if bench == "MME" else f"{v:.1f}" if bench else f"{v:.2f}%"


def markdown(benches, rows, stats=None):
    lines = ["| method | K | " + " | ".join(benches) + " | Avg | n |", "|---|---|" + "---|" * (len(benches) + 2)]
    for r in rows:
        cells = [_fmt(r.get(b), b) for b in benches]
        lines.append(f"| {r['method']} | {r['K']} | " + " | ".join(cells) + f" | {_fmt(r['avg'])} | {r['n']} |")
    if stats:
        stat_benches = sorted({b for s in stats.values() for b in s},
                              key=lambda b: (ORDER.index(b) if b in ORDER else 99, b))
        lines += ["", "Mean erank of kept tokens / mean attention entropy (nats), from --pruning-stats answers:", "",
                  "| method | K | " + " | ".join(stat_benches) + " |", "|---|---|" + "---|" * len(stat_benches)]
        for key in sorted(stats, key=sort_key):
            cells = [f"{stats[key][b][0]:.1f} / {stats[key][b][1]:.2f}" if b in stats[key] else "-" for b in stat_benches]
            lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(benches, rows):
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["method", "K", *benches, "avg_relative_percent", "n_benchmarks"])
    for r in rows:
        writer.writerow([r["method"], r["K"], *[r.get(b, "") for b in benches],
                         "" if math.isnan(r["avg"]) else round(r["avg"], 4), r["n"]])
    return buf.getvalue()


def plot(rows, path, title="relative score vs K"):
    """Relative score (Avg, %) versus K, one line per method, with the unpruned level as a dashed line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install matplotlib (or pip install -e '.[plot]')") from None
    fig, ax = plt.subplots(figsize=(6, 4))
    methods = sorted({r["method"] for r in rows if r["method"] != "none"}, key=lambda m: sort_key((m, 0)))
    for method in methods:
        pts = sorted((r["K"], r["avg"]) for r in rows if r["method"] == method and not math.isnan(r["avg"]))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
    ax.axhline(100.0, color="grey", linestyle="--", linewidth=1, label="unpruned")
    ax.set_xlabel("K (visual tokens per image)")
    ax.set_ylabel("relative score (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summarize(eval_dir, ckpt, baseline="none", with_stats=True):
    """(benchmark columns, rows, pruning stats) for one checkpoint."""
    table = collect(eval_dir, ckpt)
    if not table:
        raise FileNotFoundError(f"no score files under {eval_dir}/<bench>/scores/{ckpt}/<method>/k<K>.json")
    benches, rows = build_rows(table, baseline)
    stats = pruning_stats(eval_dir, ckpt, table.keys(), benches) if with_stats else {}
    return benches, rows, stats


def build_parser():
    p = entry_parser("llava.eval.summarize", __doc__)
    p.add_argument("--eval-dir", default="./playground/data/eval",
                   help="the eval folder holding <bench>/scores/<ckpt>/<method>/k<K>.json")
    p.add_argument("--ckpt", default="llava-v1.5-7b", help="the checkpoint name used in the answers/scores paths")
    p.add_argument("--baseline", default="none", help="the method whose scores are 100%%")
    p.add_argument("--markdown", "--out-md", dest="markdown", help="write the Markdown table here")
    p.add_argument("--csv", "--out-csv", dest="csv", help="write the CSV table here")
    p.add_argument("--plot", help="write the relative-score-vs-K plot (PNG) here")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        benches, rows, stats = summarize(args.eval_dir, args.ckpt, args.baseline)
        text = markdown(benches, rows, stats)
        print(text, end="")
        for path, content in ((args.markdown, text), (args.csv, to_csv(benches, rows))):
            if path:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                with open(path, "w", encoding="utf-8") as f:
                    f.write(content)
        if args.plot:
            plot(rows, args.plot, title=f"{args.ckpt}: relative score vs K")
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
