"""Train the testbed's tiny CLIP-style vision tower on the shapes world, and save it in the CLIP layout.

    python -m llava.testbed.tower --out checkpoints/testbed-clip --steps 3000 [--batch-size 32 --seed 0]

The tower is a transformers CLIPVisionModel with the real 336 px / patch-14 geometry (576 patch
tokens + CLS), small widths. Objectives, on pictures drawn fresh every step from both regimes:
- on the CLS token of the last layer (pooled output), which shapes-and-colours are present (multi-label,
  36 pairs), how many objects there are (0..15) and which word or number is printed (or none): so the
  CLS token becomes a real summary of the picture and its attention row learns where the objects are;
- on every patch token of the select layer (-2, the features LLaVA uses), which shape-and-colour pair is
  under the patch centre (or background), and whether the patch holds an object's centre: so the tokens
  the LLM receives carry what is where, with colour and shape bound together (a pair, not two separate
  labels, so that the CLS token's attention can pool pairs) and one marked token per object to count;
- on the select layer's head-averaged CLS->patch attention row (the one FasterVLM, VisPruner and AgilePruner
  read), a cross-entropy to a target that gives each object (or the printed word) one unit of mass, spread
  over the patches it covers with a Gaussian weight around its centre (--attn-sigma, in patches), plus an
  even floor over all patches (--attn-floor). Without it the row is near uniform on simple pictures (a plain
  background adds nothing to a mean, so the CLS token has no reason to look away from it) and concentrated on
  complex ones, the reverse of real CLIP; with it the entropy grows with the number of objects, as CLIP's does
  (about 4.4-4.6 nats on simple datasets, 4.8-4.9 on complex ones);
- optionally (--where-weight, 0 by default), on every select-layer patch token, its own row and column
  through a linear head. The other objectives do not need a token to know where it is, and without this
  the tokens lose it (llava.testbed.probe reads no column from them): the LLM then has only the tokens'
  order, which counts row by row, so "Is the A to the left of the B?" stays at chance. --where-code
  onehot scores the head as a 24-way choice per axis; ordinal as 23 yes/no questions per axis ("is the
  column past c?"), so that "in the left half" and "left of" are single directions in the token (with
  onehot, an object patch's half was linearly readable 70-73% of the time, its column 78-88%).
Saved with config.json, model.safetensors and preprocessor_config.json (the CLIP-336 preprocessing),
so `--vision_tower DIR` works for training and loading. The heads are not saved.
"""
import json
import math
import os
import random
import time

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from llava.model.multimodal_encoder.clip_encoder import cls_attention_row
from llava.testbed.world import COLOURS, NUMBERS, SHAPES, SIZE, WORDS, draw_object, draw_word, render, sample_scene
from llava.utils import entry_parser, progress_bars, quiet_deepspeed_cpu_notice, torch_init

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PAIRS = [f"{c} {s}" for s in SHAPES for c in COLOURS]
TEXTS = list(WORDS + NUMBERS)
GRID = SIZE // 14
PATCH_CENTRES = torch.arange(GRID, dtype=torch.float32) * 14 + 7  # pixel coordinate of each patch row/column centre


def tower_config(hidden=192, layers=6, heads=6, intermediate=768):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                            num_attention_heads=heads, image_size=SIZE, patch_size=14, projection_dim=hidden,
                            hidden_act="quick_gelu")


def pixels(image):
    """A 336 px PIL image -> normalised [3, 336, 336] (what CLIPImageProcessor does at this size)."""
    import numpy as np

    x = torch.from_numpy(np.asarray(image, dtype="float32") / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]


