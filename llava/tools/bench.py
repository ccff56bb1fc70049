"""Time each pruning method's token selection next to the vision tower's forward.

    python -m llava.tools.bench [--n 576 --visual-token-num 64 --dim 4096 --repeats 10 --device cpu \\
        --tower clip-l]

`--tower clip-l` times a CLIP ViT-L/14-336 forward (random weights, up to layer -2, with and without
the CLS attention row); `--tower none` skips it. The selection part is `llava.tools.bench_select`
(same inputs, same tables).
"""
import torch

from llava.utils import entry_parser

from llava.tools.bench_select import REGIMES, add_shape_args, agile_comparison, method_table, synthetic_tokens, timed


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
    _, plain = timed(lambda: tower(pixels), repeats, device)
    _, with_attn = timed(lambda: tower(pixels, output_attentions=True), repeats, device)
    return plain, with_attn


def build_parser():
    parser = add_shape_args(entry_parser("llava.tools.bench", __doc__))
    parser.add_argument("--repeats", type=int, default=10,
                        help="timed runs per figure, after one warm-up (medians; the tower: a third, at least 3)")
    parser.add_argument("--tower", default="clip-l", choices=["clip-l", "none"],
                        help="also time a random-weights CLIP ViT-L/14-336 forward (clip-l), or not (none)")
    return parser


@torch.no_grad()  # not torch.set_grad_enabled(False): main() is also called in-process (tests)
def main(argv=None):
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    print(f"device {device}, N={args.n}, K={args.k}, D={args.dim}, median of {args.repeats}")
    if args.tower == "clip-l":
        plain, with_attn = tower_time(device, max(3, args.repeats // 3))
        print(f"vision tower CLIP-L/336 to layer -2: {plain:.1f} ms; with CLS attention row: {with_attn:.1f} ms "
              f"({100 * (with_attn / plain - 1):+.1f}%)")
    inputs = {r: synthetic_tokens(r, 1, args.n, args.dim, seed=i, device=device) for i, r in enumerate(REGIMES)}
    print("\n" + "\n".join(method_table(inputs, args.k, args.repeats, device)))
    print("\nagile (vectorised) vs agile_reference_loop (per-token loop):")
    print("\n".join(agile_comparison(inputs, args.k, args.repeats, device)))


if __name__ == "__main__":
    main()
