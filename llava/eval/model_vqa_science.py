"""Answer ScienceQA questions, as upstream's `llava.eval.model_vqa_science` does.

    python -m llava.eval.model_vqa_science --model-path PATH --question-file llava_test_CQM-A.json \
        --image-folder scienceqa/images/test --answers-file answers.jsonl --single-pred-prompt \
        --temperature 0 --conv-mode vicuna_v1

The question file is a JSON list in the training format (`id`, optional `image`, `conversations`).
As upstream: `<image>` is removed from the first turn and put back in front only when the item has an
image (the answer's `prompt` then starts with "<image>\\n", which the scorer uses to count image
questions); text-only questions run without images.
"""
import os
import sys

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.eval.common import (AnswerFile, EvalInputError, answer_questions, check_chunks, eval_parser, get_chunk,
                               image_prompt, load_model, read_json, require, run_main)

SINGLE_PRED_PROMPT = "Answer with the option's letter from the given choices directly."


def science_items(questions, args, model_config):
    items = []
    for n, line in enumerate(questions, 1):
        where = f"{args.question_file}: item {n}"
        if not isinstance(line, dict):
            raise EvalInputError(f"{where}: expected an object, got {type(line).__name__}")
        qid, conversations = require(line, ("id", "conversations"), where)
        if not conversations or not isinstance(conversations[0], dict) or "value" not in conversations[0]:
            raise EvalInputError(f"{where}: conversations[0].value is missing")
        qs = conversations[0]["value"].replace("<image>", "").strip()
        cur_prompt = qs
        image_file = None
        if "image" in line:
            image_file = os.path.join(args.image_folder, line["image"])
            qs, cur_prompt = image_prompt(qs, model_config), DEFAULT_IMAGE_TOKEN + "\n" + cur_prompt
        if args.single_pred_prompt:
            qs, cur_prompt = qs + "\n" + SINGLE_PRED_PROMPT, cur_prompt + "\n" + SINGLE_PRED_PROMPT
        items.append({"key": qid, "question_id": qid, "prompt": cur_prompt, "question": qs, "image_file": image_file})
    return items


def eval_model(args):
    check_chunks(args)
    questions = read_json(args.question_file)
    if not isinstance(questions, list):
        raise EvalInputError(f"{args.question_file}: expected a JSON list of questions")
    questions = get_chunk(questions, args.num_chunks, args.chunk_idx)
    tokenizer, model, processor, model_name, _ = load_model(args)
    items = science_items(questions, args, model.config)
    with AnswerFile(args.answers_file, resume=args.resume, settings=args.run_record) as answers:
        answer_questions(items, args, model, tokenizer, processor, model_name, args.conv_mode, answers,
                         batch_size=args.batch_size, num_workers=args.num_workers)


def build_parser():
    parser = eval_parser("llava.eval.model_vqa_science", __doc__, question_file="tables/question.json",
                         conv_mode="llava_v0", sampling=False)
    parser.add_argument("--answer-prompter", action="store_true", help="accepted for compatibility; unused")
    parser.add_argument("--single-pred-prompt", action="store_true",
                        help="append the instruction to answer with the option's letter only")
    return parser


def main(argv=None):
    return run_main(eval_model, argv, build_parser())


if __name__ == "__main__":
    sys.exit(main())
