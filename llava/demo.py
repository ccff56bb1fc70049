"""`make demo`: generate a tiny LLaVA checkpoint and sample images, then ask about one image through
the same code path as `python -m llava.serve.cli` (ChatSession), printing prompt, answer and timings.

The tiny checkpoint has random weights, so the answer is gibberish: the demo shows the pipeline
(loading the published layout, 336 px CLIP with 576 visual tokens, splicing, cached generation) works.
"""
import argparse
import os
import time

from PIL import Image, ImageDraw


def make_sample_images(folder):
    """A few deterministic pictures: a simple one (one large shape) and a busy one (many small shapes)."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    simple = Image.new("RGB", (480, 360), (235, 235, 235))
    ImageDraw.Draw(simple).ellipse((140, 80, 340, 280), fill=(200, 30, 30))
    paths.append(os.path.join(folder, "simple_red_circle.png"))
    simple.save(paths[-1])
    busy = Image.new("RGB", (400, 600), (90, 120, 60))
    draw = ImageDraw.Draw(busy)
    colours = [(230, 50, 50), (40, 90, 220), (240, 220, 40), (250, 250, 250), (30, 30, 30), (160, 60, 200)]
    for i in range(12):
        x, y = 30 + (i * 97) % 320, 30 + (i * 151) % 520
        box = (x, y, x + 40, y + 40)
        (draw.rectangle if i % 2 else draw.ellipse)(box, fill=colours[i % len(colours)])
    paths.append(os.path.join(folder, "busy_shapes.png"))
    busy.save(paths[-1])
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="where the checkpoint and images go")
    parser.add_argument("--question", default="What is in the image?")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args(argv)

    from transformers.utils import logging as hf_logging

    from llava.conversation import auto_conv_mode
    from llava.mm_utils import get_model_name_from_path, load_image
    from llava.model.builder import load_pretrained_model
    from llava.serve.cli import ChatSession
    from llava.tools.make_tiny_checkpoint import make_checkpoint

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    model_dir = os.path.join(args.out, "llava-v1.5-tiny")
    t0 = time.perf_counter()
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        make_checkpoint(model_dir, kind="v1.5", seed=0)
    images = make_sample_images(os.path.join(args.out, "images"))
    t1 = time.perf_counter()
    tokenizer, model, processor, _ = load_pretrained_model(model_dir, None, get_model_name_from_path(model_dir), device="cpu")
    t2 = time.perf_counter()
    conv_mode = auto_conv_mode(get_model_name_from_path(model_dir))
    session = ChatSession(tokenizer, model, processor, load_image(images[0]), conv_mode, temperature=0.0,
                          max_new_tokens=args.max_new_tokens)
    answer = session.ask(args.question)
    timings = session.last_timings
    print(f"checkpoint : {model_dir} (generated, random weights; conv mode {conv_mode})")
    print(f"image      : {images[0]}")
    print(f"prompt     : {timings['prompt']!r}")
    print(f"answer     : {answer!r}")
    print(f"timings    : generate checkpoint+images {t1 - t0:.2f}s, load {t2 - t1:.2f}s, "
          f"answer {timings['generate_s']:.2f}s for {timings['new_tokens']} new tokens")


if __name__ == "__main__":
    main()
