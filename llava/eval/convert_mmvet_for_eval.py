"""Convert an MM-Vet answers JSONL to the input of the official MM-Vet GPT-4 grader (upstream's CLI). The
output is a JSON object {"v1_<question_id>": answer text}. MM-Vet is scored by GPT-4, so there is no local score.

    python -m llava.eval.convert_mmvet_for_eval --src answers/CKPT.jsonl --dst results/CKPT.json

(`python scripts/convert_mmvet_for_eval.py`, upstream's path, runs the same.)
"""
from llava.eval.scoring_io import field, read_jsonl, run_cli, write_json
from llava.utils import entry_parser


def convert_mmvet(src, dst):
    """Convert; returns the dict written."""
    out = {f"v1_{field(d, 'question_id', src, i)}": field(d, "text", src, i)
           for i, d in enumerate(read_jsonl(src, "MM-Vet answers file"), 1)}
    write_json(out, dst, indent=2)
    return out


def build_parser():
    parser = entry_parser("llava.eval.convert_mmvet_for_eval", __doc__)
    parser.add_argument("--src", type=str, required=True, help="answers JSONL (from model_vqa)")
    parser.add_argument("--dst", type=str, required=True,
                        help='grader input to write: a JSON object {"v1_<question_id>": answer text}')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli(lambda: convert_mmvet(args.src, args.dst))


if __name__ == "__main__":
    main()
