"""`make demo`: the trained llava-testbed model (playground/llava-testbed, committed) answers questions about
pictures of the shapes world, with and without visual-token pruning, through the same code path as
`python -m llava.serve.cli` (ChatSession).

Prints, for one simple and one complex picture, each question with its true answer and the answers
unpruned and pruned, and the picture's description unpruned and pruned; then the accuracy of a few
methods at K tokens on a small fixed question set from both regimes; and saves which patches each method
keeps on the complex picture to <out>/kept_tokens.png (one panel per method).
"""
import os
import random
import time

MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "playground", "llava-testbed")
TABLE_METHODS = ("none", "fastervlm", "divprune", "agile")


def questions_about(scene, rng):
    """[(question, true answer)] of every kind the testbed asks (existence, colour, counting, ...)."""
    from llava.testbed.generate import SHORT, existence, existence_text, vqa_questions

    pairs = [(existence_text(name) + SHORT, answer) for name, answer in existence(scene, rng, "random", None)[:2]]
    return pairs + [(q + SHORT, a) for _, q, a in vqa_questions(scene, rng)]


def answer(model, tokenizer, processor, image, question, pruning, max_new_tokens=8):
    from llava.serve.cli import ChatSession

    model.set_pruning(pruning)
    session = ChatSession(tokenizer, model, processor, image, "vicuna_v1", temperature=0.0,
                          max_new_tokens=max_new_tokens)
    return session.ask(question)


def build_parser():
    from llava.pruning import METHODS
    from llava.utils import entry_parser

    parser = entry_parser("llava.demo", __doc__)
    parser.add_argument("--out", default="demo_out", help="where the pictures and kept_tokens.png go")
    parser.add_argument("--model-path", default=MODEL, help="the testbed checkpoint")
    parser.add_argument("--pruning-method", default="agile", choices=sorted(set(METHODS) - {"none"}),
                        help="the pruning method shown next to unpruned")
    parser.add_argument("--visual-token-num", type=int, default=64, help="K, visual tokens kept (of 576)")
    parser.add_argument("--table-scenes", type=int, default=8, help="pictures per regime in the accuracy table")
    return parser


def config_for(method, k, erank_avg):
    """The PruningConfig of `method` at K, with the checkpoint's calibrated erank_avg where the method takes one."""
    from llava.pruning import METHODS, PruningConfig

    extra = {"erank_avg": erank_avg} if "erank_avg" in METHODS[method].option_names else {}
    return PruningConfig(method=method, visual_token_num=k, **extra).validate()


def main(argv=None):
    args = build_parser().parse_args(argv)

    from llava.model.builder import load_pretrained_model
    from llava.pruning import PruningConfig
    from llava.pruning.metrics import attention_entropy, effective_rank
    from llava.pruning.select import select_visual_tokens
    from llava.tools.common import model_view, pruning_inputs
    from llava.tools.visualize import contact_sheet, render_panel
    from llava.testbed import calibrated_erank_avg
    from llava.testbed.generate import DESCRIBE
    from llava.testbed.score import normalise
    from llava.testbed.world import render, sample_scene

    os.makedirs(os.path.join(args.out, "images"), exist_ok=True)
    t0 = time.perf_counter()
    tokenizer, model, processor, _ = load_pretrained_model(args.model_path, None, "llava-testbed", device="cpu")
    print(f"checkpoint : {args.model_path} (trained on the shapes world; loaded in {time.perf_counter() - t0:.1f}s)")
    erank_avg = calibrated_erank_avg(args.model_path)
    pruned = config_for(args.pruning_method, args.visual_token_num, erank_avg)

    rng = random.Random(2026)
    shown = {}
    for regime in ("simple", "complex"):
        scene = sample_scene(rng, regime)
        while not scene.objects:
            scene = sample_scene(rng, regime)
        image = render(scene)
        path = os.path.join(args.out, "images", f"{regime}.png")
        image.save(path)
        shown[regime] = image
        print(f"\n{regime} picture {path}: " + ", ".join(o.name for o in scene.objects))
        print(f"  {'question':<50} {'truth':>6} {'unpruned':>9} {pruned.method + '@' + str(pruned.visual_token_num):>10}")
        for q, truth in questions_about(scene, rng):
            full = answer(model, tokenizer, processor, image, q, None)
            cut = answer(model, tokenizer, processor, image, q, pruned)
            print(f"  {q.split(chr(10))[0]:<50} {truth:>6} {full:>9} {cut:>10}")
        for label, cfg in (("unpruned", None), (f"{pruned.method}@{pruned.visual_token_num}", pruned)):
            print(f"  {DESCRIBE} ({label}): {answer(model, tokenizer, processor, image, DESCRIBE, cfg, 64)}")

    # accuracy of a few methods on a small fixed question set from both regimes
    rng = random.Random(7)
    items = []
    for regime in ("simple", "complex"):
        for _ in range(args.table_scenes):
            scene = sample_scene(rng, regime)
            image = render(scene)
            items += [(regime, image, q, a) for q, a in questions_about(scene, rng)]
    print(f"\naccuracy on {len(items)} questions ({args.table_scenes} pictures per regime), K={args.visual_token_num}:")
    print(f"  {'method':<10} {'simple':>7} {'complex':>8}")
    for method in TABLE_METHODS:
        cfg = None if method == "none" else config_for(method, args.visual_token_num, erank_avg)
        right = {"simple": [], "complex": []}
        for regime, image, q, a in items:
            right[regime].append(normalise(answer(model, tokenizer, processor, image, q, cfg)) == normalise(a))
        print(f"  {method:<10} " + " ".join(f"{100 * sum(v) / len(v):>7.1f}%" for v in right.values()))

    # which patches each method keeps on the complex picture
    model.set_pruning(None)
    image = shown["complex"]
    features, attention = pruning_inputs(model, processor, image)
    grid = model.get_vision_tower().num_patches_per_side
    view = model_view(model, processor, image)
    erank, entropy = effective_rank(features[0]).item(), attention_entropy(attention[0]).item()
    panels = []
    for method in TABLE_METHODS[1:]:
        options = config_for(method, args.visual_token_num, erank_avg).options()
        idx = select_visual_tokens(method, features[:1], attention[:1], args.visual_token_num, **options)[0]
        panels.append(render_panel(view, idx.tolist(), grid, f"{method}  K={idx.numel()}\nerank {erank:.1f}  H={entropy:.2f}"))
    out = os.path.join(args.out, "kept_tokens.png")
    contact_sheet(panels).save(out)
    print(f"\nkept tokens of {', '.join(TABLE_METHODS[1:])} at K={args.visual_token_num} on the complex picture -> {out}")


if __name__ == "__main__":
    main()
