"""Convert VizWiz answers to the file uploaded to the EvalAI server (upstream's CLI).

    python -m llava.eval.convert_vizwiz_for_submission --annotation-file llava_test.jsonl \\
        --result-file answers/CKPT.jsonl --result-upload-file answers_upload/CKPT.json

(`python scripts/convert_vizwiz_for_submission.py`, upstream's path, runs the same.)

Writes a JSON list of {"image", "answer"} for every question of the annotation (question) file, the answer
normalised by EvalAIAnswerProcessor. Every question must be answered (an unanswered one is an error naming
it, as upstream's assert); malformed answer lines are skipped and reported. Server-scored: no local score.
"""
from llava.eval.convert_vqav2_for_submission import load_answers
from llava.eval.m4c_evaluator import EvalAIAnswerProcessor
from llava.eval.scoring_io import ScoringInputError, field, qid_key, read_jsonl, run_cli, write_json
from llava.utils import entry_parser


def convert_vizwiz(annotation_file, result_file, upload_file):
    """Write the upload list; returns it."""
    results, n_bad = load_answers(result_file, "VizWiz result file")
    test_split = read_jsonl(annotation_file, "VizWiz question file")
    print(f"total results: {len(results)}, total split: {len(test_split)}, error_line: {n_bad}")
    process = EvalAIAnswerProcessor()
    out = []
    for i, q in enumerate(test_split, 1):
        qid = qid_key(field(q, "question_id", annotation_file, i))
        if qid not in results:
            raise ScoringInputError(f"{result_file}: no answer for question {qid!r} ({annotation_file}:{i})")
        out.append({"image": field(q, "image", annotation_file, i), "answer": process(results[qid])})
    write_json(out, upload_file)
    return out


def build_parser():
    parser = entry_parser("llava.eval.convert_vizwiz_for_submission", __doc__)
    parser.add_argument("--annotation-file", type=str, required=True,
                        help="the VizWiz question JSONL the answers were generated from (llava_test.jsonl)")
    parser.add_argument("--result-file", type=str, required=True, help="answers JSONL (from model_vqa_loader)")
    parser.add_argument("--result-upload-file", type=str, required=True,
                        help='upload file to write: a JSON list of {"image", "answer"}')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli(lambda: convert_vizwiz(args.annotation_file, args.result_file, args.result_upload_file))


if __name__ == "__main__":
    main()
