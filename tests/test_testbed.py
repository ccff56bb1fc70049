"""The synthetic shapes world: scenes, pictures and questions agree; the regimes differ as intended."""
import filecmp
import json
import os
import random
import re
import shutil

import numpy as np
import pytest
import torch

from llava.testbed import generate as gen
from llava.testbed import score
from llava.testbed.world import COLOURS, SIZE, render, sample_scene


def rows(path):
    with open(path) as f:
        return [json.loads(x) for x in f if x.strip()]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return gen.generate(str(tmp_path_factory.mktemp("world")), seed=3, train_images=12, eval_images=16)


def test_same_seed_same_world(world, tmp_path):
    again = gen.generate(str(tmp_path / "w"), seed=3, train_images=12, eval_images=16)
    for rel in ("train/finetune.json", "eval/complex/vqa/truth.jsonl", "eval/simple/pope/llava_pope_test.jsonl",
                "eval/complex/images/complex_0003.png"):
        assert filecmp.cmp(os.path.join(world, rel), os.path.join(again, rel), shallow=False), rel


def test_caption_share_changes_only_the_stage3_data(world, tmp_path):
    """The share is a stage-3 setting: the pictures and the stage 1-2 data (so the tower and the stage 1-2
    weights trained on them) stay the same, which is what lets a stage-3 experiment reuse them."""
    other = gen.generate(str(tmp_path / "w"), seed=3, train_images=12, eval_images=16, caption_share=1.0)
    for rel in ("train/pretrain.json", "train/finetune.json", "train/tower.jsonl", "train/images/000011.png",
                "eval/simple/vqa/truth.jsonl", "eval/complex/chair/questions.jsonl"):
        assert filecmp.cmp(os.path.join(world, rel), os.path.join(other, rel), shallow=False), rel
    qa = json.load(open(os.path.join(other, "train", "qa.json")))
    assert all(any(describes(t) for t in c["conversations"][::2]) for c in qa)
    assert json.load(open(os.path.join(other, "world.json")))["caption_share"] == 1.0
    with pytest.raises(SystemExit, match="--caption-share .* between 0 and 1, got 1.5"):
        gen.main(["--out", str(tmp_path / "bad"), "--caption-share", "1.5"])
    assert not os.path.exists(tmp_path / "bad")


def with_and_without(tmp_path, unchanged, train_images=60, **share):
    """(a seed-3 world with `share`, the same seed's world without it); the files in `unchanged` are equal."""
    other = gen.generate(str(tmp_path / "w"), seed=3, train_images=train_images, eval_images=16, **share)
    same = gen.generate(str(tmp_path / "w0"), seed=3, train_images=train_images, eval_images=16)
    for rel in unchanged:
        assert filecmp.cmp(os.path.join(same, rel), os.path.join(other, rel), shallow=False), rel
    return other, same


def test_where_share_adds_grounding_turns_that_match_the_picture(world, tmp_path):
    """--where-share gives that share of the stage-2 and stage-3 conversations one "Which half ... ?" turn
    whose answer is the object's side; the pictures, captions and eval sets stay those of the same seed, and
    share 0 (the default) writes no such turn."""
    other, same = with_and_without(tmp_path, ("train/pretrain.json", "train/tower.jsonl", "train/images/000011.png",
                                              "eval/simple/vqa/truth.jsonl", "eval/complex/pope/llava_pope_test.jsonl"),
                                   train_images=40, where_share=1.0)
    scenes = rows(os.path.join(other, "train", "tower.jsonl"))
    asked = 0
    for rel in ("finetune.json", "qa.json"):
        for rec in json.load(open(os.path.join(other, "train", rel))):
            conv = rec["conversations"]
            assert "<image>" in conv[0]["value"] and not any("<image>" in t["value"] for t in conv[1:])
            for q, a in zip(conv[::2], conv[1::2]):
                m = re.match(r"Which half of the image is the (\w+ \w+) in\?", q["value"])
                if m:
                    asked += 1
                    objs = [o for o in scenes[int(rec["image"][:6])]["objects"]
                            if f"{o['colour']} {o['shape']}" == m.group(1)]
                    assert len(objs) == 1, (rel, rec["id"])
                    x = (objs[0]["box"][0] + objs[0]["box"][2]) / 2
                    assert a["value"] == ("Left" if x < SIZE / 2 else "Right") and abs(x - SIZE / 2) >= 24
        for rec in json.load(open(os.path.join(same, "train", rel))):
            assert not any("Which half" in t["value"] for t in rec["conversations"])
    assert asked > 40  # most of the 80 conversations (a few pictures have no object clear of the middle)
    assert json.load(open(os.path.join(other, "world.json")))["where_share"] == 1.0
    assert "where_share" not in json.load(open(os.path.join(same, "world.json")))
    with pytest.raises(SystemExit, match="--where-share .* between 0 and 1, got -0.5"):
        gen.main(["--out", str(tmp_path / "bad"), "--where-share", "-0.5"])


def paired_conversations(other, same, rel):
    """Per conversation of train/<rel> in the world `other` and, in order, the same seed's world `same`: (its id,
    the picture's objects, its (question, answer) turns in `other`, those in `same`)."""
    scenes = rows(os.path.join(other, "train", "tower.jsonl"))
    new = json.load(open(os.path.join(other, "train", rel)))
    old = json.load(open(os.path.join(same, "train", rel)))
    assert len(new) == len(old)
    for a, b in zip(new, old):
        turns = [list(zip(c["conversations"][::2], c["conversations"][1::2])) for c in (a, b)]
        yield a["id"], scenes[int(a["image"][:6])]["objects"], *turns


def has_colour_pair(objects):
    """Whether two objects of the picture, each the only one of its shape, differ in colour (gen.colour_pair)."""
    shapes = [o["shape"] for o in objects]
    unique = [o for o in objects if shapes.count(o["shape"]) == 1]
    return any(x["colour"] != y["colour"] for x in unique for y in unique)


def test_sentence_share_answers_colour_turns_with_a_sentence_naming_the_asked_shape(tmp_path):
    """--sentence-share turns that share of the stage-2 colour turns into "What colour is the X?" (no
    short-answer instruction) -> "The X is <its colour>."; every other turn, stage 3, the pictures and the eval
    sets stay those of the same seed, and share 0 writes none."""
    other, same = with_and_without(tmp_path, ("train/qa.json", "train/pretrain.json", "train/tower.jsonl",
                                              "eval/simple/vqa/questions.jsonl"), sentence_share=1.0)
    sentences = 0
    for _, objects, turns, before in paired_conversations(other, same, "finetune.json"):
        for (q, ans), (q0, ans0) in zip(turns, before):
            m = re.search(r"What colour is the (\w+)\?", q0["value"])
            if not m:
                assert (q, ans) == (q0, ans0)
                continue
            sentences += 1
            colour = next(o["colour"] for o in objects if o["shape"] == m.group(1))
            assert ans0["value"] == colour.capitalize() and gen.SHORT in q0["value"]
            assert ans["value"] == f"The {m.group(1)} is {colour}." and q["value"] == q0["value"].replace(gen.SHORT, "")
    assert sentences > 10
    assert json.load(open(os.path.join(other, "world.json")))["sentence_share"] == 1.0
    assert "sentence_share" not in json.load(open(os.path.join(same, "world.json")))
    with pytest.raises(SystemExit, match="--sentence-share .* between 0 and 1, got 2.0"):
        gen.main(["--out", str(tmp_path / "bad"), "--sentence-share", "2"])


