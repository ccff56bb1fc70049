"""Convert VQAv2 answers to the file uploaded to the EvalAI server (upstream's CLI).

    python -m llava.eval.convert_vqav2_for_submission --split llava_vqav2_mscoco_test-dev2015 --ckpt CKPT \\
        [--dir ./playground/data/eval/vqav2]

(`python scripts/convert_vqav2_for_submission.py`, upstream's path, runs the same.)

Reads `<dir>/answers/<split>/<ckpt>/merge.jsonl` and the full test list
`<dir>/llava_vqav2_mscoco_test2015.jsonl`; writes `<dir>/answers_upload/<split>/<ckpt>.json`, a JSON list
of {"question_id", "answer"} over every test question (EvalAI wants all of test2015 even for test-dev),
the answer normalised by EvalAIAnswerProcessor and "" when unanswered. Malformed answer lines are skipped
and reported by line number (upstream counted them). Server-scored: no local score.
"""
import os

from llava.eval.m4c_evaluator import EvalAIAnswerProcessor
from llava.eval.scoring_io import field, qid_key, read_jsonl, run_cli, write_json
from llava.utils import entry_parser


def load_answers(path, what):
    """{question id key: text} from an answers JSONL; malformed lines skipped with a warning."""
    rows, bad = read_jsonl(path, what, skip_bad=True)
    if bad:
        print(f"warning: {path}: skipped {len(bad)} malformed line(s): {bad[:10]}")
    return {qid_key(field(r, "question_id", path)): field(r, "text", path) for r in rows}, len(bad)


def convert_vqav2(src, test_split_file, dst):
    """Write the upload list; returns it."""
    results, n_bad = load_answers(src, "VQAv2 answers file")
    test_split = read_jsonl(test_split_file, "VQAv2 test question file")
    print(f"total results: {len(results)}, total split: {len(test_split)}, error_line: {n_bad}")
    process = EvalAIAnswerProcessor()
    out = []
    for i, q in enumerate(test_split, 1):
        qid = field(q, "question_id", test_split_file, i)
        text = results.get(qid_key(qid))
        out.append({"question_id": qid, "answer": "" if text is None else process(text)})
    write_json(out, dst)
    return out


def build_parser():
    parser = entry_parser("llava.eval.convert_vqav2_for_submission", __doc__)
    parser.add_argument("--dir", type=str, default="./playground/data/eval/vqav2",
                        help="the VQAv2 eval folder (answers/, answers_upload/ and the test question list)")
    parser.add_argument("--ckpt", type=str, required=True,
                        help="the run's name: reads answers/<split>/<ckpt>/merge.jsonl")
    parser.add_argument("--split", type=str, required=True,
                        help="the answers' split folder (llava_vqav2_mscoco_test-dev2015)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    src = os.path.join(args.dir, "answers", args.split, args.ckpt, "merge.jsonl")
    test_split = os.path.join(args.dir, "llava_vqav2_mscoco_test2015.jsonl")
    dst = os.path.join(args.dir, "answers_upload", args.split, f"{args.ckpt}.json")
    return run_cli(lambda: convert_vqav2(src, test_split, dst))


if __name__ == "__main__":
    main()
