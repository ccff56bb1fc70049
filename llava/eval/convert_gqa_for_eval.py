"""Answers JSONL -> GQA predictions JSON (upstream CLI): `python scripts/convert_gqa_for_eval.py --src
answers/merge.jsonl --dst testdev_balanced_predictions.json`.

Writes a JSON list of {"questionId", "prediction"}, the prediction being the answer text with trailing
periods removed and lower-cased, the format the official GQA eval.py and llava.eval.eval_gqa read.
"""
import argparse

from llava.eval.scoring_io import field, read_jsonl, run_cli, write_json


def convert_gqa(src, dst):
    """Convert; returns the list written."""
    out = [{"questionId": field(res, "question_id", src, i),
            "prediction": field(res, "text", src, i).rstrip(".").lower()}
           for i, res in enumerate(read_jsonl(src, "GQA answers file"), 1)]
    write_json(out, dst)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=str, required=True)
    parser.add_argument("--dst", type=str, required=True)
    args = parser.parse_args(argv)
    return run_cli(lambda: convert_gqa(args.src, args.dst))


if __name__ == "__main__":
    main()
