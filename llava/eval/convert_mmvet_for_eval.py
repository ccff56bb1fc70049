"""Answers JSONL -> MM-Vet grader input (upstream CLI): `python scripts/convert_mmvet_for_eval.py
--src answers/CKPT.jsonl --dst results/CKPT.json`: a JSON object {"v1_<question_id>": answer text}, the
format the official MM-Vet GPT-4 grader reads. Server/GPT-scored: no local score.
"""
import argparse

from llava.eval.scoring_io import field, read_jsonl, run_cli, write_json


def convert_mmvet(src, dst):
    """Convert; returns the dict written."""
    out = {f"v1_{field(d, 'question_id', src, i)}": field(d, "text", src, i)
           for i, d in enumerate(read_jsonl(src, "MM-Vet answers file"), 1)}
    write_json(out, dst, indent=2)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=str, required=True)
    parser.add_argument("--dst", type=str, required=True)
    args = parser.parse_args(argv)
    return run_cli(lambda: convert_mmvet(args.src, args.dst))


if __name__ == "__main__":
    main()
