"""Answer a JSON-lines question file about images, as upstream's `llava.eval.model_vqa` does (LLaVA-Bench, MM-Vet).

    python -m llava.eval.model_vqa --model-path PATH --question-file q.jsonl --image-folder DIR \
        --answers-file answers.jsonl [--pruning-method agile --visual-token-num 64]

Question lines: `question_id`, `image` (relative to --image-folder), `text`. One answer line per
question, flushed; a re-run skips questions already answered (see llava.eval.common).
"""
import os
import sys

from llava.eval.common import (AnswerFile, answer_questions, check_chunks, eval_parser, get_chunk, image_prompt,
                               load_model, read_jsonl, require, run_main)


def vqa_items(questions, image_folder, model_config, path):
    """Question-file lines -> answer_questions items (the image token goes in front of the text)."""
    items = []
    for n, q in enumerate(questions, 1):
        qid, image, text = require(q, ("question_id", "image", "text"), f"{path}: question {n}")
        items.append({"key": qid, "question_id": qid, "prompt": text, "question": image_prompt(text, model_config),
                      "image_file": os.path.join(image_folder, image), "where": f"{path}: question_id {qid!r}"})
    return items


def eval_model(args):
    check_chunks(args)
    questions = get_chunk(read_jsonl(args.question_file), args.num_chunks, args.chunk_idx)
    tokenizer, model, processor, model_name, _ = load_model(args)
    items = vqa_items(questions, args.image_folder, model.config, args.question_file)
    with AnswerFile(args.answers_file, resume=args.resume, settings=args.run_record) as answers:
        answer_questions(items, args, model, tokenizer, processor, model_name, args.conv_mode, answers,
                         batch_size=args.batch_size, num_workers=args.num_workers)


def build_parser():
    return eval_parser("llava.eval.model_vqa", __doc__)


def main(argv=None):
    return run_main(eval_model, argv, build_parser())


if __name__ == "__main__":
    sys.exit(main())
