"""Where the answer looks: per decoder layer, the share of the answer position's attention on the system
prompt, the image, the question and the instruction after it, for testbed questions.

    python -m llava.testbed.probe --model-path ./playground/llava-testbed --sets WORLD/eval [--questions 40]

A model that reads the question puts a visible share of its attention there; one that answers from the image
and the last words alone (the first testbed answered "How many stars ...?" with "Yes") does not. The
answer position is the last prompt token (the one whose output is the first answer token); attention is
averaged over heads and questions, unpruned, eager attention.
"""
import os
import sys
from collections import defaultdict

import torch

from llava.utils import entry_parser

PARTS = ("system", "image", "question", "instruction")


def spans(prompt, question, tokenizer, image_tokens):
    """Token ranges (start, end) of PARTS in the spliced prompt (the image token replaced by image_tokens):
    the system prompt, the image, the question proper (its first line: what differs between questions) and
    the instruction after it (the fixed "Answer the question using a single word or phrase." and the
    role marker, up to the answer position)."""
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.eval.common import prompt_ids

    ids = prompt_ids(prompt, tokenizer)
    image_at = int((ids == IMAGE_TOKEN_INDEX).nonzero()[0])
    asked = question.replace("<image>", "").strip().split("\n")[0]
    end = prompt.index(asked) + len(asked)
    question_end = len(prompt_ids(prompt[:end], tokenizer)) - 1 + image_tokens
    total = len(ids) - 1 + image_tokens
    return {"system": (0, image_at), "image": (image_at, image_at + image_tokens),
            "question": (image_at + image_tokens, question_end), "instruction": (question_end, total)}


@torch.no_grad()
def attention_shares(model, tokenizer, processor, conv_mode, items):
    """{question type: [per layer {part: mean share}]} for items (question type, image path, question text)."""
    from llava.eval.common import full_prompt, image_prompt, prompt_ids, to_model
    from llava.mm_utils import load_image, process_images

    sums, counts = defaultdict(lambda: defaultdict(float)), defaultdict(int)
    for kind, image_file, text in items:
        question = image_prompt(text, model.config)
        prompt = full_prompt(question, conv_mode)
        ids = prompt_ids(prompt, tokenizer)[None].to(model.device)
        image = load_image(image_file)
        pixels = to_model(process_images([image], processor, model.config), model)
        _, _, mask, _, embeds, _ = model.prepare_inputs_labels_for_multimodal(ids, None, None, None, None, pixels,
                                                                              [image.size])
        out = model.get_model()(inputs_embeds=embeds, attention_mask=mask, output_attentions=True, use_cache=False)
        parts = spans(prompt, text, tokenizer, embeds.shape[1] - ids.shape[1] + 1)
        assert parts["instruction"][1] == embeds.shape[1], (parts, embeds.shape)
        for layer, attn in enumerate(out.attentions):
            row = attn[0, :, -1].float().mean(0)  # the answer position, head-averaged
            for name, (a, b) in parts.items():
                sums[(kind, layer)][name] += float(row[a:b].sum())
        counts[kind] += 1
    layers = len(model.get_model().layers)
    return {kind: [{p: sums[(kind, layer)][p] / n for p in PARTS} for layer in range(layers)]
            for kind, n in counts.items()}


def questions(sets, regime, per_type):
    """(type, image path, question) of the regime's short-answer questions and POPE's random split, at most
    per_type of each type."""
    from llava.eval.scoring_io import read_jsonl

    folder = os.path.join(sets, regime)
    rows = read_jsonl(os.path.join(folder, "vqa", "questions.jsonl"), "question file")
    rows += [{**q, "category": "existence"} for q in read_jsonl(os.path.join(folder, "pope", "llava_pope_test.jsonl"),
                                                                 "POPE question file") if q["category"] == "random"]
    taken = defaultdict(int)
    out = []
    for q in rows:
        if taken[q["category"]] < per_type:
            taken[q["category"]] += 1
            out.append((q["category"], os.path.join(folder, "images", q["image"]), q["text"]))
    return out


def build_parser():
    p = entry_parser("llava.testbed.probe", __doc__)
    p.add_argument("--model-path", default="./playground/llava-testbed", help="the checkpoint")
    p.add_argument("--sets", required=True, help="the eval sets (one folder per regime)")
    p.add_argument("--regimes", nargs="+", default=["simple", "complex"], help="sub-folders of --sets")
    p.add_argument("--questions", type=int, default=20, help="questions of each type per regime")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    return p


def main(argv=None):
    from llava.model.builder import load_pretrained_model
    from llava.mm_utils import get_model_name_from_path
    from llava.settings import resolve_template

    args = build_parser().parse_args(argv)
    name = get_model_name_from_path(args.model_path)
    conv_mode, _ = resolve_template(None, args.model_path, name, "llava_v1")
    tokenizer, model, processor, _ = load_pretrained_model(args.model_path, None, name, device=args.device,
                                                           attn_implementation="eager")
    print(f"share of the answer position's attention (head mean) per layer: {' / '.join(PARTS)}")
    for regime in args.regimes:
        shares = attention_shares(model, tokenizer, processor, conv_mode,
                                  questions(args.sets, regime, args.questions))
        for kind, per_layer in sorted(shares.items()):
            cells = "  ".join(f"L{i}: " + " / ".join(f"{row[p]:.2f}" for p in PARTS) for i, row in enumerate(per_layer))
            print(f"{regime:8s} {kind:10s} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
