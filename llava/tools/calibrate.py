"""Measure a model's erank_avg over a folder of images, in the feature space of the AgilePruner rule.

    python -m llava.tools.calibrate --model-path PATH --image-folder DIR [--max-images 500] [--out erank.json]

For each image: the effective rank of the mean-centred post-projector features of its visual tokens
(per view for LLaVA-1.6 anyres; the mean is over all views), and the CLS attention entropy. The mean
erank is the value to pass as --erank-avg (90 for LLaVA-1.5-7B on its training images).
"""
import json
import os
import statistics

from tqdm import tqdm

from llava.utils import entry_parser

from llava.pruning.metrics import attention_entropy, effective_rank
from llava.tools.common import add_model_args, load_for_tools, load_image, pruning_inputs

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def list_images(folder, max_images=None):
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--image-folder {folder!r} is not a folder")
    files = sorted(os.path.join(root, f) for root, _, names in os.walk(folder) for f in names
                   if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise ValueError(f"--image-folder {folder!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files[:max_images] if max_images else files


def calibrate(model, processor, files, folder=None):
    """erank_avg and its spread over `files`; each image is named relative to `folder` when given, so the
    record reads the same on every machine the folder is copied to."""
    per_image = []
    for path in tqdm(files, desc="erank", unit="img", disable=None):  # no bar in a log file
        features, attention = pruning_inputs(model, processor, load_image(path))
        name = os.path.relpath(path, folder) if folder else path
        per_image.append({"image": name, "erank": effective_rank(features).mean().item(),
                          "attention_entropy": attention_entropy(attention).mean().item()})
    eranks = [r["erank"] for r in per_image]
    return {
        "erank_avg": statistics.mean(eranks),
        "erank_std": statistics.pstdev(eranks),
        "attention_entropy_avg": statistics.mean(r["attention_entropy"] for r in per_image),
        "num_images": len(per_image),
        "per_image": per_image,
    }


def build_parser():
    parser = add_model_args(entry_parser("llava.tools.calibrate", __doc__))
    parser.add_argument("--image-folder", required=True,
                        help="folder of images, searched recursively (" + ", ".join(IMAGE_EXTENSIONS) + ")")
    parser.add_argument("--max-images", type=int, default=None,
                        help="use only the first N images in sorted path order (default: all)")
    parser.add_argument("--out", default="erank_calibration.json",
                        help="JSON to write: erank_avg, its spread, and the figures per image")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        files = list_images(args.image_folder, args.max_images)
        model, processor = load_for_tools(args)
        result = {"model_path": args.model_path, "image_folder": args.image_folder,
                  **calibrate(model, processor, files, args.image_folder)}
    except (FileNotFoundError, ValueError) as e:
        parser.exit(2, f"error: {e}\n")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"erank_avg = {result['erank_avg']:.2f} (std {result['erank_std']:.2f}, {result['num_images']} images); "
          f"mean attention entropy {result['attention_entropy_avg']:.3f} nats -> {args.out}")


if __name__ == "__main__":
    main()
