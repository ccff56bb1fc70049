"""Generate the synthetic shapes world: training data (upstream LLaVA format) and eval sets.

    python -m llava.testbed.generate --out DIR --seed 0 [--train-images 6000 --eval-images 100]

Writes
  DIR/train/images/*.png, DIR/train/pretrain.json (stage 1: caption per image, for the `plain` template),
  DIR/train/finetune.json (stage 2: multi-turn questions of every type, `v1` template),
  DIR/train/qa.json (stage 3: 4 short-answer turns per image, a caption in one of ten: see qa_conversation);
    with --where-share S, that share of the stage-2 and stage-3 conversations also asks which half of the
    picture an object is in (see where_turn),
    with --sentence-share S, that share of the stage-2 colour turns is answered with a sentence, "The star
    is red." (see add_sentence_answers),
    with --pair-share S, that share of the stage-3 conversations about a picture with two objects of different
    shapes and colours asks the colour of both (see add_colour_pairs),
    with --stage2-pair-share S, that share of the stage-2 conversations likewise, answered with sentences ("The
    star is red.", "The circle is blue."),
  DIR/train/tower.jsonl (per image: the objects present, for training the vision tower),
  DIR/eval/<simple|complex>/ for each regime:
    images/*.png, scenes.jsonl (the truth about each picture),
    pope/llava_pope_test.jsonl + pope/coco/coco_pope_{random,popular,adversarial}.json (POPE format:
      existence questions with random, popular and adversarial negatives),
    vqa/questions.jsonl + vqa/truth.jsonl (colour, counting, position, reading: model_vqa_loader format,
      `category` = the question type; scored by llava.testbed.score),
    chair/questions.jsonl + chair/objects.json ("Describe the image." and the objects present, for CHAIR).
Everything is a function of --seed. Training images come from both regimes (half each).
"""
import json
import os
import random
from collections import Counter

from llava.testbed.world import COLOURS, SHAPES, SIZE, article, caption, plural, render, sample_scene
from llava.utils import entry_parser

SHORT = "\nAnswer the question using a single word or phrase."
ALL_NAMES = [f"{c} {s}" for s in SHAPES for c in COLOURS]
DESCRIBE = "Describe the image."


# ---- questions with their true answers ---------------------------------------------------------------------
def existence(scene, rng, split, popular):
    """POPE-style (name, "yes"/"no") pairs: up to 3 present objects and as many absent ones, the absent
    ones drawn at random (random), by dataset frequency (popular) or sharing a shape or colour with a
    present object (adversarial)."""
    present = scene.names()
    positives = rng.sample(present, min(3, len(present)))
    absent = [n for n in ALL_NAMES if n not in present]
    k = max(1, len(positives))
    if split == "random":
        negatives = rng.sample(absent, k)
    elif split == "popular":
        negatives = [n for n in popular if n not in present][:k]
    elif split == "adversarial":
        shapes, colours = {n.split()[1] for n in present}, {n.split()[0] for n in present}
        close = [n for n in absent if n.split()[1] in shapes or n.split()[0] in colours]
        rng.shuffle(close)
        negatives = (close + [n for n in absent if n not in close])[:k]
    else:
        raise ValueError(split)
    pairs = [(n, "yes") for n in positives] + [(n, "no") for n in negatives]
    rng.shuffle(pairs)
    return pairs


def existence_text(name):
    return f"Is there {article(name)} {name} in the image?"


def named_once(scene):
    """The objects no other object in the picture shares a name with (so "the red star" says which)."""
    return [o for o in scene.objects if sum(p.name == o.name for p in scene.objects) == 1]


def colour_question(shape):
    """The colour question about the one object of that shape in a picture."""
    return f"What colour is the {shape}?"


def colour_sentence(shape, colour):
    """The sentence answer to colour_question(shape): "The star is red."."""
    return f"The {shape} is {colour}."