def test_pair_share_asks_the_colour_of_both_objects_of_a_pair(tmp_path):
    """--pair-share gives stage-3 conversations about a picture with two objects of different shapes and colours
    the colour questions about both, with their true colours; stage 2, the pictures and the eval sets stay
    those of the same seed, every earlier turn is kept in order, and share 0 adds none."""
    other, same = with_and_without(tmp_path, ("train/finetune.json", "train/pretrain.json", "train/tower.jsonl",
                                              "eval/simple/vqa/questions.jsonl"), pair_share=1.0)
    paired = added = 0
    for id_, objects, turns, before in paired_conversations(other, same, "qa.json"):
        assert turns[0] == before[0] and all(t in turns for t in before)
        assert [t for t in turns if t in before] == before  # the old turns, in their order
        asked = {}
        for q, ans in turns:
            m = re.fullmatch(r"(?:<image>\n)?What colour is the (\w+)\?" + re.escape(gen.SHORT), q["value"])
            if m:
                (colour,) = [o["colour"] for o in objects if o["shape"] == m.group(1)]
                assert ans["value"] == colour.capitalize()
                asked[m.group(1)] = colour
        added += len(turns) - len(before)
        if has_colour_pair(objects):
            assert len(set(asked.values())) >= 2, id_  # two asked shapes whose answers differ
            paired += 1
        else:
            assert len(turns) == len(before)
    assert paired > 20 and added >= paired
    assert json.load(open(os.path.join(other, "world.json")))["pair_share"] == 1.0
    assert "pair_share" not in json.load(open(os.path.join(same, "world.json")))
    with pytest.raises(SystemExit, match="--pair-share .* between 0 and 1, got 1.5"):
        gen.main(["--out", str(tmp_path / "bad"), "--pair-share", "1.5"])


def test_stage2_pair_share_asks_both_colours_of_a_pair_with_sentence_answers(tmp_path):
    """--stage2-pair-share gives stage-2 conversations about a picture with two objects of different shapes and
    colours the colour questions about both, without the short-answer instruction and answered "The X is
    <its colour>." (so two answers on one picture name different shapes); stage 3, the pictures and the eval
    sets stay those of the same seed, every earlier turn is kept in order, and share 0 adds none."""
    other, same = with_and_without(tmp_path, ("train/qa.json", "train/pretrain.json", "train/tower.jsonl",
                                              "eval/simple/vqa/questions.jsonl"), stage2_pair_share=1.0)
    paired = 0
    for id_, objects, turns, before in paired_conversations(other, same, "finetune.json"):
        assert turns[0] == before[0] and [t for t in turns if t in before] == before
        for q, ans in (t for t in turns if t not in before):
            m = re.fullmatch(r"What colour is the (\w+)\?", q["value"])
            assert m, q["value"]
            (colour,) = [o["colour"] for o in objects if o["shape"] == m.group(1)]
            assert ans["value"] == f"The {m.group(1)} is {colour}."
        if has_colour_pair(objects):
            asked = [gen.asked_colour_shape(q["value"]) for q, _ in turns]
            asked = [shape for shape in asked if shape]
            assert len(asked) == len(set(asked)), id_  # no shape asked twice
            colours = {o["colour"] for o in objects if o["shape"] in asked}
            assert len(colours) >= 2, id_  # two asked shapes whose answers differ
            paired += 1
        else:
            assert turns == before
    assert paired > 20
    assert json.load(open(os.path.join(other, "world.json")))["stage2_pair_share"] == 1.0
    assert "stage2_pair_share" not in json.load(open(os.path.join(same, "world.json")))
    with pytest.raises(SystemExit, match="--stage2-pair-share .* between 0 and 1, got -1.0"):
        gen.main(["--out", str(tmp_path / "bad"), "--stage2-pair-share", "-1"])


def test_regimes_follow_their_definitions():
    rng = random.Random(0)
    for _ in range(60):
        s = sample_scene(rng, "simple")
        assert (s.word is not None and not s.objects) or (s.word is None and 1 <= len(s.objects) <= 2)
        c = sample_scene(rng, "complex")
        assert 6 <= len(c.objects) <= 15 and c.word is None
        for scene in (s, c):
            boxes = [o.box for o in scene.objects]
            assert all(0 <= b[0] < b[2] <= SIZE and 0 <= b[1] < b[3] <= SIZE for b in boxes)
            for i, a in enumerate(boxes):  # objects never overlap
                for b in boxes[i + 1:]:
                    assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_pictures_show_the_scene():
    rng = random.Random(1)
    for regime in ("simple", "complex"):
        for _ in range(10):
            scene = sample_scene(rng, regime)
            image = render(scene)
            assert image.size == (336, 336)
            for obj in scene.objects:  # around its centre, an object shows its colour and its shape's marking
                x, y = int(obj.centre[0]), int(obj.centre[1]) + 2
                patch = {image.getpixel((x + dx, y + dy)) for dx in range(-3, 4) for dy in range(-3, 4)}
                shade = tuple(int(0.55 * c) for c in COLOURS[obj.colour])
                assert COLOURS[obj.colour] in patch, obj
                assert (shade in patch) == (obj.shape != "circle"), obj
                assert patch <= {COLOURS[obj.colour], shade}, obj


def test_answers_are_true_of_the_scenes(world):
    for regime in ("simple", "complex"):
        root = os.path.join(world, "eval", regime)
        scenes = {s["image"]: s for s in rows(os.path.join(root, "scenes.jsonl"))}
        questions = {q["question_id"]: q for q in rows(os.path.join(root, "vqa", "questions.jsonl"))}
        for t in rows(os.path.join(root, "vqa", "truth.jsonl")):
            q = questions[t["question_id"]]
            objects = scenes[q["image"]]["objects"]
            assert q["category"] == t["type"]
            text = q["text"].split("\n")[0]
            if t["type"] == "counting" and "shapes" in text:
                assert t["answer"] == str(len(objects))
            elif t["type"] == "counting":
                shape = text.split("How many ")[1].split(" are")[0]
                assert t["answer"] == str(sum(shape in (o["shape"] + "s", o["shape"] + "es") for o in objects))
            elif t["type"] == "colour":
                shape = text.split("the ")[1].rstrip("?")
                (match,) = [o for o in objects if o["shape"] == shape]  # asked only about unique shapes
                assert t["answer"] == match["colour"]
            elif t["type"] == "position":
                a, b = text[len("Is the "):-1].split(" to the left of the ")
                (oa,) = [o for o in objects if f"{o['colour']} {o['shape']}" == a]
                (ob,) = [o for o in objects if f"{o['colour']} {o['shape']}" == b]
                left = (oa["box"][0] + oa["box"][2]) < (ob["box"][0] + ob["box"][2])
                assert t["answer"] == ("yes" if left else "no")
            else:
                assert t["answer"] == scenes[q["image"]]["word"].lower()
        for split in ("random", "popular", "adversarial"):
            labels = rows(os.path.join(root, "pope", "coco", f"coco_pope_{split}.json"))
            assert {x["label"] for x in labels} == {"yes", "no"}
            for x in labels:
                names = {f"{o['colour']} {o['shape']}" for o in scenes[x["image"]]["objects"]}
                name = re.fullmatch(r"Is there an? (.+) in the image\?", x["text"]).group(1)
                assert (name in names) == (x["label"] == "yes")


