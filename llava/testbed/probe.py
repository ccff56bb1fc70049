"""Where the answer looks: per decoder layer, the share of the answer position's attention on the system
prompt, the image, the question and the instruction after it, for testbed questions.

    python -m llava.testbed.probe --model-path ./playground/llava-testbed --sets WORLD/eval [--questions 40]

A model that reads the question puts a visible share of its attention there; one that answers from the image
and the last words alone (the first testbed answered "How many stars ...?" with "Yes") does not. The
answer position is the last prompt token (the one whose output is the first answer token); attention is
averaged over heads and questions, unpruned, eager attention.

It also measures whether the patch tokens the LLM receives (tower select layer + projector) say where they
are: a ridge map fitted on 70% of each regime's eval pictures reads every patch's column (0 = left edge),
scored on the others (R^2 over all patches and over object-centre patches, and how often it orders two
objects more than 30 px apart as the position questions do), and maps fitted on one kind of patch alone,
those inside an object's box and the background (R^2, and how often the map puts a held-out patch on the
right side of the middle, the grounding turn's "Which half ...?"). The LLM also gets the tokens' order, but
that counts row by row, so a column is only there as the order modulo 24.

It measures whether the answer binds the question to the picture: for "What colour is the X?" about every
shape named once in a picture with other objects, the answer position's attention per layer on the X's
patches and on the other objects' patches, and per head how much more an X patch gets than another object's
patch (a model that answers with the colour of whichever object it happens to look at gets the same on
both: a colour in the picture, right about as often as chance among its objects). For that, the asked shape
must first reach the answer position from the question: it shows the answer position's attention on the
shape's word and how well a ridge map reads the asked shape from that position's state, layer by layer.

And it asks the grounding turn of `generate --where-share` ("Which half of the image is the red star
in?" -> "Left"/"Right") about every object of the eval pictures such a turn could name, greedily and
unpruned, and counts the answers: whether the LLM uses a side the tokens carry.
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
def answer_attention(model, tokenizer, processor, conv_mode, image_file, text, states=False):
    """(per decoder layer the answer position's attention [heads, positions], PARTS' spans) for one question
    about one picture, unpruned; the model must run eager attention. With states, a third item: the answer
    position's hidden state [layers + 1, D], the input of every decoder layer and the last one's output."""
    from llava.eval.common import full_prompt, image_prompt, prompt_ids, to_model
    from llava.mm_utils import load_image, process_images

    prompt = full_prompt(image_prompt(text, model.config), conv_mode)
    ids = prompt_ids(prompt, tokenizer)[None].to(model.device)
    image = load_image(image_file)
    pixels = to_model(process_images([image], processor, model.config), model)
    _, _, mask, _, embeds, _ = model.prepare_inputs_labels_for_multimodal(ids, None, None, None, None, pixels,
                                                                          [image.size])
    out = model.get_model()(inputs_embeds=embeds, attention_mask=mask, output_attentions=True,
                            output_hidden_states=states, use_cache=False)
    parts = spans(prompt, text, tokenizer, embeds.shape[1] - ids.shape[1] + 1)
    assert parts["instruction"][1] == embeds.shape[1], (parts, embeds.shape)
    rows = [attn[0, :, -1].float() for attn in out.attentions]
    if states:
        return rows, parts, torch.stack([h[0, -1] for h in out.hidden_states]).float()
    return rows, parts


def attention_shares(model, tokenizer, processor, conv_mode, items):
    """{question type: [per layer {part: mean share}]} for items (question type, image path, question text)."""
    sums, counts = defaultdict(lambda: defaultdict(float)), defaultdict(int)
    for kind, image_file, text in items:
        rows, parts = answer_attention(model, tokenizer, processor, conv_mode, image_file, text)
        for layer, row in enumerate(rows):
            row = row.mean(0)  # head-averaged
            for name, (a, b) in parts.items():
                sums[(kind, layer)][name] += float(row[a:b].sum())
        counts[kind] += 1
    layers = len(model.get_model().layers)
    return {kind: [{p: sums[(kind, layer)][p] / n for p in PARTS} for layer in range(layers)]
            for kind, n in counts.items()}


def binding_items(regime_dir, limit=None):
    """(image path, "What colour is the X?" + the short-answer instruction, [P] bool patches of the X,
    [P] bool patches of the picture's other objects) for every shape named once in a picture with other
    objects (the eval's colour questions are drawn from these), on the 24 x 24 grid; the first `limit`
    pictures. Patches under both are left out of both."""
    from PIL import Image

    from llava.eval.scoring_io import read_jsonl
    from llava.testbed.generate import SHORT, colour_question

    out = []
    for row in read_jsonl(os.path.join(regime_dir, "scenes.jsonl"), "scenes file")[:limit]:
        image = os.path.join(regime_dir, "images", row["image"])
        size = Image.open(image).size[0]
        shapes = [o["shape"] for o in row["objects"]]
        for o in row["objects"]:
            if shapes.count(o["shape"]) != 1 or len(shapes) < 2:
                continue
            asked = object_patches({"objects": [o]}, 24, size)
            others = object_patches({"objects": [p for p in row["objects"] if p is not o]}, 24, size)
            asked, others = asked & ~others, others & ~asked
            if asked.any() and others.any():
                out.append((image, colour_question(o["shape"]) + SHORT, asked, others))
    return out


def object_shares(row, asked, others):
    """(share on the asked object's patches [H], share on the other objects' patches [H], log per-patch
    selectivity [H]: the mean attention of an asked patch over that of another object's patch) of one
    answer position's attention over the image patches, row [H, P]; asked, others [P] bool."""
    on_asked, on_others = row[:, asked].sum(-1), row[:, others].sum(-1)
    tiny = torch.finfo(row.dtype).tiny
    selectivity = torch.log((on_asked / int(asked.sum()) + tiny) / (on_others / int(others.sum()) + tiny))
    return on_asked, on_others, selectivity


def binding(model, tokenizer, processor, conv_mode, items):
    """Per decoder layer, (share on the asked object [H], share on the others [H], log per-patch selectivity
    [H]), each the mean over items (binding_items): whether the answer position of "What colour is the X?"
    looks at the X rather than at every object, head by head."""
    if not items:
        raise ValueError("binding: no colour question to ask (no shape named once beside other objects)")
    sums = None
    for image_file, text, asked, others in items:
        rows, parts = answer_attention(model, tokenizer, processor, conv_mode, image_file, text)
        a, b = parts["image"]
        got = [torch.stack(object_shares(row[:, a:b], asked, others)) for row in rows]
        sums = got if sums is None else [s + g for s, g in zip(sums, got)]
    return [tuple(s / len(items)) for s in sums]


def asked_shape(text):
    """The X of a binding item's "What colour is the X?"."""
    from llava.testbed.generate import asked_colour_shape

    shape = asked_colour_shape(text)
    if shape is None:
        raise ValueError(f"not a colour question: {text!r}")
    return shape


def word_span(prompt, word, tokenizer, image_tokens):
    """Token range (start, end) of `word`, the last word of the question's first line, in the spliced prompt
    (as spans)."""
    from llava.eval.common import prompt_ids

    end = prompt.index(word + "?") + len(word)
    start = end - len(word) - 1  # before the space, which the word's first token carries

    def tokens_before(upto):
        return len(prompt_ids(prompt[:upto], tokenizer)) - 1 + image_tokens

    return tokens_before(start), tokens_before(end)


def question_reach(model, tokenizer, processor, conv_mode, items, held_out=0.3, lam=1.0):
    """Whether the asked shape of "What colour is the X?" reaches the answer position, which must carry it
    for its attention to pick the X's patches (binding): {"word": per decoder layer [H], the answer
    position's attention on the X's tokens in the question (mean over items); "readout": per hidden state
    (each decoder layer's input, then the last one's output), how often a ridge map from the answer
    position's state to the asked shape, fitted on the items of the first 1 - held_out of the pictures, names
    it on the rest; "chance": the held-out share of the commonest shape; "held_out": items scored}."""
    from llava.eval.common import full_prompt, image_prompt

    if not items:
        raise ValueError("question_reach: no colour question to ask (no shape named once beside other objects)")
    words, states, shapes = None, [], []
    for image_file, text, _, _ in items:
        rows, parts, state = answer_attention(model, tokenizer, processor, conv_mode, image_file, text, states=True)
        shape = asked_shape(text)
        prompt = full_prompt(image_prompt(text, model.config), conv_mode)
        a, b = word_span(prompt, shape, tokenizer, parts["image"][1] - parts["image"][0])
        got = [row[:, a:b].sum(-1) for row in rows]
        words = got if words is None else [w + g for w, g in zip(words, got)]
        states.append(state.double().cpu())
        shapes.append(shape)
    pictures = list(dict.fromkeys(image for image, *_ in items))
    fit_pictures = set(pictures[:max(1, round(len(pictures) * (1 - held_out)))])
    fit = torch.tensor([image in fit_pictures for image, *_ in items])
    if fit.all():
        raise ValueError(f"question_reach: {len(pictures)} pictures leave none held out at held_out={held_out}")
    names = sorted(set(shapes))
    labels = torch.tensor([names.index(x) for x in shapes])
    states = torch.stack(states)  # [N, layers + 1, D]
    readout = [class_readout(states[:, i], labels, fit, lam) for i in range(states.shape[1])]
    chance = float(torch.bincount(labels[~fit]).max()) / int((~fit).sum())
    return {"word": [w / len(items) for w in words], "readout": readout, "chance": chance,
            "held_out": int((~fit).sum())}


def class_readout(x, labels, fit, lam=1.0):
    """Share of the rows of x [N, D] not in fit [N] bool whose label [N] a ridge map to one-hot labels, fitted
    on the rows in fit (features standardised on them), names."""
    mean, std = x[fit].mean(0), x[fit].std(0) + 1e-6
    z = (x - mean) / std
    target = torch.nn.functional.one_hot(labels, int(labels.max()) + 1).to(z.dtype)
    guess = _predict(z[~fit], _ridge(z[fit], target[fit], lam)).argmax(-1)
    return float((guess == labels[~fit]).double().mean())


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


def grounding_items(regime_dir, limit=None):
    """(image path, "Which half of the image is the X in?" + the short-answer instruction, "Left"/"Right") for
    every object of the regime's eval pictures that the grounding turns of `generate --where-share` could ask
    about (named once in its picture, at least 24 px from the middle); the first `limit` pictures."""
    from llava.eval.scoring_io import read_jsonl
    from llava.testbed.generate import groundable, where_question
    from llava.testbed.world import Obj, Scene

    out = []
    for row in read_jsonl(os.path.join(regime_dir, "scenes.jsonl"), "scenes file")[:limit]:
        scene = Scene(row["regime"], (0, 0, 0), objects=[Obj(o["shape"], o["colour"], tuple(o["box"]))
                                                         for o in row["objects"]], word=row.get("word"))
        out += [(os.path.join(regime_dir, "images", row["image"]), *where_question(o)) for o in groundable(scene)]
    return out


@torch.no_grad()
def grounding(model, tokenizer, processor, conv_mode, items):
    """{answer given: count} and the number right, asking each item's question greedily, unpruned."""
    from argparse import Namespace

    from llava.eval.common import full_prompt, generate_answers, image_prompt, prompt_ids
    from llava.mm_utils import load_image, process_images

    given, right = defaultdict(int), 0
    for image_file, question, answer in items:
        image = load_image(image_file)
        ids = prompt_ids(full_prompt(image_prompt(question, model.config), conv_mode), tokenizer)
        got = generate_answers(model, tokenizer, [ids], process_images([image], processor, model.config),
                               [image.size], Namespace(temperature=0, max_new_tokens=4))[0]
        given[got] += 1
        right += got.lower() == answer.lower()
    return dict(given), right


def column_readout(features, regime_dir, held_out=0.3, lam=1.0, batch=20):
    """{"patches": R^2, "centres": R^2, "left_of": (ordered right, pairs)} of a ridge map (penalty lam) from
    a patch token to its column, fitted on all patches of the first 1 - held_out of the regime's pictures
    and scored on the rest. features(list of PIL images) -> [B, P, D] patch tokens on a square grid."""
    from PIL import Image

    from llava.eval.scoring_io import read_jsonl

    scenes = read_jsonl(os.path.join(regime_dir, "scenes.jsonl"), "scenes file")
    fit = max(1, round(len(scenes) * (1 - held_out)))
    if fit >= len(scenes):
        raise ValueError(f"{regime_dir}: {len(scenes)} pictures leave none held out at held_out={held_out}")
    rows = []
    for i in range(0, len(scenes), batch):
        images = [Image.open(os.path.join(regime_dir, "images", s["image"])).convert("RGB")
                  for s in scenes[i:i + batch]]
        rows.append(features(images).detach().double().cpu())
    tokens = torch.cat(rows)  # [N, P, D]
    n, patches, dim = tokens.shape
    side = int(round(patches ** 0.5))
    columns = torch.arange(patches, dtype=torch.float64) % side
    predicted = _predict(tokens[fit:], _ridge(tokens[:fit].reshape(-1, dim), columns.repeat(fit), lam))
    size = Image.open(os.path.join(regime_dir, "images", scenes[0]["image"])).size[0]
    centres, truth, right, pairs = [], [], 0, 0
    for k, scene in enumerate(scenes[fit:]):
        objects = []
        for o in scene["objects"]:
            cx, cy = (o["box"][0] + o["box"][2]) / 2, (o["box"][1] + o["box"][3]) / 2
            column = min(int(cx * side / size), side - 1)
            guess = float(predicted[k, min(int(cy * side / size), side - 1) * side + column])
            objects.append((cx, guess))
            centres.append(guess)
            truth.append(cx * side / size)
        for i, a in enumerate(objects):
            for b in objects[i + 1:]:
                if abs(a[0] - b[0]) > 30:
                    pairs += 1
                    right += (a[0] < b[0]) == (a[1] < b[1])
    on_object = torch.stack([object_patches(scene, side, size) for scene in scenes])  # [N, P] bool
    per_kind = {kind: _kind_readout(tokens, columns, mask, fit, lam, side)
                for kind, mask in (("object", on_object), ("background", ~on_object))}
    return {"patches": _r2(predicted.reshape(-1), columns.repeat(n - fit)),
            "centres": _r2(torch.tensor(centres), torch.tensor(truth)) if len(truth) > 1 else None,
            "left_of": (right, pairs), **per_kind}


def object_patches(scene, side, size):
    """[side * side] bool, row-major: the patches whose centre lies inside one of the scene's object boxes."""
    centre = (torch.arange(side, dtype=torch.float64) + 0.5) * size / side
    inside = torch.zeros(side, side, dtype=torch.bool)
    for o in scene["objects"]:
        x0, y0, x1, y1 = o["box"]
        inside |= ((centre >= y0) & (centre <= y1))[:, None] & ((centre >= x0) & (centre <= x1))[None, :]
    return inside.reshape(-1)


def _kind_readout(tokens, columns, mask, fit, lam, side):
    """(R^2, share of held-out patches whose half is read right, held-out patches) of a ridge map to the
    column fitted on the masked patches of the first `fit` pictures alone; None where either part has none."""
    cols = columns.expand(mask.shape)
    train, test = mask.clone(), mask.clone()
    train[fit:], test[:fit] = False, False
    if not train.any() or not test.any():
        return None
    guess, truth = _predict(tokens[test], _ridge(tokens[train], cols[train], lam)), cols[test]
    middle = (side - 1) / 2
    half = float(((guess < middle) == (truth < middle)).double().mean())
    return _r2(guess, truth), half, int(test.sum())


def _with_bias(x):
    return torch.cat([x, torch.ones(*x.shape[:-1], 1, dtype=x.dtype)], -1)


def _ridge(x, y, lam):
    """Weights (bias last, penalised too) of the ridge map from the rows of x [M, D] to y [M], penalty lam."""
    x = _with_bias(x)
    return torch.linalg.solve(x.T @ x + lam * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)


def _predict(x, weights):
    """The ridge map's guess for every row of x [..., D]."""
    return _with_bias(x) @ weights


def _r2(guess, truth):
    return float(1 - ((guess - truth) ** 2).sum() / ((truth - truth.mean()) ** 2).sum())


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

    @torch.no_grad()
    def patch_tokens(images):
        from llava.eval.common import to_model
        from llava.mm_utils import process_images

        return model.encode_images(to_model(process_images(images, processor, model.config), model))

    print('binding: "What colour is the X?" with other objects in the picture; per layer, the answer position\'s '
          "attention on the X / on the other objects (head mean), and the most selective head's attention per "
          "patch of the X over per patch of the others")
    for regime in args.regimes:
        items = binding_items(os.path.join(args.sets, regime))
        if not items:
            continue
        cells = []
        for i, (on_asked, on_others, selectivity) in enumerate(binding(model, tokenizer, processor, conv_mode, items)):
            best = int(selectivity.argmax())
            cells.append(f"L{i}: {float(on_asked.mean()):.2f} / {float(on_others.mean()):.2f}, "
                         f"h{best} x{float(selectivity[best].exp()):.1f}")
        print(f"{regime:8s} {len(items)} questions  " + "  ".join(cells))

    print('question reach: "What colour is the X?"; per layer, the most attentive head\'s share of the answer '
          "position's attention on the word X; per hidden state (layer inputs, then the output), the asked shape "
          "read from the answer position by a ridge map (held-out pictures)")
    for regime in args.regimes:
        items = binding_items(os.path.join(args.sets, regime))
        if len({image for image, *_ in items}) < 2:
            continue
        got = question_reach(model, tokenizer, processor, conv_mode, items)
        words = "  ".join(f"L{i}: h{int(w.argmax())} {float(w.max()):.2f}" for i, w in enumerate(got["word"]))
        reads = " ".join(f"{100 * r:.0f}%" for r in got["readout"])
        print(f"{regime:8s} {len(items)} questions  word {words}; read-out {reads} "
              f"(commonest shape {100 * got['chance']:.0f}% of {got['held_out']} held out)")

    print('grounding: "Which half of the image is the X in?" about every object named once and clear of the middle')
    for regime in args.regimes:
        items = grounding_items(os.path.join(args.sets, regime))
        given, right = grounding(model, tokenizer, processor, conv_mode, items)
        answers = ", ".join(f"{a!r} {n}" for a, n in sorted(given.items(), key=lambda kv: -kv[1])[:4])
        truth = sum(a == "Left" for _, _, a in items)
        print(f"{regime:8s} {right} of {len(items)} right; answers given: {answers}; truth Left {truth}, "
              f"Right {len(items) - truth}")

    print("where a patch is: its column read by a ridge map from the LLM's patch tokens (held-out pictures)")
    for regime in args.regimes:
        got = column_readout(patch_tokens, os.path.join(args.sets, regime))
        centres = "-" if got["centres"] is None else f"{got['centres']:.2f}"
        right, pairs = got["left_of"]
        print(f"{regime:8s} R^2 all patches {got['patches']:.2f}, object centres {centres}; "
              f"left-of ordered right {right} of {pairs} pairs" + (f" ({100 * right / pairs:.0f}%)" if pairs else ""))
        for kind in ("object", "background"):
            if got[kind] is not None:
                r2, half, count = got[kind]
                print(f"{'':8s} fitted on {kind} patches alone: R^2 {r2:.2f}, half (left/right of the middle) "
                      f"read right {100 * half:.0f}% of {count} held-out {kind} patches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
