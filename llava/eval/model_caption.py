"""Caption images for CHAIR hallucination scoring (`python -m llava.eval.chair` scores the output).

    python -m llava.eval.model_caption --model-path PATH --image-folder val2014 --question-file chair.jsonl \
        --answers-file captions.jsonl --temperature 0 [--pruning-method agile --visual-token-num 64]

Questions: JSON lines with `question_id`, `image` and optionally `image_id` and `text` (the prompt;
default --prompt), or no --question-file to caption every image in --image-folder (sorted; the
image_id is the number in a COCO file name such as COCO_val2014_000000123456.jpg, else the file
name). Answer lines are model_vqa's plus `image_id` and `image`. --max_new_tokens defaults to 512, so
long descriptions are not cut short (CHAIR counts every object mentioned).
"""
import os
import re
import sys

from llava.eval.common import (AnswerFile, answer_questions, check_chunks, eval_parser, get_chunk, image_prompt,
                               load_model, read_jsonl, require, run_main)

DEFAULT_PROMPT = "Please describe this image in detail."
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def image_id_of(file_name):
    """The COCO image id in a file name (COCO_val2014_000000123456.jpg -> 123456), else the stem."""
    stem = os.path.splitext(os.path.basename(file_name))[0]
    match = re.search(r"(\d+)$", stem)
    return int(match.group(1)) if match and "COCO" in stem else stem


def caption_questions(args):
    if args.question_file:
        questions = read_jsonl(args.question_file)
    else:
        if not os.path.isdir(args.image_folder):
            raise FileNotFoundError(f"--image-folder not found: {args.image_folder}")
        names = sorted(n for n in os.listdir(args.image_folder) if n.lower().endswith(IMAGE_EXTENSIONS))
        questions = [{"question_id": image_id_of(n), "image": n} for n in names]
    return get_chunk(questions, args.num_chunks, args.chunk_idx)


def make_questions(annotation_file, image_folder, out, num_images=500, seed=0):
    """Write a caption question file for `num_images` images of a COCO instances file drawn with
    `seed` (only images present in image_folder); returns the number written."""
    import json
    import random

    from llava.eval.common import read_json

    images = read_json(annotation_file).get("images")
    if not isinstance(images, list):
        raise ValueError(f"{annotation_file}: no 'images' list (expected COCO instances_*.json)")
    present = [im for im in images if os.path.isfile(os.path.join(image_folder, im.get("file_name", "")))]
    if not present:
        raise FileNotFoundError(f"none of the images of {annotation_file} is in {image_folder}")
    chosen = sorted(random.Random(seed).sample(present, min(num_images, len(present))), key=lambda im: im["id"])
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for im in chosen:
            f.write(json.dumps({"question_id": im["id"], "image_id": im["id"], "image": im["file_name"]}) + "\n")
    return len(chosen)


def eval_model(args):
    if args.make_questions:
        n = make_questions(args.annotation_file, args.image_folder, args.make_questions, args.num_images, args.sample_seed)
        print(f"wrote {n} caption questions to {args.make_questions}")
        return
    check_chunks(args)
    questions = caption_questions(args)
    tokenizer, model, processor, model_name, _ = load_model(args)
    items = []
    for n, q in enumerate(questions, 1):
        qid, image = require(q, ("question_id", "image"), f"{args.question_file or args.image_folder}: item {n}")
        text = q.get("text", args.prompt)
        items.append({"key": qid, "question_id": qid, "prompt": text, "question": image_prompt(text, model.config),
                      "image_file": os.path.join(args.image_folder, image),
                      "extra": {"image_id": q.get("image_id", image_id_of(image)), "image": image}})
    with AnswerFile(args.answers_file, resume=args.resume, settings=args.run_record) as answers:
        answer_questions(items, args, model, tokenizer, processor, model_name, args.conv_mode, answers,
                         batch_size=args.batch_size, num_workers=args.num_workers, desc="captioning")


def build_parser():
    parser = eval_parser("llava.eval.model_caption", __doc__, question_file=None, max_new_tokens=512, num_workers=2)
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the request for questions without `text`")
    parser.add_argument("--make-questions", metavar="FILE", help="only write a question file of --num-images "
                        "images of --annotation-file drawn with --sample-seed, and exit")
    parser.add_argument("--annotation-file", help="COCO instances_*.json (with --make-questions)")
    parser.add_argument("--num-images", type=int, default=500, help="images drawn (with --make-questions)")
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of the draw (with --make-questions)")
    return parser


def main(argv=None):
    return run_main(eval_model, argv, build_parser())


if __name__ == "__main__":
    sys.exit(main())
