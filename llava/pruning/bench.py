"""Selection time per pruning method next to the vision tower's time.

    python -m llava.pruning.bench [--n 576 --k 64 --dim 4096 --repeats 10 --device cpu --tower clip-l]

Inputs are random features of the LLaVA-1.5-7B post-projector shape (N x 4096) in two regimes:
`simple` (a few clusters, low erank) and `complex` (isotropic noise, high erank). For AgilePruner it
also times the walk alone, vectorised against the per-token loop on the same distances and thresholds,
and checks both give the same tokens. `--tower clip-l` times a CLIP ViT-L/14-336 forward (random
weights, up to layer -2, with the CLS attention row); `--tower none` skips it.
"""
import argparse
import statistics
import time

import torch

from .merging import visionzip_merge
from .methods import DEFAULT_OPTIONS, METHODS, agile_inputs, agile_walk, agile_walk_loop
from .select import select_visual_tokens


def timed(fn, repeats, device):
    times = []
    for i in range(repeats + 1):  # one warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - start)
    return out, statistics.median(times) * 1e3, (max(times) - min(times)) * 1e3


def make_inputs(regime, n, dim, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    if regime == "simple":
        centres = torch.randn(12, dim, generator=g)
        feats = centres[torch.randint(0, 12, (1, n), generator=g)] + 0.3 * torch.randn(1, n, dim, generator=g)
    else:
        feats = torch.randn(1, n, dim, generator=g)
    attn = torch.softmax(2 * torch.randn(1, n, generator=g), dim=-1)
    return feats.to(device), attn.to(device)


def tower_time(device, repeats):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower

    cfg = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    tower = CLIPVisionTower.__new__(CLIPVisionTower)
    torch.nn.Module.__init__(tower)
    tower.vision_tower = CLIPVisionModel(cfg).to(device).eval()
    tower.is_loaded, tower.select_layer, tower.select_feature, tower._cfg_only = True, -2, "patch", None
    pixels = torch.randn(1, 3, 336, 336, device=device)
    _, plain, _ = timed(lambda: tower(pixels), repeats, device)
    _, with_attn, _ = timed(lambda: tower(pixels, output_attentions=True), repeats, device)
    return plain, with_attn


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=576)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tower", default="clip-l", choices=["clip-l", "none"])
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_grad_enabled(False)
    print(f"device {device}, N={args.n}, K={args.k}, D={args.dim}, median of {args.repeats} (spread = max-min)")
    if args.tower == "clip-l":
        plain, with_attn = tower_time(device, max(3, args.repeats // 3))
        print(f"vision tower CLIP-L/336 to layer -2: {plain:.1f} ms; with CLS attention row: {with_attn:.1f} ms "
              f"({100 * (with_attn / plain - 1):+.1f}%)")
    methods = [m for m, spec in METHODS.items() if not spec.in_llm and not spec.merges]
    print(f"\n| method | simple (ms) | complex (ms) |\n|---|---|---|")
    inputs = {r: make_inputs(r, args.n, args.dim, device) for r in ("simple", "complex")}
    for m in methods:
        cells = []
        for regime in ("simple", "complex"):
            feats, attn = inputs[regime]
            _, med, spread = timed(lambda: select_visual_tokens(m, feats, attn, args.k), args.repeats, device)
            cells.append(f"{med:.2f} ± {spread / 2:.2f}")
        print(f"| {m} | {cells[0]} | {cells[1]} |")
    hidden = torch.randn(1, args.n + 1, 1024, device=device)  # CLIP-L select-layer states, CLS first
    keys = torch.randn(1, args.n + 1, 64, device=device)
    cells = []
    for regime in ("simple", "complex"):
        _, med, spread = timed(lambda: visionzip_merge(hidden, inputs[regime][1], keys, args.k), args.repeats, device)
        cells.append(f"{med:.2f} ± {spread / 2:.2f}")
    print(f"| visionzip (merge, 1024-d pre-projector) | {cells[0]} | {cells[1]} |")
    print("\nAgilePruner walk alone (same distances and thresholds), vectorised vs per-token loop:")
    for regime in ("simple", "complex"):
        feats, attn = inputs[regime]
        _, dist, tau = agile_inputs(feats, attn, **DEFAULT_OPTIONS)
        fast, t_fast, _ = timed(lambda: agile_walk(dist, tau, args.k), args.repeats, device)
        slow, t_slow, _ = timed(lambda: agile_walk_loop(dist, tau, args.k), max(3, args.repeats // 3), device)
        print(f"  {regime:8s} vectorised {t_fast:.2f} ms, loop {t_slow:.2f} ms, speed-up {t_slow / t_fast:.1f}x, "
              f"identical: {bool(torch.equal(fast, slow))}")


if __name__ == "__main__":
    main()