def test_pope_questions_pair_with_labels_in_order(world):
    root = os.path.join(world, "eval", "complex", "pope")
    questions = rows(os.path.join(root, "llava_pope_test.jsonl"))
    for split in ("random", "popular", "adversarial"):
        labels = rows(os.path.join(root, "coco", f"coco_pope_{split}.json"))
        mine = [q for q in questions if q["category"] == split]
        assert [q["question_id"] for q in mine] == [x["question_id"] for x in labels]


def test_training_data_is_in_upstream_format(world):
    pre = json.load(open(os.path.join(world, "train", "pretrain.json")))
    fine = json.load(open(os.path.join(world, "train", "finetune.json")))
    assert len(pre) == len(fine) == 12
    for item in pre + fine:
        conv = item["conversations"]
        assert [c["from"] for c in conv] == ["human", "gpt"] * (len(conv) // 2)
        assert sum("<image>" in c["value"] for c in conv) == 1 and "<image>" in conv[0]["value"]
        assert os.path.isfile(os.path.join(world, "train", "images", item["image"]))


def _patch_erank(image):
    from llava.pruning.metrics import effective_rank

    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)  # [336, 336, 3]
    patches = x.view(24, 14, 24, 14, 3).permute(0, 2, 1, 3, 4).reshape(576, -1)
    return float(effective_rank(patches))


def test_complex_pictures_have_higher_effective_rank():
    """The regimes differ in the quantity AgilePruner adapts to (here on raw patch pixels)."""
    rng = random.Random(5)
    simple = [_patch_erank(render(sample_scene(rng, "simple"))) for _ in range(8)]
    complex_ = [_patch_erank(render(sample_scene(rng, "complex"))) for _ in range(8)]
    assert max(simple) < min(complex_)


def test_vqa_scoring_normalises_answers(tmp_path):
    truth = [{"question_id": 0, "type": "counting", "answer": "2"},
             {"question_id": 1, "type": "colour", "answer": "red"},
             {"question_id": 2, "type": "existence", "answer": "yes"},
             {"question_id": 3, "type": "colour", "answer": "blue"}]
    answers = [{"question_id": 0, "text": "Two"}, {"question_id": 1, "text": "Red."},
               {"question_id": 2, "text": "Yes"}, {"question_id": 3, "text": "green"}]
    s = score.vqa_accuracy(truth, answers)
    assert s["counting"] == 100.0 and s["colour"] == 50.0 and s["all"] == 75.0
    assert s["type_match"] == {"counting": 100.0, "colour": 100.0, "existence": 100.0, "all": 100.0}
    off = [{"question_id": 0, "text": "Yes"}, {"question_id": 1, "text": "3"}, *answers[2:]]  # wrong kinds
    assert score.vqa_accuracy(truth, off)["type_match"] == {"counting": 0.0, "colour": 50.0, "existence": 100.0,
                                                           "all": 50.0}
    with pytest.raises(ValueError, match="question 3 has no answer"):
        score.vqa_accuracy(truth, answers[:3])


def test_chair_on_shape_captions():
    objects = {"0": ["red circle", "blue square"], "1": ["green star"]}
    caps = [{"question_id": 0, "text": "Two red circles and a blue square."},
            {"question_id": 1, "text": "A green star next to a yellow triangle."}]
    s = score.chair(objects, caps)
    assert s["chair_s"] == 50.0
    assert s["chair_i"] == pytest.approx(100 / 4)  # 4 mentions, 1 hallucinated
    assert s["recall"] == 100.0


def test_score_cli_writes_per_type_score_files(tmp_path):
    truth = tmp_path / "truth.jsonl"
    truth.write_text('{"question_id": 0, "type": "colour", "answer": "red"}\n'
                     '{"question_id": 1, "type": "counting", "answer": "3"}\n')
    ans = tmp_path / "a.jsonl"
    ans.write_text('{"question_id": 0, "text": "red"}\n{"question_id": 1, "text": "4"}\n')
    assert score.main(["vqa", "--truth", str(truth), "--result-file", str(ans), "--score-dir", str(tmp_path / "e"),
                       "--ckpt", "c", "--pruning-method", "agile", "--visual-token-num", "64"]) == 0
    colour = json.load(open(tmp_path / "e" / "colour" / "scores" / "c" / "agile" / "k64.json"))
    counting = json.load(open(tmp_path / "e" / "counting" / "scores" / "c" / "agile" / "k64.json"))
    assert colour["score"] == 100.0 and counting["score"] == 0.0 and counting["type_match"] == 100.0