def colour_question_shape(question):
    """The shape a colour_question asks about, or None when `question` is not one."""
    head = colour_question("")[:-1]  # "What colour is the "
    if question.startswith(head) and question.endswith("?") and " " not in question[len(head):]:
        return question[len(head):-1]
    return None


def untagged(value):
    """A training turn's text without the image tag (before or after the question)."""
    return value.replace("<image>\n", "").replace("\n<image>", "")


def colour_turn_shape(value):
    """The shape a training turn's colour question asks about (the image tag aside, the short-answer instruction
    required), or None when the turn is not one."""
    text = untagged(value)
    return colour_question_shape(text[:-len(SHORT)]) if text.endswith(SHORT) else None


def asked_colour_shape(value):
    """The shape a training turn's colour question asks about, with the short-answer instruction or without it
    (a sentence-answer turn), or None when the turn is not one."""
    return colour_turn_shape(value) or colour_question_shape(untagged(value))


def vqa_questions(scene, rng):
    """[(type, question, answer)] about colour, counting, relative position and reading."""
    out = []
    if scene.word:
        out.append(("reading", "What is written in the image?", scene.word.lower()))
        out.append(("counting", "How many shapes are there in the image?", "0"))
        return out
    by_shape = Counter(o.shape for o in scene.objects)
    unique = [o for o in scene.objects if by_shape[o.shape] == 1]
    for o in rng.sample(unique, min(2, len(unique))):
        out.append(("colour", colour_question(o.shape), o.colour))
    shapes = rng.sample(SHAPES, 2)
    for s in shapes:
        out.append(("counting", f"How many {plural(s)} are there in the image?", str(by_shape[s])))
    if scene.regime == "simple":
        out.append(("counting", "How many shapes are there in the image?", str(len(scene.objects))))
    named = named_once(scene)
    pairs = [(a, b) for a in named for b in named if a is not b and abs(a.centre[0] - b.centre[0]) > 30]
    if pairs:
        a, b = rng.choice(pairs)
        answer = "yes" if a.centre[0] < b.centre[0] else "no"
        out.append(("position", f"Is the {a.name} to the left of the {b.name}?", answer))
    return out


# ---- training data ------------------------------------------------------------------------------------------
def training_conversation(scene, rng):
    """A multi-turn instruction conversation (2 to 4 turns) mixing every question type."""
    turns = []
    for name, answer in existence(scene, rng, "random", None)[:2]:
        turns.append((existence_text(name) + SHORT, answer.capitalize()))
    for _, q, a in vqa_questions(scene, rng):
        turns.append((q + SHORT, a.capitalize() if a.isalpha() else a))
    if scene.objects:
        n = len(scene.objects)
        turns.append(("How many objects are there in total?" + SHORT, str(n)))
        turns.append((DESCRIBE, caption(scene)))
    rng.shuffle(turns)
    turns = turns[:rng.randint(2, 4)]
    conv = []
    for i, (q, a) in enumerate(turns):
        if i == 0:
            q = "<image>\n" + q if rng.random() < 0.8 else q + "\n<image>"
        conv += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return conv


def qa_conversation(scene, rng, turns=4, caption_share=0.1):
    """Short-answer turns (existence yes and no, colour, counting, position, reading), image first, and in
    `caption_share` of the conversations one more turn, "Describe the image." with the full caption.
    The testbed's third stage trains on these: with few of the long captions, which are most of stage 2's
    supervised tokens, the gradient goes to reading the question and finding its object; with none, the
    model forgets how to describe (one word or nothing), and CHAIR measures nothing."""
    pairs = existence(scene, rng, "random", None)
    yes, no = [p for p in pairs if p[1] == "yes"], [p for p in pairs if p[1] == "no"]
    candidates = [(existence_text(n) + SHORT, a.capitalize()) for n, a in yes[:1] + no[:1]]
    candidates += [(q + SHORT, a.capitalize() if a.isalpha() else a) for _, q, a in vqa_questions(scene, rng)]
    rng.shuffle(candidates)
    candidates = candidates[:turns]
    if rng.random() < caption_share:
        candidates.insert(rng.randint(0, len(candidates)), (DESCRIBE, caption(scene)))
    conv = []
    for i, (q, a) in enumerate(candidates):
        conv += [{"from": "human", "value": ("<image>\n" if i == 0 else "") + q}, {"from": "gpt", "value": a}]
    return conv


