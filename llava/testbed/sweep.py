"""Pruning methods x K on the testbed's eval sets, one process per job, the checkpoint read once per process
(scripts/testbed/eval.sh runs this, then llava.testbed.report).

    python -m llava.testbed.sweep --model-path ./playground/llava-testbed --sets WORLD/eval --out RESULTS \
        [--regimes simple complex] [--methods agile fastervlm] [--ks 32 64 128 192] [--shard 0/2]

Each configuration runs the same entry points, with the same arguments, as scripts/v1_5/eval/*.sh would run
one by one (llava.eval.model_vqa_loader for POPE and the short-answer questions, llava.eval.model_caption for
CHAIR captions, llava.eval.eval_pope and llava.testbed.score for the scores), in this process: the weights
are loaded once and each run switches the pruning to its own (llava.eval.common.models_kept_loaded), which
saves three model loads per configuration. Answers and scores go to the eval-script layout,
OUT/<regime>/<bench>/{answers,scores}/<ckpt>/<method>/k<K>.*; a configuration whose scores exist is
skipped, an interrupted one resumes. `--shard I/N` runs every N-th configuration from the I-th (N processes
side by side; each then uses its share of the CPU threads).
"""
import os
import sys

from llava.pruning import METHODS
from llava.pruning.geometry import COMPLEXITY_RULES
from llava.pruning.methods.sparsevlm import SPARSEVLM_TABLES, SPARSEVLM_V2_TABLES
from llava.utils import available_cpus, entry_parser

KS = (32, 64, 128, 192)
# testbed settings of the in-LLM methods: its LLM has 3 decoder layers, so they act before layers 1-2
FASTV_LAYER = 1
TABLES = {"sparsevlm": SPARSEVLM_TABLES, "sparsevlm_v2": SPARSEVLM_V2_TABLES}


def split_run(name):
    """A run name -> (method, complexity rule or None): "mix-adaptive" is mix with --complexity-rule adaptive
    (method names have no "-")."""
    method, _, rule = name.partition("-")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} in {name!r} (known: {', '.join(METHODS)})")
    if rule and "complexity_rule" not in METHODS[method].option_names:
        raise ValueError(f"{name!r}: {method} has no --complexity-rule")
    if rule and rule not in COMPLEXITY_RULES:
        raise ValueError(f"{name!r}: --complexity-rule takes {', '.join(COMPLEXITY_RULES)}")
    return method, rule or None


def pruning_flags(name, k, erank_avg=None, fastv_layer=FASTV_LAYER):
    """The pruning flags of one configuration (a method, or method-rule for a hybrid's complexity rule) on
    the 3-layer testbed LLM."""
    method, rule = split_run(name)
    flags = ["--pruning-method", method, "--pruning-stats"] + (["--complexity-rule", rule] if rule else [])
    if method == "none":
        return flags
    if method == "fastv":
        return flags + ["--visual-token-num", str(k), "--fastv-layer", str(fastv_layer)]
    if method == "dart":
        return flags + ["--visual-token-num", str(k), "--dart-layer", "1"]
    if method == "pdrop":
        # K is an average over the decoder layers, which 3 layers (the first at all 576 tokens) cannot bring
        # below 192; lambda = sqrt(K/576) over layers 1,2 makes the last stage (layer 2) keep K tokens
        return flags + ["--pdrop-layers", "1,2", "--pdrop-ratio", str(round((k / 576) ** 0.5, 6))]
    if method in TABLES:  # the official per-stage tables, first two stages (after layers 0 and 1)
        return flags + ["--visual-token-num", str(k), "--sparsevlm-layers", "0,1"]
    flags += ["--visual-token-num", str(k)]
    if "erank_avg" in METHODS[method].option_names and erank_avg is not None:
        flags += ["--erank-avg", str(erank_avg)]
    return flags


def configurations(regimes, methods, ks):
    """[(regime, method, K)]: per regime the unpruned run, then every method x K it has a budget for;
    and the (method, K, reason) pairs skipped."""
    runs, skipped = [], []
    for regime in regimes:
        runs.append((regime, "none", 576))
        for name in methods:
            table = TABLES.get(split_run(name)[0])
            for k in ks:
                if table is not None and k not in table:
                    if regime == regimes[0]:
                        skipped.append((name, k, f"{name} has budget tables for K in {sorted(table)} only"))
                    continue
                runs.append((regime, name, k))
    return runs, skipped


def _ok(code, what):
    if code not in (0, None):
        raise RuntimeError(f"{what} failed (exit {code})")


