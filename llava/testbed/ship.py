"""Make the trained testbed model a self-contained checkpoint (the last step of scripts/testbed/train.sh).

    python -m llava.testbed.ship --model STAGE2_DIR --tower TOWER_DIR --out OUT --timings TIMINGS_JSON

OUT gets the stage-2 checkpoint (published full layout: config.json, weights, tokenizer), the tower in
OUT/clip-vit-testbed-patch14-336 with config.json's mm_vision_tower naming it relative to OUT (the
loader reads a relative tower from inside the checkpoint), trainer_state.json (the loss log), and
testbed_training.json: the seed, each stage's wall time, the machine and the library versions.
The pickled training_args.bin is left out (loading it would need an unsafe torch.load), and so are the
frozen tower's weights that the trainer also writes into the shards (the tower folder has them).
Fails if the weights exceed the 30 MB budget for committing the checkpoint.
"""
import json
import os
import platform
import shutil

from llava.utils import entry_parser

TOWER_NAME = "clip-vit-testbed-patch14-336"
MAX_WEIGHT_BYTES = 30 * 1024 * 1024
KEEP = ("config.json", "generation_config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer.model",
        "tokenizer_config.json", "trainer_state.json")
WEIGHTS = (".safetensors", ".bin")


def machine():
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}


def weight_files(folder):
    return [os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs
            if f.endswith(WEIGHTS) and f != "training_args.bin"]


def strip_tower(src, dst):
    """Copy a safetensors shard without the `model.vision_tower.*` tensors."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(src, "pt") as f:
        metadata = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("model.vision_tower.")}
    save_file(state, dst, metadata=metadata)


def ship(model, tower, out, timings):
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(model):
        if name.endswith(".safetensors"):
            strip_tower(os.path.join(model, name), os.path.join(out, name))
        elif name.endswith(".safetensors.index.json"):
            with open(os.path.join(model, name)) as f:
                index = json.load(f)
            index["weight_map"] = {k: v for k, v in index["weight_map"].items() if not k.startswith("model.vision_tower.")}
            with open(os.path.join(out, name), "w") as f:
                json.dump(index, f, indent=2)
        elif name in KEEP or (name.endswith(WEIGHTS) and name != "training_args.bin") or name.endswith(".index.json"):
            shutil.copyfile(os.path.join(model, name), os.path.join(out, name))
    tower_out = os.path.join(out, TOWER_NAME)
    if os.path.abspath(tower) != os.path.abspath(tower_out):
        shutil.rmtree(tower_out, ignore_errors=True)
        shutil.copytree(tower, tower_out)
    cfg_path = os.path.join(out, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["mm_vision_tower"] = TOWER_NAME
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)
    with open(timings) as f:
        record = json.load(f)
    record["machine"] = machine()
    with open(os.path.join(out, "testbed_training.json"), "w") as f:
        json.dump(record, f, indent=2)
    size = sum(os.path.getsize(p) for p in weight_files(out))
    if size > MAX_WEIGHT_BYTES:
        raise SystemExit(f"ship: the weights in {out} take {size / 2**20:.1f} MB, over the 30 MB budget")
    return size


def build_parser():
    p = entry_parser("llava.testbed.ship", __doc__)
    p.add_argument("--model", required=True, help="stage-2 output folder")
    p.add_argument("--tower", required=True, help="the trained tower's folder")
    p.add_argument("--out", required=True, help="folder to write the self-contained checkpoint into")
    p.add_argument("--timings", required=True, help="JSON written by scripts/testbed/train.sh")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    size = ship(args.model, args.tower, args.out, args.timings)
    print(f"llava-testbed written to {args.out} ({size / 2**20:.1f} MB of weights)")


if __name__ == "__main__":
    main()