def where_turn(scene, rng):
    """A grounding turn, "Which half of the image is the red star in?" -> "Left" or "Right", about an object
    named once in the picture and at least 24 px from the middle, or None when there is none. Upstream
    LLaVA-1.5 trains on region-level data (RefCOCO, Visual Genome boxes) for the same reason: it teaches the
    LLM to read where an object is, which the relative question ("Is the A to the left of the B?") needs
    twice and then compares."""
    sided = groundable(scene)
    return where_question(rng.choice(sided)) if sided else None


def groundable(scene):
    """The objects a grounding turn may ask about: named once, and at least 24 px from the middle."""
    return [o for o in named_once(scene) if abs(o.centre[0] - SIZE / 2) >= 24]


def where_question(o):
    """(question, answer) of the grounding turn about object o."""
    return f"Which half of the image is the {o.name} in?" + SHORT, "Left" if o.centre[0] < SIZE / 2 else "Right"


def chosen(records, scenes, rng, share):
    """The (record, scene) pairs of `share` of the conversations, one draw from `rng` per conversation in order
    (none at share 0, so a world without the turns draws nothing)."""
    for record, scene in zip(records, scenes):
        if share > 0 and rng.random() < share:
            yield record, scene


def insert_turn(conv, rng, question, answer):
    """Put one turn into the conversation at a random place after its first turn (which holds the image)."""
    at = 2 * rng.randint(1, len(conv) // 2)
    conv[at:at] = [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def add_where_turns(records, scenes, rng, share):
    """Give `share` of the conversations one grounding turn (see where_turn), after their first turn (which
    holds the image). `rng` is the world's own stream for these turns, so share 0 writes the same files as a
    world without them."""
    for record, scene in chosen(records, scenes, rng, share):
        turn = where_turn(scene, rng)
        if turn is not None:
            insert_turn(record["conversations"], rng, *turn)
    return records


def add_sentence_answers(records, rng, share):
    """Turn `share` of the colour turns into a question without the short-answer instruction, answered with a
    sentence that names the object first: "What colour is the star?" -> "The star is red.". Upstream LLaVA's
    stage 2 mixes such long answers with short ones; for a language model trained from nothing they give the
    head that carries the asked shape to the answer its own gradient (predicting "star" after "The" is a copy
    from the question), which the short answer alone does not (see the README, *Where binding breaks* and
    *Sentence answers*). `rng` is the world's own stream for these turns, so share 0 writes the same files as
    a world without them."""
    for record in records:
        conv = record["conversations"]
        for q, a in zip(conv[0::2], conv[1::2]):
            shape = colour_turn_shape(q["value"])
            if share <= 0 or shape is None or rng.random() >= share:
                continue
            q["value"] = q["value"].replace(SHORT, "")
            a["value"] = colour_sentence(shape, a["value"].lower())
    return records


def colour_pair(scene, rng):
    """Two objects of the picture that a colour question can name (the only one of their shape) and whose
    colours differ, or None when it has no such pair: the answer then depends on which shape was asked."""
    by_shape = Counter(o.shape for o in scene.objects)
    unique = [o for o in scene.objects if by_shape[o.shape] == 1]
    pairs = [(a, b) for i, a in enumerate(unique) for b in unique[i + 1:] if a.colour != b.colour]
    return rng.choice(pairs) if pairs else None


def add_colour_pairs(records, scenes, rng, share, sentences=False):
    """Give `share` of the conversations whose picture has a colour_pair the colour questions about both of its
    objects (those the conversation lacks, after its first turn): two questions on one picture that differ
    only in the shape named, and whose answers differ, are the gradient that teaches the LLM to pick the asked
    object's patches; stage 3's short answers alone did not form that selection on the 4,000-step tower, with
    these (and sentence answers in stage 2) it forms (see the README, *Why colour fell* and *Colour pairs*).
    With `sentences` (stage 2) they are asked without the short-answer instruction and answered "The star is
    red.": the shape to copy then differs between two turns on one picture, so the picture cannot supply it and
    only the question can (see add_sentence_answers). Tried at share 1 with seeds 0 and 1: the copying head
    did not form (README, *Stage-2 colour pairs*), so train.sh leaves it at 0.
    `rng` is the world's own stream for these turns, so share 0 writes the same files as a world without them."""
    for record, scene in chosen(records, scenes, rng, share):
        pair = colour_pair(scene, rng)
        if pair is None:
            continue
        conv = record["conversations"]
        asked = {asked_colour_shape(t["value"]) for t in conv[0::2]}
        for o in pair:
            if o.shape in asked:
                continue
            if sentences:
                insert_turn(conv, rng, colour_question(o.shape), colour_sentence(o.shape, o.colour))
            else:
                insert_turn(conv, rng, colour_question(o.shape) + SHORT, o.colour.capitalize())
    return records


def popular_names(scenes):
    counts = Counter(n for s in scenes for n in s.names())
    return [n for n, _ in counts.most_common()] + [n for n in ALL_NAMES if n not in counts]


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)


def generate_train(out, n, rng, where_rng=None, where_share=0.0, sentence_rng=None, sentence_share=0.0,
                   stage2_pair_rng=None, stage2_pair_share=0.0):
    images = os.path.join(out, "train", "images")
    os.makedirs(images, exist_ok=True)
    pretrain, finetune, tower, scenes = [], [], [], []
    for i in range(n):
        regime = "simple" if i % 2 == 0 else "complex"
        scene = sample_scene(rng, regime)
        scenes.append(scene)
        name = f"{i:06d}.png"
        render(scene).save(os.path.join(images, name))
        pretrain.append({"id": f"tb{i:06d}", "image": name, "conversations": [
            {"from": "human", "value": "<image>"}, {"from": "gpt", "value": caption(scene)}]})
        finetune.append({"id": f"tb{i:06d}", "image": name, "conversations": training_conversation(scene, rng)})
        tower.append({"image": name, **scene.to_dict()})
    write_json(os.path.join(out, "train", "pretrain.json"), pretrain)
    add_where_turns(finetune, scenes, where_rng, where_share)
    add_sentence_answers(finetune, sentence_rng, sentence_share)
    add_colour_pairs(finetune, scenes, stage2_pair_rng, stage2_pair_share, sentences=True)
    write_json(os.path.join(out, "train", "finetune.json"), finetune)
    write_jsonl(os.path.join(out, "train", "tower.jsonl"), tower)
    return scenes


def generate_eval(out, regime, n, rng):
    root = os.path.join(out, "eval", regime)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    scenes = [sample_scene(rng, regime) for _ in range(n)]
    names = [f"{regime}_{i:04d}.png" for i in range(n)]
    for scene, name in zip(scenes, names):
        render(scene).save(os.path.join(root, "images", name))
    write_jsonl(os.path.join(root, "scenes.jsonl"), [{"image": nm, **s.to_dict()} for s, nm in zip(scenes, names)])
    popular = popular_names(scenes)
    pope, qid = [], 0
    for split in ("adversarial", "popular", "random"):
        labels = []
        for scene, name in zip(scenes, names):
            for obj, answer in existence(scene, rng, split, popular):
                text = existence_text(obj)
                pope.append({"question_id": qid, "image": name, "text": text + SHORT, "category": split})
                labels.append({"question_id": qid, "image": name, "text": text, "label": answer})
                qid += 1
        write_jsonl(os.path.join(root, "pope", "coco", f"coco_pope_{split}.json"), labels)
    write_jsonl(os.path.join(root, "pope", "llava_pope_test.jsonl"), pope)
    questions, truth = [], []
    for scene, name in zip(scenes, names):
        for kind, q, a in vqa_questions(scene, rng):
            questions.append({"question_id": len(questions), "image": name, "text": q + SHORT, "category": kind})
            truth.append({"question_id": len(truth), "type": kind, "answer": a})
    write_jsonl(os.path.join(root, "vqa", "questions.jsonl"), questions)
    write_jsonl(os.path.join(root, "vqa", "truth.jsonl"), truth)
    write_jsonl(os.path.join(root, "chair", "questions.jsonl"),
                [{"question_id": i, "image_id": i, "image": nm, "text": DESCRIBE} for i, nm in enumerate(names)])
    write_json(os.path.join(root, "chair", "objects.json"), {str(i): s.names() for i, s in enumerate(scenes)})
    return scenes


def subset_eval(src, dst, images):
    """Copy one regime's eval sets (src = DIR/eval/<regime>) to dst, keeping only the questions about its
    first `images` pictures (in order, so POPE labels still pair with questions by position)."""
    from llava.eval.scoring_io import read_jsonl

    keep = sorted(os.listdir(os.path.join(src, "images")))[:images]
    keep_set = set(keep)
    for rel in ("pope/llava_pope_test.jsonl", "vqa/questions.jsonl", "chair/questions.jsonl",
                *(f"pope/coco/coco_pope_{s}.json" for s in ("adversarial", "popular", "random"))):
        write_jsonl(os.path.join(dst, rel), [r for r in read_jsonl(os.path.join(src, rel)) if r["image"] in keep_set])
    kept_ids = {q["question_id"] for q in read_jsonl(os.path.join(dst, "vqa", "questions.jsonl"))}
    write_jsonl(os.path.join(dst, "vqa", "truth.jsonl"),
                [t for t in read_jsonl(os.path.join(src, "vqa", "truth.jsonl")) if t["question_id"] in kept_ids])
    with open(os.path.join(src, "chair", "objects.json")) as f:
        objects = json.load(f)
    chair_ids = {str(q["image_id"]) for q in read_jsonl(os.path.join(dst, "chair", "questions.jsonl"))}
    write_json(os.path.join(dst, "chair", "objects.json"), {k: v for k, v in objects.items() if k in chair_ids})
    link = os.path.join(dst, "images")
    if not os.path.exists(link):
        os.symlink(os.path.abspath(os.path.join(src, "images")), link)
    return dst


def generate(out, seed=0, train_images=6000, eval_images=100, caption_share=0.1, where_share=0.0,
             sentence_share=0.0, pair_share=0.0, stage2_pair_share=0.0):
    """Write the whole world under `out` (see the module docstring)."""
    if not 0.0 <= caption_share <= 1.0:
        raise ValueError(f"--caption-share is the share of stage-3 conversations with a caption: it must be "
                         f"between 0 and 1, got {caption_share}")
    if not 0.0 <= where_share <= 1.0:
        raise ValueError(f"--where-share is the share of training conversations with a grounding turn: it must "
                         f"be between 0 and 1, got {where_share}")
    if not 0.0 <= sentence_share <= 1.0:
        raise ValueError(f"--sentence-share is the share of stage-2 colour turns answered with a sentence: it must "
                         f"be between 0 and 1, got {sentence_share}")
    if not 0.0 <= pair_share <= 1.0:
        raise ValueError(f"--pair-share is the share of stage-3 conversations asked the colour of two objects: it "
                         f"must be between 0 and 1, got {pair_share}")
    if not 0.0 <= stage2_pair_share <= 1.0:
        raise ValueError(f"--stage2-pair-share is the share of stage-2 conversations asked the colour of two "
                         f"objects: it must be between 0 and 1, got {stage2_pair_share}")
    rng = random.Random(seed)
    where_rng = random.Random(f"where-{seed}")  # its own stream: --where-share 0 leaves every file unchanged
    sentence_rng = random.Random(f"sentence-{seed}")  # likewise for --sentence-share
    scenes = generate_train(out, train_images, random.Random(rng.randint(0, 2**31)), where_rng, where_share,
                            sentence_rng, sentence_share, random.Random(f"pair2-{seed}"), stage2_pair_share)
    for regime in ("simple", "complex"):
        generate_eval(out, regime, eval_images, random.Random(rng.randint(0, 2**31)))
    qa_rng = random.Random(rng.randint(0, 2**31))  # drawn last: the files above do not depend on it
    qa = [{"id": f"tb{i:06d}", "image": f"{i:06d}.png",
           "conversations": qa_conversation(s, qa_rng, caption_share=caption_share)} for i, s in enumerate(scenes)]
    add_where_turns(qa, scenes, where_rng, where_share)
    add_colour_pairs(qa, scenes, random.Random(f"pair-{seed}"), pair_share)  # its own stream, as above
    write_json(os.path.join(out, "train", "qa.json"), qa)
    meta = {"seed": seed, "train_images": train_images, "eval_images": eval_images,
            "caption_share": caption_share, "shapes": SHAPES, "colours": list(COLOURS)}
    if where_share > 0:  # absent otherwise, so the committed world's world.json is unchanged
        meta["where_share"] = where_share
    if sentence_share > 0:
        meta["sentence_share"] = sentence_share
    if pair_share > 0:
        meta["pair_share"] = pair_share
    if stage2_pair_share > 0:
        meta["stage2_pair_share"] = stage2_pair_share
    with open(os.path.join(out, "world.json"), "w") as f:
        json.dump(meta, f)
    return out


def build_parser():
    p = entry_parser("llava.testbed.generate", __doc__)
    p.add_argument("--out", required=True, help="folder to write the world into (train/ and eval/)")
    p.add_argument("--seed", type=int, default=0, help="everything written is a function of this seed")
    p.add_argument("--train-images", type=int, default=6000, help="training pictures, half from each regime")
    p.add_argument("--eval-images", type=int, default=100, help="eval pictures per regime")
    p.add_argument("--caption-share", type=float, default=0.1,
                   help="share of the stage-3 conversations (train/qa.json) with a \"Describe the image.\" turn")
    p.add_argument("--where-share", type=float, default=0.0,
                   help="share of the stage-2 and stage-3 conversations with a grounding turn (\"Which half of the "
                        "image is the red star in?\" -> Left/Right); 0, the default, writes no such turn")
    p.add_argument("--sentence-share", type=float, default=0.0,
                   help="share of the stage-2 colour turns (train/finetune.json) asked without the short-answer "
                        "instruction and answered with a sentence (\"The star is red.\"); 0, the default, writes "
                        "short answers only")
    p.add_argument("--pair-share", type=float, default=0.0,
                   help="share of the stage-3 conversations (train/qa.json) whose picture has two objects of "
                        "different shapes and colours that are asked the colour of both; 0, the default, adds none")
    p.add_argument("--stage2-pair-share", type=float, default=0.0,
                   help="likewise for the stage-2 conversations (train/finetune.json), asked without the "
                        "short-answer instruction and answered with sentences (\"The star is red.\"); 0, the "
                        "default, adds none")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        generate(args.out, args.seed, args.train_images, args.eval_images, args.caption_share, args.where_share,
                 args.sentence_share, args.pair_share, args.stage2_pair_share)
    except ValueError as e:
        raise SystemExit(f"llava.testbed.generate: {e}") from None
    print(f"testbed world written to {args.out}")


if __name__ == "__main__":
    main()