def patch_labels(scene):
    """(pair [576], centre [576]) per patch: pair = 0 for background, else 1 + the PAIRS index of the object
    under the patch centre (drawn as an id map the way the picture is drawn); centre = 1 on the patch that
    holds an object's centre (one per object), else 0."""
    import numpy as np

    ids = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(ids)
    for i, obj in enumerate(scene.objects, start=1):
        draw_object(draw, obj, fill=i)
    at_centres = np.asarray(ids)[7::14, 7::14].reshape(-1)
    lookup = torch.tensor([0] + [1 + PAIRS.index(o.name) for o in scene.objects])
    pair = lookup[torch.from_numpy(at_centres.astype("int64"))]
    centre = torch.zeros(GRID * GRID, dtype=torch.long)
    for obj in scene.objects:
        x, y = obj.centre
        centre[min(int(y) // 14, GRID - 1) * GRID + min(int(x) // 14, GRID - 1)] = 1
    return pair, centre


def _cover(paint):
    """[GRID, GRID]: the share of each patch's pixels that `paint(draw)` covers on a blank mask."""
    import numpy as np

    mask = Image.new("L", (SIZE, SIZE), 0)
    paint(ImageDraw.Draw(mask))
    return torch.from_numpy((np.asarray(mask) > 0).astype("float32").reshape(GRID, 14, GRID, 14).mean(axis=(1, 3)))


def attention_target(scene, sigma=1.0, floor=0.15):
    """[576] distribution for the select layer's CLS->patch attention: one unit of mass per object, over the
    patches it covers, weighted by a Gaussian of `sigma` patches around its centre (sigma 0: by coverage alone);
    one unit over the printed word's patches; then mixed with `floor` of the uniform distribution."""
    total = torch.zeros(GRID, GRID)
    for obj in scene.objects:
        weight = _cover(lambda draw: draw_object(draw, obj, fill=255))
        if sigma > 0:
            cx, cy = obj.centre
            d2 = (PATCH_CENTRES[None, :] - cx) ** 2 + (PATCH_CENTRES[:, None] - cy) ** 2
            weight = weight * torch.exp(-d2 / (2 * (sigma * 14) ** 2))
        total += weight / weight.sum().clamp(min=1e-12)
    if scene.word:
        weight = _cover(lambda draw: draw_word(draw, scene.word, fill=255))
        total += weight / weight.sum().clamp(min=1e-12)
    total = total.reshape(-1)
    total = total / total.sum() if total.sum() > 0 else torch.full_like(total, 1.0 / total.numel())
    return (1 - floor) * total + floor / total.numel()


def batch(rng, size, sigma=1.0, floor=0.15):
    """One training batch drawn from both regimes: pixels and every label."""
    xs, present, count, text, ppair, pcentre, target = [], [], [], [], [], [], []
    for i in range(size):
        scene = sample_scene(rng, "simple" if i % 2 == 0 else "complex")
        xs.append(pixels(render(scene)))
        p = torch.zeros(len(PAIRS))
        for o in scene.objects:
            p[PAIRS.index(o.name)] = 1.0
        present.append(p)
        count.append(len(scene.objects))
        text.append(TEXTS.index(scene.word) + 1 if scene.word else 0)
        pair, centre = patch_labels(scene)
        ppair.append(pair)
        pcentre.append(centre)
        target.append(attention_target(scene, sigma, floor))
    return (torch.stack(xs), torch.stack(present), torch.tensor(count), torch.tensor(text), torch.stack(ppair),
            torch.stack(pcentre), torch.stack(target))


class TowerWithHeads(torch.nn.Module):
    def __init__(self, config, where=False, where_code="onehot"):
        super().__init__()
        from transformers import CLIPVisionModel

        self.tower = CLIPVisionModel(config)
        h = config.hidden_size
        self.present = torch.nn.Linear(h, len(PAIRS))
        self.count = torch.nn.Linear(h, 16)
        self.text = torch.nn.Linear(h, len(TEXTS) + 1)
        self.patch_pair = torch.nn.Linear(h, len(PAIRS) + 1)
        self.patch_centre = torch.nn.Linear(h, 2)
        # made only when trained, so that a tower without it starts from the same weights as before it existed
        self.where_code = where_code
        self.patch_where = torch.nn.Linear(h, 2 * where_outputs(where_code)) if where else None

    def forward(self, x):
        """The heads' outputs (the row-and-column logits [B, 576, 2 * where_outputs(code)], or None without it) and the
        select layer's (-2) CLS->patch attention row [B, 576] (head-averaged, computed from that layer's own
        q/k projections as CLIPVisionTower does at inference)."""
        attn = getattr(self.tower, "vision_model", self.tower).encoder.layers[-2].self_attn
        qk = {}
        hooks = [attn.q_proj.register_forward_hook(lambda m, i, o: qk.__setitem__("q", o)),
                 attn.k_proj.register_forward_hook(lambda m, i, o: qk.__setitem__("k", o))]
        try:
            out = self.tower(pixel_values=x, output_hidden_states=True)
        finally:
            for hook in hooks:
                hook.remove()
        cls = out.pooler_output
        patches = out.hidden_states[-2][:, 1:]
        where = self.patch_where(patches) if self.patch_where is not None else None
        return (self.present(cls), self.count(cls), self.text(cls), self.patch_pair(patches),
                self.patch_centre(patches), where, cls_attention_row(attn, qk["q"], qk["k"]))


WHERE_CODES = ("onehot", "ordinal")


def where_outputs(code):
    """Head outputs per axis: a logit per row or column (onehot), or per boundary between two (ordinal)."""
    if code not in WHERE_CODES:
        raise ValueError(f"--where-code takes {' or '.join(WHERE_CODES)}, got {code!r}")
    return GRID if code == "onehot" else GRID - 1


def where_loss(logits, index, code):
    """(loss, predicted index) of one axis: logits [N, where_outputs(code)], index [N] in 0..GRID-1."""
    if code == "onehot":
        return F.cross_entropy(logits, index), logits.argmax(-1)
    past = (index[:, None] > torch.arange(GRID - 1)[None]).float()  # bit c: the index is past boundary c
    return F.binary_cross_entropy_with_logits(logits, past), (logits > 0).sum(-1)


def _f1(guess, truth):
    """F1 of boolean guesses against boolean truth, pooled over every label (0 when neither has a positive)."""
    return float(2 * (guess & truth).sum() / (guess.sum() + truth.sum()).clamp(min=1))


def losses(model, data, attn_weight=1.0, where_weight=0.0):
    x, present, count, text, ppair, pcentre, target = data
    p, c, t, pp, pc, w, a = model(x)
    a = a / a.sum(-1, keepdim=True)  # over the patches only, as llava.pruning.metrics.attention_entropy
    log_a = torch.log(a.clamp(min=1e-12))
    entropy = -(a * log_a).sum(-1).detach()
    on_objects = (a.detach() * (target > target.min(-1, keepdim=True).values)).sum(-1)
    # presence summed over the 36 pairs (a mean over mostly-absent labels is too weak a signal: the CLS
    # head then settles on the label frequencies)
    parts = {"present": F.binary_cross_entropy_with_logits(p, present, reduction="sum") / len(present),
             "count": F.cross_entropy(c, count),
             "text": F.cross_entropy(t, text), "patch_pair": F.cross_entropy(pp.flatten(0, 1), ppair.flatten()),
             # centres are 1 patch in ~40-570: weighted so that marking them is worth learning
             "patch_centre": F.cross_entropy(pc.flatten(0, 1), pcentre.flatten(), weight=torch.tensor([1.0, 20.0])),
             # the CLS attention row: cross-entropy to attention_target (at best the target's own entropy)
             "attention": attn_weight * -(target * log_a).sum(-1).mean()}
    pair_right = pp.argmax(-1) == ppair
    metrics = {"present_exact": float(((p > 0) == present.bool()).all(-1).float().mean()),
               "present_f1": _f1(p > 0, present.bool()),
               "count_acc": float((c.argmax(-1) == count).float().mean()),
               "text_acc": float((t.argmax(-1) == text).float().mean()),
               "pair_acc": float(pair_right[ppair > 0].float().mean()),
               "centre_recall": float((pc.argmax(-1) == 1)[pcentre == 1].float().mean()),
               "centre_precision": float(((pc.argmax(-1) == 1) & (pcentre == 1)).sum() / (pc.argmax(-1) == 1).sum().clamp(min=1)),
               # batches alternate simple (even) and complex (odd) pictures
               "attention_entropy_simple": float(entropy[0::2].mean()),
               "attention_entropy_complex": float(entropy[1::2].mean()),
               "attention_on_objects": float(on_objects.mean())}
    for name, rows in (("simple", slice(0, None, 2)), ("complex", slice(1, None, 2))):
        # what the LLM can learn of a regime is bounded by what its tokens say: per regime, the CLS token's
        # presence F1 (POPE asks the same) and the object patches' pair accuracy (colour, counting)
        metrics["present_f1_" + name] = _f1(p[rows] > 0, present[rows].bool())
        metrics["pair_acc_" + name] = float(pair_right[rows][ppair[rows] > 0].float().mean())
    if w is not None:
        column = torch.arange(GRID * GRID) % GRID  # patches row by row, as the tower orders them
        row = torch.arange(GRID * GRID) // GRID
        code = getattr(model, "where_code", "onehot")
        n = where_outputs(code)
        column, row = column.repeat(len(w)), row.repeat(len(w))
        col_loss, col_guess = where_loss(w[..., :n].flatten(0, 1), column, code)
        row_loss, row_guess = where_loss(w[..., n:].flatten(0, 1), row, code)
        parts["patch_where"] = where_weight * (col_loss + row_loss) / 2
        metrics["column_acc"] = float((col_guess == column).float().mean())
        metrics["row_acc"] = float((row_guess == row).float().mean())
    return sum(parts.values()), parts, metrics


def save_tower(tower, out):
    from llava.tools.make_tiny_checkpoint import _image_processor_dict

    quiet_deepspeed_cpu_notice()  # save_pretrained imports DeepSpeed when installed
    with progress_bars(False):  # a few MB: no bar
        tower.save_pretrained(out, safe_serialization=True)
    with open(os.path.join(out, "preprocessor_config.json"), "w") as f:
        json.dump(_image_processor_dict(), f, indent=2)


@torch_init()
def train_tower(out, steps=3000, batch_size=32, lr=1e-3, seed=0, width=192, layers=6, log_every=50,
                attn_weight=3.0, attn_sigma=1.0, attn_floor=0.15, where_weight=0.0, where_code="onehot"):
    where_outputs(where_code)  # a bad code fails here, before any training
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = TowerWithHeads(tower_config(width, layers, max(1, width // 32), 4 * width), where=where_weight > 0,
                           where_code=where_code)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 200) * 0.5 * (1 + math.cos(math.pi * s / steps)))  # warm-up, cosine
    held_out = batch(random.Random(seed + 1), 64, attn_sigma, attn_floor)
    log, start = [], time.time()
    for step in range(1, steps + 1):
        model.train()
        loss, parts, metrics = losses(model, batch(rng, batch_size, attn_sigma, attn_floor), attn_weight, where_weight)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps:
            model.eval()
            with torch.no_grad():
                _, _, held = losses(model, held_out, attn_weight, where_weight)
            entry = {"step": step, "loss": loss.item(), **{k: v.item() for k, v in parts.items()},
                     **{"held_" + k: v for k, v in held.items()}, "minutes": (time.time() - start) / 60}
            log.append(entry)
            print(json.dumps(entry), flush=True)
    os.makedirs(out, exist_ok=True)
    save_tower(model.tower, out)
    with open(os.path.join(out, "training_log.json"), "w") as f:
        json.dump({"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "width": width,
                   "layers": layers, "attn_weight": attn_weight, "attn_sigma": attn_sigma, "attn_floor": attn_floor,
                   "where_weight": where_weight, "where_code": where_code, "log": log}, f, indent=1)
    return model


def build_parser():
    p = entry_parser("llava.testbed.tower", __doc__)
    p.add_argument("--out", required=True, help="folder to save the tower into (CLIP layout)")
    p.add_argument("--steps", type=int, default=3000, help="training steps")
    p.add_argument("--batch-size", type=int, default=32, help="pictures per step, drawn fresh")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (200 warm-up steps, cosine decay)")
    p.add_argument("--width", type=int, default=192, help="hidden size (one attention head per 32; the MLP 4x)")
    p.add_argument("--layers", type=int, default=6, help="transformer layers")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the pictures drawn")
    p.add_argument("--attn-weight", type=float, default=3.0,
                   help="weight of the loss on the select layer's CLS attention row (0: none, the pre-issue-13 tower)")
    p.add_argument("--attn-sigma", type=float, default=1.0,
                   help="width (patches) of the Gaussian around each object's centre in that row's target (0: coverage)")
    p.add_argument("--attn-floor", type=float, default=0.15, help="share of that target spread evenly over all patches")
    p.add_argument("--where-weight", type=float, default=0.0,
                   help="weight of the loss that has each patch token say its row and column (0: none, the "
                        "committed tower; position questions need it)")
    p.add_argument("--where-code", choices=WHERE_CODES, default="onehot",
                   help="how that head reads a row or column: a 24-way choice (onehot) or 23 'past boundary c?' "
                        "bits (ordinal, so that left/right is one direction in the token)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train_tower(args.out, args.steps, args.batch_size, args.lr, args.seed, args.width, args.layers,
                attn_weight=args.attn_weight, attn_sigma=args.attn_sigma, attn_floor=args.attn_floor,
                where_weight=args.where_weight, where_code=args.where_code)


if __name__ == "__main__":
    main()
