"""Answer a JSON-lines question file with a DataLoader and optional batching, as upstream's
`llava.eval.model_vqa_loader` does (VQAv2, GQA, VizWiz, TextVQA, POPE, MME, SEED-Bench).

    python -m llava.eval.model_vqa_loader --model-path PATH --question-file q.jsonl --image-folder DIR \
        --answers-file answers.jsonl --temperature 0 [--batch-size 8] [--pruning-method agile --visual-token-num 64]

As upstream: `--max_new_tokens 128`, a pretrain-only ("plain") model switches to the `_mmtag` template.
Ours: `--batch-size` (left-padded batched generation; greedy answers equal batch size 1),
`--num-workers` (image loading; upstream 4), resume after a crash (see llava.eval.common).
"""
import sys

from llava.eval.common import (AnswerFile, answer_questions, check_chunks, eval_parser, get_chunk, load_model,
                               read_jsonl, run_main)
from llava.eval.model_vqa import vqa_items


def eval_model(args):
    check_chunks(args)
    questions = get_chunk(read_jsonl(args.question_file), args.num_chunks, args.chunk_idx)
    tokenizer, model, processor, model_name, _ = load_model(args)
    conv_mode = args.conv_mode  # resolved by load_model (upstream's _mmtag rule for pretrain-only models included)
    items = vqa_items(questions, args.image_folder, model.config, args.question_file)
    with AnswerFile(args.answers_file, resume=args.resume, settings=args.run_record) as answers:
        answer_questions(items, args, model, tokenizer, processor, model_name, conv_mode, answers,
                         batch_size=args.batch_size, num_workers=args.num_workers)


def build_parser():
    return eval_parser("llava.eval.model_vqa_loader", __doc__, max_new_tokens=128, num_workers=4)


def main(argv=None):
    return run_main(eval_model, argv, build_parser())


if __name__ == "__main__":
    sys.exit(main())