def test_patch_labels_mark_the_objects():
    from llava.testbed.tower import GRID, PAIRS, patch_labels

    rng = random.Random(2)
    for regime in ("simple", "complex"):
        scene = sample_scene(rng, regime)
        while not scene.objects:  # a printed word: no object labels
            scene = sample_scene(rng, regime)
        pair, centre = patch_labels(scene)
        for obj in scene.objects:
            x, y = obj.centre
            p = int(y) // 14 * GRID + int(x) // 14
            assert centre[p] == 1  # the patch holding the object's centre is marked
            if (14 * (p % GRID) + 7 - x) ** 2 + (14 * (p // GRID) + 7 - y) ** 2 < 16 and obj.shape != "triangle":
                assert pair[p] == 1 + PAIRS.index(obj.name)  # and labelled with the object when its centre is on it
        assert int(centre.sum()) == len(scene.objects)
        assert set(pair[pair > 0].tolist()) == {1 + PAIRS.index(o.name) for o in scene.objects}
        if regime == "simple":  # large objects cover many patches, the border none
            assert (pair > 0).sum() >= 20 and pair.view(GRID, GRID)[0].sum() == 0


def test_tower_training_runs_and_saves_a_loadable_clip_tower(tmp_path):
    from types import SimpleNamespace

    from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
    from llava.testbed.tower import pixels, train_tower

    out = str(tmp_path / "tower")
    torch.manual_seed(0)
    model = train_tower(out, steps=2, batch_size=2, width=32, layers=2, log_every=1)
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= set(os.listdir(out))
    log = json.load(open(os.path.join(out, "training_log.json")))["log"]
    assert len(log) == 2 and all(np.isfinite(e["loss"]) for e in log)
    assert {"attention", "held_attention_entropy_simple", "held_attention_on_objects"} <= set(log[-1])
    tower = CLIPVisionTower(out, SimpleNamespace(mm_vision_select_layer=-2, mm_vision_select_feature="patch"))
    x = pixels(render(sample_scene(random.Random(0), "complex")))[None]
    feats, attn = tower(x, output_attentions=True)
    assert feats.shape == (1, 576, 32) and attn.shape == (1, 576)
    # the attention loss trains the row the pruning methods read at inference
    model.eval()
    with torch.no_grad():
        trained_row = model(x)[-1]
    torch.testing.assert_close(trained_row / trained_row.sum(), attn / attn.sum(), rtol=1e-4, atol=1e-7)
    assert model.patch_where is None and "patch_where" not in log[-1]  # off unless asked for


def test_tower_held_out_metrics_are_reported_per_regime():
    """The held-out presence F1 and object-patch pair accuracy are also given per regime (batches alternate
    simple and complex pictures), so a tower that knows simple pictures and not complex ones shows it."""
    from llava.testbed.tower import GRID, PAIRS, TEXTS, batch, losses

    data = batch(random.Random(0), 4)
    _, present, _, _, ppair, _, _ = data
    simple = torch.tensor([True, False, True, False])  # pictures 0 and 2 are simple

    def heads(x):  # right about the simple pictures, wrong about the complex ones
        present_logits = torch.where(simple[:, None], 50 * (2 * present - 1), -50 * (2 * present - 1))
        pair_guess = torch.where(simple[:, None], ppair, (ppair + 1) % (len(PAIRS) + 1))
        return (present_logits, torch.zeros(4, 16), torch.zeros(4, len(TEXTS) + 1),
                50 * torch.nn.functional.one_hot(pair_guess, len(PAIRS) + 1).float(),
                torch.zeros(4, GRID * GRID, 2), None, torch.full((4, GRID * GRID), 1 / 576))

    _, _, metrics = losses(heads, data)
    assert metrics["present_f1_simple"] == metrics["pair_acc_simple"] == 1.0
    assert metrics["present_f1_complex"] == metrics["pair_acc_complex"] == 0.0
    assert 0 < metrics["present_f1"] < 1 and 0 < metrics["pair_acc"] < 1  # pooled over both, as before


def test_tower_where_loss_asks_each_patch_token_for_its_row_and_column(tmp_path):
    """--where-weight: the head on every select-layer patch token is scored against the token's row and column
    in the tower's row-major patch order (column = index % 24), and training with it logs both."""
    from llava.testbed.tower import GRID, PAIRS, TEXTS, batch, losses, train_tower

    data = batch(random.Random(0), 2)
    index = torch.arange(GRID * GRID)

    def heads(row, column):
        one_hot = torch.nn.functional.one_hot
        where = torch.cat([one_hot(column, GRID), one_hot(row, GRID)], -1).float()[None].repeat(2, 1, 1)
        outputs = (torch.zeros(2, len(PAIRS)), torch.zeros(2, 16), torch.zeros(2, len(TEXTS) + 1),
                   torch.zeros(2, 576, len(PAIRS) + 1),
                   torch.zeros(2, 576, 2), 50 * where, torch.full((2, 576), 1 / 576))
        return lambda x: outputs

    _, parts, metrics = losses(heads(index // GRID, index % GRID), data, where_weight=1.0)
    assert metrics["column_acc"] == metrics["row_acc"] == 1.0 and parts["patch_where"] < 1e-6
    _, parts, metrics = losses(heads(index % GRID, index // GRID), data, where_weight=1.0)  # row, column swapped
    assert metrics["column_acc"] < 0.1 and metrics["row_acc"] < 0.1 and parts["patch_where"] > 10

    torch.manual_seed(0)
    model = train_tower(str(tmp_path / "tower"), steps=2, batch_size=2, width=32, layers=2, log_every=1,
                        where_weight=1.0)
    saved = json.load(open(tmp_path / "tower" / "training_log.json"))
    assert saved["where_weight"] == 1.0 and model.patch_where.out_features == 2 * GRID
    assert {"patch_where", "held_column_acc", "held_row_acc"} <= set(saved["log"][-1])


def test_tower_where_code_ordinal_scores_boundary_bits(tmp_path):
    """--where-code ordinal: per axis 23 bits, bit c saying the index is past boundary c; the index read back
    is the number of bits set, so "left half" is bit 11 alone; a bad code is refused before training."""
    from llava.testbed.tower import GRID, where_loss, train_tower

    index = torch.arange(GRID)
    bits = (index[:, None] > torch.arange(GRID - 1)[None]).float()
    loss, guess = where_loss(40 * (2 * bits - 1), index, "ordinal")
    assert torch.equal(guess, index) and loss < 1e-6
    loss, guess = where_loss(40 * (1 - 2 * bits), index, "ordinal")  # every bit wrong
    assert (guess == index).float().mean() < 0.1 and loss > 10
    assert bool((bits[:12, 11] == 0).all() and (bits[12:, 11] == 1).all())  # left half <-> bit 11 off
    model = train_tower(str(tmp_path / "tower"), steps=1, batch_size=2, width=32, layers=2, where_weight=1.0,
                        where_code="ordinal")
    assert model.patch_where.out_features == 2 * (GRID - 1)
    assert json.load(open(tmp_path / "tower" / "training_log.json"))["where_code"] == "ordinal"
    with pytest.raises(ValueError, match="--where-code takes onehot or ordinal, got 'binary'"):
        train_tower(str(tmp_path / "bad"), steps=1, batch_size=2, width=32, layers=2, where_weight=1.0,
                    where_code="binary")
    assert not os.path.exists(tmp_path / "bad")


def test_tower_attention_target_gives_every_object_one_unit_so_entropy_grows_with_objects():
    from llava.testbed.tower import GRID, attention_target

    def entropy(p):
        return float(-(p * p.log()).sum())

    rng = random.Random(1)
    by_regime = {"simple": [], "complex": []}
    for regime in ("simple", "complex") * 12:
        scene = sample_scene(rng, regime)
        target = attention_target(scene, sigma=1.0, floor=0.15)
        assert target.shape == (GRID * GRID,) and abs(float(target.sum()) - 1) < 1e-5
        assert float(target.min()) == pytest.approx(0.15 / 576, rel=1e-4)  # the floor, on the background
        on = target > 0.15 / 576 * 1.0001
        # the objects (or the word) hold all but the floor's share
        assert float(target[on].sum()) == pytest.approx(0.85 + 0.15 * int(on.sum()) / 576, abs=1e-4)
        by_regime[regime].append((len(scene.objects) + bool(scene.word), entropy(target)))
    # more objects, more even attention: complex pictures (6-15 objects) well above simple ones (1-2 or a word)
    mean = {r: np.mean([e for _, e in v]) for r, v in by_regime.items()}
    assert mean["simple"] + 0.3 < mean["complex"]
    assert attention_target(sample_scene(random.Random(2), "simple"), floor=0.0).min() == 0


def test_base_llm_has_the_worlds_words_as_whole_pieces(tmp_path):
    from llava.model.builder import load_tokenizer
    from llava.testbed.base import write_base

    out = write_base(str(tmp_path / "base"), hidden=32, layers=1, heads=2)
    tok = load_tokenizer(out)
    for word in ("purple", "diamond", "triangle", "colour"):
        assert len(tok(" " + word, add_special_tokens=False).input_ids) == 1, word
    assert tok("<s>").input_ids[0] == 1 and tok.eos_token_id == 2  # LLaMA's ids, as the templates expect
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["hidden_size"] == 32 and config["num_hidden_layers"] == 1 and config["model_type"] == "llama"


def test_text_conversations_answer_with_the_shape_the_question_asks():
    from llava.testbed.base import text_conversations

    convs = text_conversations(50, random.Random(3))
    assert len(convs) == 50 and {len(c) // 2 for c in convs} == {2, 3, 4}
    asked = []
    for conv in convs:
        for q, a in zip(conv[0::2], conv[1::2]):
            shape = gen.colour_question_shape(q["value"])
            assert q["from"] == "human" and a["from"] == "gpt" and shape is not None
            colour = re.fullmatch(f"The {shape} is (\\w+)\\.", a["value"]).group(1)
            assert colour in COLOURS
            asked.append(shape)
    assert len(set(asked)) == 6  # every shape is asked, so naming one from the prior cannot fit the answers


@pytest.mark.slow
def test_base_text_steps_teach_the_llm_to_copy_the_asked_shape(tmp_path):
    """--text-steps trains the random LLM on text until it names the shape a question asked (a random LLM
    names it 1 time in 6 at best), records what it did, and ships the trained weights."""
    from transformers import LlamaForCausalLM

    from llava.model.builder import load_tokenizer
    from llava.testbed.base import _encode, copy_rate, text_conversations, write_base

    random_base = write_base(str(tmp_path / "random"), hidden=64, layers=2, heads=2)
    trained = write_base(str(tmp_path / "trained"), hidden=64, layers=2, heads=2, text_steps=200, text_batch=16)
    assert not os.path.exists(os.path.join(random_base, "base_training.json"))
    record = json.load(open(os.path.join(trained, "base_training.json")))
    assert record["steps"] == 200 and record["batch_size"] == 16 and record["held_out_copy_rate"] >= 0.9
    tok = load_tokenizer(trained)
    tok.pad_token = tok.unk_token
    held_out = _encode(text_conversations(40, random.Random(11)), tok)
    rates = {}
    for name, path in (("random", random_base), ("trained", trained)):
        llm = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)
        rates[name] = copy_rate(llm, tok, held_out)
    assert rates["trained"] >= 0.9 and rates["random"] < 0.5  # the weights on disk are the trained ones


def test_base_rejects_bad_text_training_arguments(tmp_path):
    from llava.testbed.base import write_base

    with pytest.raises(ValueError, match="--text-steps -1"):
        write_base(str(tmp_path / "base"), hidden=32, layers=1, heads=2, text_steps=-1)


def test_ship_makes_a_self_contained_checkpoint(tmp_path):
    from safetensors import safe_open

    from llava.model.builder import load_pretrained_model
    from llava.testbed.ship import TOWER_NAME, ship
    from llava.tools.make_tiny_checkpoint import make_checkpoint

    made = make_checkpoint(str(tmp_path / "trained"), kind="v1.5", safetensors=True, tower_in_weights=True)
    (tmp_path / "t.json").write_text('{"seed": 0, "wall_seconds": {"stage1": 3, "stage2": 5}}')
    out = str(tmp_path / "elsewhere" / "llava-testbed")
    ship(made["model_path"], made["vision_tower"], out, str(tmp_path / "t.json"))
    assert json.load(open(os.path.join(out, "config.json")))["mm_vision_tower"] == TOWER_NAME
    record = json.load(open(os.path.join(out, "testbed_training.json")))
    assert record["wall_seconds"]["stage2"] == 5 and record["machine"]["cores"] >= 1 and record["machine"]["torch"]
    assert "training_args.bin" not in os.listdir(out)
    for name in os.listdir(out):
        if name.endswith(".safetensors"):
            with safe_open(os.path.join(out, name), "pt") as f:
                assert not any(k.startswith("model.vision_tower.") for k in f.keys())
    # the tower is read from inside the checkpoint, wherever the folder is and whatever the working directory
    shutil.rmtree(made["vision_tower"])
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        _, model, _, _ = load_pretrained_model(out, None, "llava-testbed", device="cpu")
    finally:
        os.chdir(cwd)
    assert model.config.mm_vision_tower == os.path.join(out, TOWER_NAME)
    assert model.get_vision_tower().is_loaded


def test_report_tables_and_plot_per_regime(tmp_path):
    from llava.testbed.report import report

    res = tmp_path / "results"
    for regime, drop in (("simple", 10.0), ("complex", 30.0)):
        for method, k, loss in (("none", 576, 0.0), ("agile", 64, drop), ("fastervlm", 64, 2 * drop),
                                ("agile", 128, drop / 2)):
            for bench, full in (("pope", 90.0), ("counting", 80.0)):
                score.write_score(str(res / regime), bench, "tb", method, k, {"score": full - loss})
            answers = res / regime / "chair" / "answers" / "tb" / method / f"k{k}.jsonl"
            answers.parent.mkdir(parents=True, exist_ok=True)
            answers.write_text("".join(json.dumps({"question_id": i, "text": "x", "metadata": {"pruning": {
                "erank_all": 5.0 if regime == "simple" else 20.0, "attention_entropy": 3.0, "erank_kept": 4.0}}}) + "\n"
                for i in range(3)) if method != "none" else "")
    text = report(str(res), "tb", ["simple", "complex"])
    simple, complex_ = text.split("## complex")
    # complex, agile: K=128 mean of 75/90 and 65/80 = 82.3%, K=64 of 60/90 and 50/80 = 64.6%; fastervlm K=64 29.2%
    assert "| agile | **82.3** | **64.6** |" in complex_ and "| fastervlm | - | 29.2 |" in complex_
    assert "mean erank of the 576 visual tokens 5.0" in simple and "20.0" in complex_
    assert (res / "relative_accuracy.png").stat().st_size > 1000
    table = (res / "table.csv").read_text().splitlines()
    assert table[0].startswith("regime,method,K") and sum(line.startswith("complex,") for line in table) == 4
    judged = (res / "claims.md").read_text()
    assert judged.count("| claim | measured | verdict |") == 2 and "benchmarks but position" in judged


def describes(turn):
    """The turn asks "Describe the image." (with or without the image token before it)."""
    return turn["value"].replace("<image>\n", "") == gen.DESCRIBE


def test_qa_conversations_are_short_answers_about_the_picture(world):
    data = json.load(open(os.path.join(world, "train", "qa.json")))
    scenes = rows(os.path.join(world, "train", "tower.jsonl"))
    assert len(data) == len(scenes) == 12
    for sample, scene in zip(data, scenes):
        conv = sample["conversations"]
        assert sample["image"] == scene["image"] and conv[0]["value"].startswith("<image>\n")
        assert sum("<image>" in t["value"] for t in conv) == 1 and 2 <= len(conv) <= 10
        for q, a in zip(conv[::2], conv[1::2]):
            if describes(q):  # the caption names every object
                assert all(f"{o['colour']} {o['shape']}" in a["value"] for o in scene["objects"])
                continue
            assert q["from"] == "human" and q["value"].endswith(gen.SHORT) and len(a["value"].split()) == 1
            m = re.match(r"(?:<image>\n)?Is there an? (\w+ \w+) in the image\?", q["value"])
            if m:  # existence answers are true of the scene
                names = {f"{o['colour']} {o['shape']}" for o in scene["objects"]}
                assert a["value"] == ("Yes" if m.group(1) in names else "No")


def test_qa_conversations_carry_a_caption_turn_in_the_share_asked():
    """Stage 3 keeps some captions, so "Describe the image." still gets a description after it."""
    import random

    from llava.testbed.world import caption, sample_scene

    rng = random.Random(3)
    scenes = [sample_scene(rng, regime) for regime in ("simple", "complex") * 20]
    for share, expected in ((0.0, 0), (1.0, len(scenes))):
        convs = [gen.qa_conversation(s, random.Random(i), caption_share=share) for i, s in enumerate(scenes)]
        found = [(i, t) for i, c in enumerate(convs) for t in range(0, len(c), 2) if describes(c[t])]
        assert len(found) == expected
        assert all(convs[i][t + 1]["value"] == caption(scenes[i]) for i, t in found)
    convs = [gen.qa_conversation(s, random.Random(i)) for i, s in enumerate(scenes * 10)]
    share = sum(any(describes(t) for t in c) for c in convs) / len(convs)
    assert 0.05 < share < 0.15


def test_subset_keeps_the_questions_about_the_first_pictures(world, tmp_path):
    src = os.path.join(world, "eval", "complex")
    dst = gen.subset_eval(src, str(tmp_path / "sub"), 5)
    first = sorted(os.listdir(os.path.join(src, "images")))[:5]
    for rel in ("pope/llava_pope_test.jsonl", "vqa/questions.jsonl", "chair/questions.jsonl"):
        kept = rows(os.path.join(dst, rel))
        assert kept == [r for r in rows(os.path.join(src, rel)) if r["image"] in first] and kept
    for split in ("random", "adversarial"):  # labels stay paired with questions by position
        qs = [q for q in rows(os.path.join(dst, "pope", "llava_pope_test.jsonl")) if q["category"] == split]
        labels = rows(os.path.join(dst, "pope", "coco", f"coco_pope_{split}.json"))
        assert [q["question_id"] for q in qs] == [x["question_id"] for x in labels]
    truth = rows(os.path.join(dst, "vqa", "truth.jsonl"))
    assert [t["question_id"] for t in truth] == [q["question_id"] for q in rows(os.path.join(dst, "vqa", "questions.jsonl"))]
    assert len(json.load(open(os.path.join(dst, "chair", "objects.json")))) == 5
    assert sorted(os.listdir(os.path.join(dst, "images")))[:5] == first


def test_sweep_plans_each_methods_testbed_settings():
    from llava.testbed import sweep

    runs, skipped = sweep.configurations(["simple", "complex"], ["fastv", "sparsevlm", "agile"], [32, 64])
    assert runs[0] == ("simple", "none", 576) and ("complex", "none", 576) in runs
    assert ("simple", "sparsevlm", 64) in runs and ("simple", "sparsevlm", 32) not in runs  # no official table
    assert [(m, k) for m, k, _ in skipped] == [("sparsevlm", 32)]
    assert len(runs) == 2 * (1 + 2 + 1 + 2)
    pdrop = sweep.pruning_flags("pdrop", 144)
    assert pdrop[pdrop.index("--pdrop-ratio") + 1] == "0.5"  # last of its 2 stages keeps 576 * 0.5**2 = 144
    assert "--erank-avg" in sweep.pruning_flags("agile", 64, 11.5) and "--erank-avg" not in \
        sweep.pruning_flags("fastervlm", 64, 11.5)
    mix = sweep.pruning_flags("mix-inverse", 64, 11.5)  # a hybrid's complexity rule, run under its own name
    assert mix[:2] == ["--pruning-method", "mix"] and mix[mix.index("--complexity-rule") + 1] == "inverse"
    for bad, says in (("fastervlm-adaptive", "no --complexity-rule"), ("mix-sideways", "takes fixed"),
                      ("mixx", "unknown method")):
        with pytest.raises(ValueError, match=says):
            sweep.split_run(bad)


def test_sweep_asks_for_the_erank_calibration_only_when_a_method_reads_it(tmp_path, capsys):
    """An unpruned run of a checkpoint without erank_calibration.json (a stage-2 output, say) goes ahead; a
    method that reads --erank-avg stops at once with an error naming the file, before any model load."""
    from llava.testbed import sweep

    sets = tmp_path / "sets"
    (sets / "simple").mkdir(parents=True)
    model = tmp_path / "uncalibrated"
    model.mkdir()
    # shard 1/2 of a single configuration (the unpruned run) has nothing to run: main returns before loading
    assert sweep.main(["--model-path", str(model), "--sets", str(sets), "--out", str(tmp_path / "r"),
                       "--regimes", "simple", "--methods", "none", "--shard", "1/2"]) == 0
    assert sweep.main(["--model-path", str(model), "--sets", str(sets), "--out", str(tmp_path / "r"),
                       "--regimes", "simple", "--methods", "fastv", "agile"]) == 2
    assert "erank_calibration.json" in capsys.readouterr().err


def test_sweep_answers_as_the_eval_entry_points_run_alone(tmp_path):
    """One process and one model load for several configurations gives the answers each configuration's own
    `python -m llava.eval.model_vqa_loader` run gives (the model's pruning is switched, nothing carried over)."""
    from llava.eval import model_vqa_loader
    from llava.testbed import calibrated_erank_avg, sweep

    model = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "playground", "llava-testbed")
    world = gen.generate(str(tmp_path / "world"), seed=0, train_images=0, eval_images=2)
    sets, out = os.path.join(world, "eval"), str(tmp_path / "results")
    assert sweep.main(["--model-path", model, "--sets", sets, "--out", out, "--regimes", "complex",
                       "--methods", "fastv", "agile", "--ks", "32", "--batch-size", "4"]) == 0
    for bench in ("pope", "chair", "colour", "counting"):
        for method, k in (("none", 576), ("fastv", 32), ("agile", 32)):
            assert os.path.isfile(os.path.join(out, "complex", bench, "scores", "llava-testbed", method, f"k{k}.json"))
    data = os.path.join(sets, "complex")
    for method in ("none", "fastv", "agile"):
        alone = tmp_path / f"{method}.jsonl"
        assert model_vqa_loader.main(
            ["--model-path", model, "--device", "cpu", "--batch-size", "4", "--num-workers", "0", "--temperature", "0",
             "--max-new-tokens", "8", "--question-file", os.path.join(data, "vqa", "questions.jsonl"),
             "--image-folder", os.path.join(data, "images"), "--answers-file", str(alone)]
            + sweep.pruning_flags(method, 576 if method == "none" else 32, calibrated_erank_avg(model))) == 0
        swept = os.path.join(out, "complex", "vqa", "answers", "llava-testbed", method,
                             f"k{576 if method == 'none' else 32}.jsonl")
        drop = lambda r: {k: v for k, v in r.items() if k != "metadata"}  # noqa: E731 (times differ)
        assert [drop(r) for r in rows(alone)] == [drop(r) for r in rows(swept)]
        kept = [r["metadata"]["pruning"].get("kept_tokens") for r in rows(alone)]
        assert kept == [r["metadata"]["pruning"].get("kept_tokens") for r in rows(swept)]
        assert kept[0] == (576 if method == "none" else 32)  # fastv: tokens left after its cut in the LLM
    # a finished configuration is skipped on a second run
    assert sweep.run_one("complex", "fastv", 32, sets, out, model) is False


def ids_of(prompt, tokenizer):
    """The prompt's token ids without the image placeholder."""
    from llava.eval.common import prompt_ids

    return [i for i in prompt_ids(prompt, tokenizer).tolist() if i >= 0]


def test_class_readout_names_labels_the_states_carry_and_not_others():
    """The question-reach read-out: a ridge map names held-out labels written in the states, and does no
    better than about chance on states that do not carry them."""
    from llava.testbed import probe

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (300,), generator=g)
    fit = torch.arange(300) < 200
    noise = torch.randn(300, 32, generator=g, dtype=torch.float64)
    carried = noise.clone()
    carried[:, :6] += 5 * torch.nn.functional.one_hot(labels, 6)
    assert probe.class_readout(carried, labels, fit) > 0.95
    assert probe.class_readout(noise, labels, fit) < 0.4


def test_probe_splits_the_answer_positions_attention_over_the_prompts_parts(tmp_path):
    from llava.eval.common import full_prompt
    from llava.model.builder import load_pretrained_model
    from llava.testbed import probe

    model_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "playground", "llava-testbed")
    tokenizer, model, processor, _ = load_pretrained_model(model_path, None, "llava-testbed", device="cpu",
                                                           attn_implementation="eager")
    text = "How many stars are there in the image?" + gen.SHORT
    prompt = full_prompt("<image>\n" + text, "v1")
    parts = probe.spans(prompt, text, tokenizer, 576)
    ids = ids_of(prompt, tokenizer)
    a, b = parts["question"]
    assert tokenizer.decode(ids[a - 576:b - 576]).strip() == "How many stars are there in the image?"
    assert parts["image"][1] - parts["image"][0] == 576 and parts["instruction"][1] == len(ids) + 576
    world = gen.generate(str(tmp_path / "world"), seed=0, train_images=0, eval_images=2)
    items = probe.questions(os.path.join(world, "eval"), "simple", 1)
    shares = probe.attention_shares(model, tokenizer, processor, "v1", items)
    assert set(shares) == {kind for kind, _, _ in items} and "existence" in shares
    for per_layer in shares.values():
        assert len(per_layer) == model.config.num_hidden_layers
        assert all(abs(sum(row.values()) - 1) < 1e-4 for row in per_layer)  # every position counted once
    # the binding read-out: per layer, per head, shares of the answer position's attention on the image
    items = probe.binding_items(os.path.join(world, "eval", "complex"))[:2]
    per_layer = probe.binding(model, tokenizer, processor, "v1", items)
    assert len(per_layer) == model.config.num_hidden_layers
    for on_asked, on_others, selectivity in per_layer:
        heads = model.config.num_attention_heads
        assert on_asked.shape == on_others.shape == selectivity.shape == (heads,)
        assert bool(((on_asked >= 0) & (on_others >= 0) & (on_asked + on_others <= 1 + 1e-4)).all())
    with pytest.raises(ValueError, match="no colour question"):
        probe.binding(model, tokenizer, processor, "v1", [])
    # the question-reach read-out finds the asked shape's word in the prompt ...
    text = gen.colour_question("diamond") + gen.SHORT
    prompt = full_prompt("<image>\n" + text, "v1")
    a, b = probe.word_span(prompt, probe.asked_shape(text), tokenizer, 576)
    assert tokenizer.decode(ids_of(prompt, tokenizer)[a - 576:b - 576]).strip() == "diamond"
    with pytest.raises(ValueError, match="not a colour question"):
        probe.asked_shape("How many stars are there in the image?")
    # ... and the committed model carries it to the answer position: one layer-0 head looks at the word, and
    # at layer 1's input the answer position's state names the asked shape on held-out pictures
    items = probe.binding_items(os.path.join(gen.generate(str(tmp_path / "w20"), seed=5, train_images=0,
                                                          eval_images=20), "eval", "complex"))
    got = probe.question_reach(model, tokenizer, processor, "v1", items)
    assert len(got["word"]) == model.config.num_hidden_layers and len(got["readout"]) == len(got["word"]) + 1
    assert float(got["word"][0].max()) > 0.3 and got["held_out"] >= 10
    assert got["readout"][0] <= got["chance"] + 1e-9 < 0.5 < 0.8 <= got["readout"][1]
    # the grounding check asks the committed model its "Which half ...?" question; it answers in words
    items = probe.grounding_items(os.path.join(world, "eval", "complex"))
    given, right = probe.grounding(model, tokenizer, processor, "v1", items[:3])
    assert sum(given.values()) == 3 and 0 <= right <= 3 and all(isinstance(a, str) and a for a in given)


def test_grounding_items_ask_about_every_object_named_once_and_clear_of_the_middle(tmp_path):
    from llava.testbed import probe

    world = gen.generate(str(tmp_path / "world"), seed=0, train_images=0, eval_images=12)
    regime = os.path.join(world, "eval", "complex")
    items = probe.grounding_items(regime)
    scenes = {s["image"]: s for s in rows(os.path.join(regime, "scenes.jsonl"))}
    expected = 0
    for scene in scenes.values():
        names = [f"{o['colour']} {o['shape']}" for o in scene["objects"]]
        expected += sum(names.count(n) == 1 and abs((o["box"][0] + o["box"][2]) / 2 - SIZE / 2) >= 24
                        for n, o in zip(names, scene["objects"]))
    assert len(items) == expected > 12
    for image, question, answer in items:
        name = re.match(r"Which half of the image is the (\w+ \w+) in\?", question).group(1)
        (o,) = [o for o in scenes[os.path.basename(image)]["objects"] if f"{o['colour']} {o['shape']}" == name]
        assert answer == ("Left" if (o["box"][0] + o["box"][2]) / 2 < SIZE / 2 else "Right")
    assert len(probe.grounding_items(regime, limit=2)) < len(items)


def test_column_readout_finds_where_patches_are_only_when_their_tokens_say_it(tmp_path):
    """The probe's position read-out: tokens that carry their column are read back (R^2 ~1, every pair of
    objects ordered right); tokens that carry nothing about where they are read back at chance."""
    from llava.testbed import probe

    world = gen.generate(str(tmp_path / "world"), seed=0, train_images=0, eval_images=10)
    regime = os.path.join(world, "eval", "complex")
    column_one_hot = torch.eye(24).repeat(24, 1)  # patch p -> one-hot of p % 24, row-major like the tower

    def placed(images):
        return column_one_hot[None].repeat(len(images), 1, 1) + 0.01 * torch.randn(len(images), 576, 24)

    def unplaced(images):
        return torch.randn(len(images), 576, 24)

    torch.manual_seed(0)
    got = probe.column_readout(placed, regime)
    right, pairs = got["left_of"]
    assert got["patches"] > 0.99 and got["centres"] > 0.95 and pairs > 10 and right == pairs
    for kind in ("object", "background"):  # fitted on one kind of patch alone, scored on held-out ones
        r2, half, count = got[kind]
        assert r2 > 0.95 and half > 0.95 and count > 20
    got = probe.column_readout(unplaced, regime)
    right, pairs = got["left_of"]
    assert got["patches"] < 0.05 and got["centres"] < 0.3 and right < 0.75 * pairs
    for kind in ("object", "background"):
        r2, half, count = got[kind]
        assert r2 < 0.1 and 0.3 < half < 0.7
    with pytest.raises(ValueError, match="held out"):
        probe.column_readout(placed, regime, held_out=0.0)


def test_binding_items_ask_the_colour_of_every_shape_named_once_beside_other_objects(tmp_path):
    from llava.testbed import probe

    world = gen.generate(str(tmp_path / "world"), seed=0, train_images=0, eval_images=12)
    for regime in ("simple", "complex"):
        folder = os.path.join(world, "eval", regime)
        scenes = {s["image"]: s for s in rows(os.path.join(folder, "scenes.jsonl"))}
        items = probe.binding_items(folder)
        assert items
        for image, question, asked, others in items:
            shape = re.match(r"What colour is the (\w+)\?", question).group(1)
            objects = scenes[os.path.basename(image)]["objects"]
            (o,) = [o for o in objects if o["shape"] == shape]  # named once
            assert len(objects) >= 2 and asked.shape == others.shape == (576,)
            assert not bool((asked & others).any()) and asked.any() and others.any()
            assert bool((asked <= probe.object_patches({"objects": [o]}, 24, SIZE)).all())
        assert not any(len(scenes[os.path.basename(i)]["objects"]) < 2 for i, _, _, _ in items)


def test_object_shares_tell_a_look_at_the_asked_object_from_a_look_at_every_object():
    from llava.testbed import probe

    asked = torch.zeros(576, dtype=torch.bool)
    asked[:4] = True
    others = torch.zeros(576, dtype=torch.bool)
    others[100:112] = True
    row = torch.zeros(3, 576)
    row[0, :4] = 0.25  # head 0 looks at the asked object only
    row[1] = 1 / 576  # head 1 looks everywhere alike
    row[2, 100:112] = 1 / 12  # head 2 looks at the others only
    on_asked, on_others, selectivity = probe.object_shares(row, asked, others)
    assert torch.allclose(on_asked, torch.tensor([1.0, 4 / 576, 0.0]))
    assert torch.allclose(on_others, torch.tensor([0.0, 12 / 576, 1.0]))
    assert selectivity[0] > 20 and abs(float(selectivity[1])) < 1e-5 and selectivity[2] < -20


def test_object_patches_are_the_cells_whose_centre_is_inside_a_box():
    from llava.testbed import probe

    scene = {"objects": [{"box": [0, 0, 28, 14]}, {"box": [322, 322, 336, 336]}]}
    mask = probe.object_patches(scene, 24, 336).reshape(24, 24)  # cells of 14 px, centres at 7, 21, ...
    assert mask[0, 0] and mask[0, 1] and not mask[1, 0] and mask[23, 23]
    assert int(mask.sum()) == 3


def _fake_results(res, accuracy, chair_s, kept_erank):
    """A results folder as eval.sh writes it: POPE scores from accuracy(regime, method, K), CHAIR_s from
    chair_s(method), caption answers with erank stats (image erank 10 simple, 20 complex)."""
    for regime in ("simple", "complex"):
        runs = [("none", 576)] + [(m, k) for m in ("fastervlm", "divprune", "fps", "agile", "mix", "mix-adaptive",
                                                   "mix-inverse", "vispruner", "vispruner-adaptive",
                                                   "vispruner-inverse") for k in (64, 128)]
        for method, k in runs:
            score.write_score(str(res / regime), "pope", "tb", method, k, {"score": accuracy(regime, method, k)})
            score.write_score(str(res / regime), "chair", "tb", method, k, {"score": chair_s(method)})
            answers = res / regime / "chair" / "answers" / "tb" / method / f"k{k}.jsonl"
            answers.parent.mkdir(parents=True, exist_ok=True)
            image = 10.0 if regime == "simple" else 20.0
            answers.write_text(json.dumps({"question_id": 0, "text": "x", "metadata": {"pruning": {
                "erank_all": image, "attention_entropy": 4.0, "erank_kept": kept_erank(method) * image}}}) + "\n")


def test_claims_are_measured_and_judged_from_the_results(tmp_path):
    from llava.testbed import claims

    order = {"mix-adaptive": 3, "mix": 2, "mix-inverse": 1, "vispruner-adaptive": 3, "vispruner": 2,
             "vispruner-inverse": 1}

    def paper(regime, method, k):  # the paper's picture: attention wins simple, diversity complex, agile best
        if method == "none":
            return 80.0
        if method == "agile":
            return 79.0
        if method == "fastervlm":
            return 76.0 if regime == "simple" else 60.0
        if method in ("divprune", "fps"):
            return 60.0 if regime == "simple" else 76.0
        return 65.0 + order[method]

    _fake_results(tmp_path / "a", paper, lambda m: 30.0 if m in ("divprune", "fps") else 10.0,
                  lambda m: 0.4 if m in ("divprune", "fps") else 0.2)
    verdicts = [v for _, _, v in claims.evaluate(claims.load(str(tmp_path / "a"), "tb", ["simple", "complex"]))]
    assert verdicts == ["holds", "holds", "erank: holds; CHAIR: holds", "holds"]

    def reversed_(regime, method, k):  # attention wins everywhere, the rules in reverse order, agile last
        if method in order:
            return 65.0 + 4 - order[method]
        return {"none": 80.0, "agile": 50.0, "fastervlm": 76.0}.get(method, 60.0)

    _fake_results(tmp_path / "b", reversed_, lambda m: 10.0, lambda m: 0.9)
    rows = claims.evaluate(claims.load(str(tmp_path / "b"), "tb", ["simple", "complex"]))
    assert [v for _, _, v in rows] == ["does not hold", "does not hold", "erank: does not hold; CHAIR: does not hold",
                                      "does not hold"]
    assert "complex: attention 95.0, diversity 75.0" in rows[0][1] and "place 6 of 6" in rows[3][1]


def test_claims_judged_again_without_the_benchmarks_answered_at_chance():
    """A win that comes from a benchmark the unpruned model answers at chance (here agile doubling position's
    50%) is counted in the claims, and left out of the second judgement, which report() writes too."""
    from llava.eval.summarize import relative_average
    from llava.testbed import claims

    def row(method, k, pope, position):
        return {"method": method, "K": k, "pope": pope, "position": position, "chair": 0.0}

    rows = [row("none", 576, 80.0, 50.0), row("agile", 64, 60.0, 100.0), row("fastervlm", 64, 76.0, 50.0)]
    for r in rows:
        r["avg"], r["n"] = relative_average({b: r[b] for b in ("pope", "position", "chair")}, rows[0])
    data = {regime: claims.regime_data(rows, {}, 10.0) for regime in ("simple", "complex")}
    assert claims.evaluate(data)[3][2] == "holds"  # agile (75 + 200) / 2 = 137.5
    fair = claims.without(data, claims.AT_CHANCE)
    assert fair["simple"][0][("agile", 64)]["avg"] == 75.0 and fair["complex"][0][("fastervlm", 64)]["avg"] == 95.0
    assert claims.evaluate(fair)[3][2] == "does not hold" and "place 2 of 2" in claims.evaluate(fair)[3][1]
    assert data["simple"][0][("agile", 64)]["avg"] == 137.5  # the first judgement's data is left as it was