def run_one(regime, method, k, sets, out, model_path, ckpt="llava-testbed", batch=16, device="cpu",
            erank_avg=None, fastv_layer=FASTV_LAYER):
    """Answers and scores of one configuration; False when its scores already existed."""
    from llava.eval import eval_pope, model_caption, model_vqa_loader
    from llava.eval.scoring_io import write_score_file
    from llava.testbed import score

    data, res, run = os.path.join(sets, regime), os.path.join(out, regime), os.path.join(ckpt, method, f"k{k}")
    done = [os.path.join(res, bench, "scores", run + ".json") for bench in ("chair", "pope", "counting")]
    if all(os.path.isfile(p) for p in done):
        return False
    gen = ["--model-path", model_path, "--device", device, "--batch-size", str(batch), "--num-workers", "0",
           "--temperature", "0"] + pruning_flags(method, k, erank_avg, fastv_layer)
    named = ["--score-dir", res, "--ckpt", ckpt, "--pruning-method", method, "--visual-token-num", str(k)]

    def answer(entry, bench, questions, max_new_tokens, what):
        """Run generator `entry` on data/bench/questions; the answers file's path."""
        answers = os.path.join(res, bench, "answers", run + ".jsonl")
        _ok(entry.main(gen + ["--max-new-tokens", str(max_new_tokens), "--question-file",
                              os.path.join(data, bench, questions), "--image-folder", os.path.join(data, "images"),
                              "--answers-file", answers]), f"{regime} {method} K={k}: {what}")
        return answers

    pope_answers = answer(model_vqa_loader, "pope", "llava_pope_test.jsonl", 8, "POPE answers")
    write_score_file(eval_pope.pope_scores(os.path.join(data, "pope", "coco"),
                                           os.path.join(data, "pope", "llava_pope_test.jsonl"), pope_answers),
                     os.path.join(res, "pope", "scores", run + ".json"))
    vqa_answers = answer(model_vqa_loader, "vqa", "questions.jsonl", 8, "question answers")
    _ok(score.main(["vqa", "--truth", os.path.join(data, "vqa", "truth.jsonl"), "--result-file", vqa_answers]
                   + named), f"{regime} {method} K={k}: question scores")
    captions = answer(model_caption, "chair", "questions.jsonl", 64, "captions")
    _ok(score.main(["chair", "--objects", os.path.join(data, "chair", "objects.json"), "--cap-file", captions]
                   + named), f"{regime} {method} K={k}: CHAIR scores")
    return True


def _shard(text):
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard takes I/N (e.g. 0/2), got {text!r}") from None
    if not (count >= 1 and 0 <= index < count):
        raise ValueError(f"--shard I/N needs 0 <= I < N, got {text!r}")
    return index, count


def build_parser():
    p = entry_parser("llava.testbed.sweep", __doc__)
    p.add_argument("--model-path", default="./playground/llava-testbed", help="the checkpoint")
    p.add_argument("--ckpt", default=None, help="its name in the result paths (default: the folder's name)")
    p.add_argument("--sets", required=True, help="the eval sets: a folder with one sub-folder per regime")
    p.add_argument("--out", required=True, help="results folder (answers and scores, eval-script layout)")
    p.add_argument("--regimes", nargs="+", default=["simple", "complex"], help="sub-folders of --sets")
    p.add_argument("--methods", nargs="+", default=[m for m in METHODS if m != "none"],
                   help="pruning methods (the unpruned run is always included); METHOD-RULE runs a hybrid with "
                        "--complexity-rule RULE (mix-adaptive, vispruner-inverse)")
    p.add_argument("--ks", nargs="+", type=int, default=list(KS), help="visual-token budgets K")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per generate call")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    p.add_argument("--erank-avg", type=float, default=None,
                   help="erank_avg of agile, mix and vispruner (default: the checkpoint's erank_calibration.json)")
    p.add_argument("--fastv-layer", type=int, default=FASTV_LAYER, help="FastV's pruning layer")
    p.add_argument("--shard", default="0/1", help="I/N: run every N-th configuration from the I-th")
    return p


def main(argv=None):
    import torch

    from llava.eval.common import models_kept_loaded
    from llava.testbed import calibrated_erank_avg

    args = build_parser().parse_args(argv)
    try:
        index, count = _shard(args.shard)
        for name in args.methods:
            split_run(name)
        missing = [r for r in args.regimes if not os.path.isdir(os.path.join(args.sets, r))]
        if missing:
            raise FileNotFoundError(f"--sets {args.sets} has no {', '.join(missing)} folder")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ckpt = args.ckpt or os.path.basename(os.path.normpath(args.model_path))
    erank_avg = args.erank_avg
    if erank_avg is None and any("erank_avg" in METHODS[split_run(m)[0]].option_names for m in args.methods):
        try:  # only the methods that read it need the checkpoint's calibration (an unpruned run does not)
            erank_avg = calibrated_erank_avg(args.model_path)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    runs, skipped = configurations(args.regimes, [m for m in args.methods if m != "none"], args.ks)
    if index == 0:
        for method, k, reason in skipped:
            print(f"skip: {method} K={k}: {reason}", file=sys.stderr)
    if args.device == "cpu" and count > 1:
        torch.set_num_threads(max(1, available_cpus() // count))
    with models_kept_loaded():
        for regime, method, k in runs[index::count]:
            try:
                if run_one(regime, method, k, args.sets, args.out, args.model_path, ckpt, args.batch_size,
                           args.device, erank_avg, args.fastv_layer):
                    print(f"done: {regime} {method} K={k}", file=sys.stderr)
            except RuntimeError as e:  # the entry point has said why
                print(f"error: {e}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
