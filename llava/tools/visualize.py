"""Show which patches each pruning method keeps: one panel per method, with the pruned patches dimmed.

    python -m llava.tools.visualize --model-path PATH --image-file IMG --methods agile,fastervlm,divprune \\
        --visual-token-num 64 --out panel.png

Panels show the base view as the vision tower sees it (padded to square for LLaVA-1.5); titles give
the method, K, and the image's erank (all tokens -> kept tokens) and attention entropy.
"""
from PIL import Image, ImageDraw

from llava.utils import entry_parser

from llava.pruning.config import PruningConfig, add_pruning_args, flags_given
from llava.pruning.metrics import attention_entropy, effective_rank
from llava.pruning.registry import METHODS, OPTIONS
from llava.pruning.select import select_visual_tokens
from llava.tools.common import add_model_args, load_for_tools, load_image, model_view, pruning_inputs

TITLE_HEIGHT = 34


def render_panel(view, kept, grid, title, dim=0.25):
    """view: PIL square image; kept: iterable of patch indices (raster order over grid x grid)."""
    side = view.size[0]
    cell = side / grid
    dark = Image.eval(view, lambda v: int(v * dim))
    mask = Image.new("L", view.size, 0)
    draw = ImageDraw.Draw(mask)
    for i in kept:
        r, c = divmod(int(i), grid)
        draw.rectangle((round(c * cell), round(r * cell), round((c + 1) * cell) - 1, round((r + 1) * cell) - 1), fill=255)
    panel = Image.new("RGB", (side, side + TITLE_HEIGHT), (255, 255, 255))
    panel.paste(Image.composite(view, dark, mask), (0, TITLE_HEIGHT))
    text = ImageDraw.Draw(panel)
    for line, text_line in enumerate(title.split("\n")):
        text.text((4, 2 + 15 * line), text_line, fill=(0, 0, 0))
    return panel


def contact_sheet(panels, gap=8):
    """The panels side by side on white, `gap` pixels apart."""
    width = sum(p.size[0] for p in panels) + gap * (len(panels) - 1)
    sheet = Image.new("RGB", (width, panels[0].size[1]), (255, 255, 255))
    x = 0
    for p in panels:
        sheet.paste(p, (x, 0))
        x += p.size[0] + gap
    return sheet


def selects_patches(method):
    spec = METHODS[method]
    return spec.stage == "post-projector" and not set(spec.inputs) - {"states"}


def build_parser():
    # conflict_handler="resolve": --pruning-method names this command's list of methods (as in
    # llava.tools.benchmark), replacing the shared single-method flag of add_pruning_args
    parser = add_model_args(entry_parser("llava.tools.visualize", __doc__, conflict_handler="resolve"))
    parser.add_argument("--image-file", required=True, help="the image (a path or an http(s) URL)")
    add_pruning_args(parser)  # the shared options (--visual-token-num, --erank-avg, ...)
    parser.add_argument("--methods", "--pruning-method", dest="methods", metavar="METHOD[,METHOD...]",
                        default="agile,fastervlm,divprune", help="comma-separated pruning methods, one panel each")
    parser.add_argument("--out", default="pruning_panel.png", help="the PNG to write")
    return parser


def main(argv=None):
    from llava.settings import checkpoint_calibration

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.visual_token_num is None:
            raise ValueError("--visual-token-num is required: the visual tokens each method keeps (e.g. 64)")
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        for m in methods:
            PruningConfig(method=m, visual_token_num=args.visual_token_num).validate()
            if not selects_patches(m):
                stage = METHODS[m].stage
                why = ("prunes inside the LLM, by the prompt's attention" if stage == "decoder" else
                       "builds new tokens instead of keeping patches" if stage == "pre-projector" else
                       "keeps every patch" if stage == "none" else f"reads {', '.join(METHODS[m].inputs)}")
                shown = ", ".join(sorted(n for n in METHODS if selects_patches(n)))
                raise ValueError(f"--methods: {m} {why}, so it has no kept patches to show; pick from {shown}")
        taken = set().union(*(METHODS[m].option_names for m in methods))
        unused = sorted(OPTIONS[name].flag_name for name in flags_given(args) if name in OPTIONS and name not in taken)
        if unused:
            raise ValueError(f"{', '.join(unused)} applies to none of --methods {','.join(methods)}")
        image = load_image(args.image_file)
        model, processor = load_for_tools(args)
        features, attention, states = pruning_inputs(model, processor, image, with_states=True)
        calibrated = None
        if "erank_avg" not in flags_given(args) and "erank_avg" in taken:  # the checkpoint's calibration
            calibrated = checkpoint_calibration(args.model_path)
            args.erank_avg = args.erank_avg if calibrated is None else calibrated
            print(f"erank_avg {args.erank_avg:g} ({'default' if calibrated is None else 'calibration'})")
        base, attn = features[:1], attention[:1]
        grid = model.get_vision_tower().num_patches_per_side
        view = model_view(model, processor, image)
        erank_all, entropy = effective_rank(base[0]).item(), attention_entropy(attn[0]).item()
        panels = []
        for m in methods:
            options = {name: getattr(args, name) for name in METHODS[m].option_names}
            signals = {"states": states[:1]} if "states" in METHODS[m].inputs else {}
            idx = select_visual_tokens(m, base, attn, args.visual_token_num, **options, **signals)[0]
            erank_kept = effective_rank(base[0, idx]).item()
            title = f"{m}  K={idx.numel()}\nerank {erank_all:.1f}->{erank_kept:.1f}  H={entropy:.2f}"
            panels.append(render_panel(view, idx.tolist(), grid, title))
    except (FileNotFoundError, ValueError) as e:
        parser.exit(2, f"error: {e}\n")
    contact_sheet(panels).save(args.out)
    print(f"{len(panels)} panels ({', '.join(methods)}, K={args.visual_token_num}) -> {args.out}")


if __name__ == "__main__":
    main()
