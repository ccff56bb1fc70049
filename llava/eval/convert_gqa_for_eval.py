"""Convert a GQA answers JSONL to the predictions JSON that GQA's official eval.py reads (upstream's CLI).

    python -m llava.eval.convert_gqa_for_eval --src answers/merge.jsonl --dst testdev_balanced_predictions.json

(`python scripts/convert_gqa_for_eval.py`, upstream's path, runs the same.)

Writes a JSON list of {"questionId", "prediction"}, the prediction being the answer text with trailing
periods removed and lower-cased, the format the official GQA eval.py and llava.eval.eval_gqa read.
"""
from llava.eval.scoring_io import field, read_jsonl, run_cli, write_json
from llava.utils import entry_parser


def convert_gqa(src, dst):
    """Convert; returns the list written."""
    out = [{"questionId": field(res, "question_id", src, i),
            "prediction": field(res, "text", src, i).rstrip(".").lower()}
           for i, res in enumerate(read_jsonl(src, "GQA answers file"), 1)]
    write_json(out, dst)
    return out


def build_parser():
    parser = entry_parser("llava.eval.convert_gqa_for_eval", __doc__)
    parser.add_argument("--src", type=str, required=True, help="answers JSONL (from model_vqa_loader, merged)")
    parser.add_argument("--dst", type=str, required=True,
                        help='predictions JSON to write: a list of {"questionId", "prediction"}')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli(lambda: convert_gqa(args.src, args.dst))


if __name__ == "__main__":
    main()
