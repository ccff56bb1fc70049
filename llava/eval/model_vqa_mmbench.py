"""Answer MMBench or MMBench-CN from its TSV, as upstream's `llava.eval.model_vqa_mmbench` does.

    python -m llava.eval.model_vqa_mmbench --model-path PATH --question-file mmbench_dev_20230712.tsv \
        --answers-file answers.jsonl --single-pred-prompt --temperature 0 --conv-mode vicuna_v1 [--lang cn]

TSV columns: index, question, hint, A, B, C, D (options up to the first empty one), image (base64), ...
The question is `hint\\nquestion` (when there is a hint) followed by "\\nA. option" lines.
`--all-rounds` asks once per option with the options rotated by one each round (CircularEval); each
answer line carries `round_id`, `options` and `option_char`; `question_id` is the TSV `index`.
"""
import csv
import sys

from llava.eval.common import (AnswerFile, EvalInputError, answer_questions, check_chunks, eval_parser, get_chunk,
                               image_prompt, load_model, run_main)
from llava.eval.model_vqa_science import SINGLE_PRED_PROMPT

ALL_OPTIONS = ["A", "B", "C", "D"]
CN_PROMPT = "请直接回答选项字母。"


def is_none(value):
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "nan", "none"))


def read_tsv(path):
    """Rows of a TSV as dicts of strings (base64 images make fields huge, so the csv limit is raised)."""
    import os

    if not os.path.isfile(path):
        raise FileNotFoundError(f"Question file not found: {path}")
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        rows = list(reader)
    if not rows or reader.fieldnames is None or "index" not in reader.fieldnames:
        raise EvalInputError(f"{path}: not an MMBench TSV (no header with an 'index' column)")
    return rows


def _index(value):
    return int(value) if str(value).strip().lstrip("-").isdigit() else value


def mmbench_items(rows, args, model_config):
    from llava.mm_utils import load_image_from_base64

    items = []
    for n, row in enumerate(rows, 2):  # line 1 is the header
        where = f"{args.question_file}:{n}"
        for key in ("question", "image"):
            if is_none(row.get(key)):
                raise EvalInputError(f"{where}: the {key!r} field is empty")
        options = []
        for letter in ALL_OPTIONS:
            if is_none(row.get(letter)):
                break
            options.append(row[letter])
        chars = ALL_OPTIONS[:len(options)]
        idx = _index(row["index"])

        def load(data=row["image"], where=where):
            try:
                return load_image_from_base64(data).convert("RGB")
            except Exception as e:  # bad base64 or not an image
                raise ValueError(f"{where}: cannot decode the base64 image ({e})") from None

        for round_id in range(len(options) if args.all_rounds else 1):
            question = row["question"] if is_none(row.get("hint")) else row["hint"] + "\n" + row["question"]
            for char, option in zip(ALL_OPTIONS, options):
                question += "\n" + char + ". " + option
            qs = image_prompt(question, model_config)
            if args.single_pred_prompt:
                qs += "\n" + (CN_PROMPT if args.lang == "cn" else SINGLE_PRED_PROMPT)
            items.append({"key": (idx, round_id), "question_id": idx, "prompt": question, "question": qs,
                          "load_image": load,
                          "extra": {"round_id": round_id, "options": list(options), "option_char": list(chars)}})
            options, chars = options[1:] + options[:1], chars[1:] + chars[:1]
    return items


def eval_model(args):
    check_chunks(args)
    rows = get_chunk(read_tsv(args.question_file), args.num_chunks, args.chunk_idx)
    tokenizer, model, processor, model_name, _ = load_model(args)
    items = mmbench_items(rows, args, model.config)
    with AnswerFile(args.answers_file, key=lambda r: (r["question_id"], r["round_id"]), resume=args.resume,
                    settings=args.run_record) as answers:
        answer_questions(items, args, model, tokenizer, processor, model_name,
                         args.conv_mode, answers,
                         batch_size=args.batch_size, num_workers=args.num_workers)


def build_parser():
    parser = eval_parser("llava.eval.model_vqa_mmbench", __doc__)
    parser.add_argument("--all-rounds", action="store_true",
                        help="ask once per option, the options rotated by one each round (CircularEval)")
    parser.add_argument("--single-pred-prompt", action="store_true",
                        help="append the instruction to answer with the option's letter only")
    parser.add_argument("--lang", type=str, default="en",
                        help="language of that instruction: en, or cn for MMBench-CN")
    return parser


def main(argv=None):
    return run_main(eval_model, argv, build_parser())


if __name__ == "__main__":
    sys.exit(main())
