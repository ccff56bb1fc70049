"""Write a tiny generated training set in upstream LLaVA's format (for tests and smoke runs; nothing downloaded).

    python -m llava.train.make_tiny_dataset --out DIR [--num-images 24] [--seed 0]

Writes DIR/images/*.png (coloured shapes on a plain background, assorted sizes and aspect ratios),
DIR/pretrain.json (stage 1: `<image>` + a caption request, gpt caption; for `--version plain`) and
DIR/finetune.json (stage 2: multi-turn questions about shape and colour, `<image>` at the front or the end
of the first turn, plus a few text-only samples).
"""
import json
import os
import random

from PIL import Image, ImageDraw

from llava.utils import entry_parser

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (235, 210, 40)}
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = ((255, 255, 255), (235, 235, 235), (20, 20, 20))
CAPTION_PROMPTS = ("Describe the image briefly.", "Give a short caption.", "What is in the picture?")


def draw(shape, colour, size, background):
    w, h = size
    image = Image.new("RGB", size, background)
    d = ImageDraw.Draw(image)
    side = int(min(w, h) * 0.6)
    x0, y0 = (w - side) // 2, (h - side) // 2
    box = (x0, y0, x0 + side, y0 + side)
    if shape == "circle":
        d.ellipse(box, fill=colour)
    elif shape == "square":
        d.rectangle(box, fill=colour)
    else:
        d.polygon([(x0 + side // 2, y0), (x0, y0 + side), (x0 + side, y0 + side)], fill=colour)
    return image


def make_tiny_dataset(out_dir, num_images=24, seed=0):
    """Write the data set; returns {"image_folder", "pretrain", "finetune"} (absolute paths)."""
    rng = random.Random(seed)
    out_dir = os.path.abspath(out_dir)
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    pretrain, finetune = [], []
    combos = [(s, c) for s in SHAPES for c in COLOURS]
    for n in range(num_images):
        shape, colour = combos[n % len(combos)]
        size = (rng.choice((64, 80, 96, 112)), rng.choice((64, 80, 96, 112)))
        name = f"images/{n:04d}_{colour}_{shape}.png"
        draw(shape, COLOURS[colour], size, rng.choice(BACKGROUNDS)).save(os.path.join(out_dir, name))
        caption = f"A {colour} {shape}."
        prompt = rng.choice(CAPTION_PROMPTS)
        pretrain.append({"id": f"pt-{n:04d}", "image": name, "conversations": [
            {"from": "human", "value": f"<image>\n{prompt}" if n % 2 == 0 else f"{prompt}\n<image>"},
            {"from": "gpt", "value": caption}]})
        first = "What shape is shown?"
        finetune.append({"id": f"ft-{n:04d}", "image": name, "conversations": [
            {"from": "human", "value": f"<image>\n{first}" if n % 2 == 0 else f"{first}\n<image>"},
            {"from": "gpt", "value": f"A {shape}."},
            {"from": "human", "value": "What colour is it?"},
            {"from": "gpt", "value": f"It is {colour}."}]})
    for n, colour in enumerate(COLOURS):
        finetune.append({"id": f"text-{n}", "conversations": [
            {"from": "human", "value": f"Name a {colour} fruit."},
            {"from": "gpt", "value": {"red": "An apple.", "green": "A lime.", "blue": "A blueberry.",
                                      "yellow": "A banana."}[colour]}]})
    paths = {"image_folder": out_dir, "pretrain": os.path.join(out_dir, "pretrain.json"),
             "finetune": os.path.join(out_dir, "finetune.json")}
    for key, data in (("pretrain", pretrain), ("finetune", finetune)):
        with open(paths[key], "w") as f:
            json.dump(data, f, indent=1)
    return paths


def build_parser():
    parser = entry_parser("llava.train.make_tiny_dataset", __doc__)
    parser.add_argument("--out", required=True, help="folder to write images/, pretrain.json and finetune.json into")
    parser.add_argument("--num-images", type=int, default=24, help="pictures to draw")
    parser.add_argument("--seed", type=int, default=0, help="everything written is a function of this seed")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    print(json.dumps(make_tiny_dataset(args.out, args.num_images, args.seed)))


if __name__ == "__main__":
    main()
