"""CHAIR metrics on hand-made captions and annotations (numbers counted by hand in the comments)."""
import json

import pytest

from llava.eval import chair
from llava.eval.scoring_io import ScoringInputError


@pytest.mark.parametrize("word, singular", [
    ("dogs", "dog"), ("horses", "horse"), ("vases", "vase"), ("glasses", "glass"), ("boxes", "box"),
    ("sandwiches", "sandwich"), ("toothbrushes", "toothbrush"), ("puppies", "puppy"), ("ties", "tie"),
    ("people", "person"), ("men", "man"), ("children", "child"), ("knives", "knife"), ("mice", "mouse"),
    ("buses", "bus"), ("bus", "bus"), ("glass", "glass"), ("tennis", "tennis"), ("scissors", "scissors"),
    ("skis", "skis"), ("tvs", "tv"), ("sheep", "sheep"), ("its", "its"), ("this", "this"), ("oranges", "orange"),
])
def test_singularize(word, singular):
    assert chair.singularize(word) == singular


def test_synonym_table_covers_the_80_coco_categories():
    assert len(chair.COCO_CATEGORIES) == 80
    for name in ["person", "sports ball", "dining table", "hair drier", "tv", "skis", "potted plant", "cell phone"]:
        assert chair.SYNONYMS[name] == name


@pytest.mark.parametrize("caption, categories", [
    ("Two men and a woman.", ["person", "person"]),
    ("A baby bird next to a baby.", ["bird", "person"]),             # "baby bird" is a bird, "baby" a person
    ("The toilet seat is up.", ["toilet"]),                           # not a chair
    ("A toilet with its seat up.", ["toilet"]),                       # "seat" dropped when "toilet" is there
    ("A seat by the window.", ["chair"]),
    ("Teddy bears and hot-dogs.", ["teddy bear", "hot dog"]),         # not bear / dog
    ("A passenger train near traffic lights.", ["train", "traffic light"]),
    ("Two motor bikes, a stove top oven and wine glasses.", ["motorcycle", "oven", "wine glass"]),
    ("People with cell phones at dining tables.", ["person", "cell phone", "dining table"]),
    ("A kitten on a sofa watching TV.", ["cat", "couch", "tv"]),
    ("Nothing here but sky.", []),
])
def test_caption_to_objects(caption, categories):
    assert chair.caption_to_objects(caption)[1] == categories


def test_image_key():
    assert chair.image_key(42) == chair.image_key("42") == chair.image_key("000042") == "42"
    assert chair.image_key("COCO_val2014_000000000042.jpg") == "42"
    assert chair.image_key("val2014") == "val2014" and chair.image_key("abc") == "abc"


CAPTIONS = [
    # person, frisbee, dog, dog, bench -> bench hallucinated (1 of 5 mentions); 14 words
    (1, "A man throws a frisbee to his dog. The dog jumps over a bench."),
    # cat, couch -> nothing hallucinated; 6 words
    (2, "A kitten sleeps on a sofa."),
    # car, fire hydrant, traffic light -> 2 hallucinated; 12 words
    (3, "A red car parked near a fire hydrant and two traffic lights."),
]
GT = {1: ["dog", "person", "frisbee"], 2: ["cat", "couch"], 3: ["car", "truck"]}


def check(m):
    assert m["chair_s"] == pytest.approx(100 * 2 / 3)          # captions 1 and 3
    assert m["chair_i"] == pytest.approx(100 * 3 / 10)         # 3 hallucinated of 10 mentions
    assert m["recall"] == pytest.approx(100 * 6 / 7)           # 3 + 2 + 1 found of 3 + 2 + 2
    assert m["len"] == pytest.approx((14 + 6 + 12) / 3)
    assert (m["captions"], m["mentions"], m["hallucinated_mentions"]) == (3, 10, 3)
    assert m["score"] == m["chair_s"]


def test_chair_scores_by_hand():
    m = chair.chair_scores(CAPTIONS, GT)
    check(m)
    assert m["per_caption"][0]["hallucinated"] == ["bench"] and m["per_caption"][0]["CHAIRi"] == 0.2
    assert m["per_caption"][2]["hallucinated"] == ["fire hydrant", "traffic light"]


def test_chair_errors():
    with pytest.raises(ScoringInputError, match="no ground-truth objects for image 9"):
        chair.chair_scores([(9, "a dog")], GT)
    with pytest.raises(ScoringInputError, match="unknown object name 'unicorn'"):
        chair.chair_scores([(1, "a dog")], {1: ["unicorn"]})


def write(tmp_path, name, obj, lines=False):
    path = tmp_path / name
    path.write_text("".join(json.dumps(o) + "\n" for o in obj) if lines else json.dumps(obj))
    return str(path)


def test_chair_cli_with_coco_instances(tmp_path):
    categories = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 8, "name": "truck"},
                  {"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}, {"id": 34, "name": "frisbee"},
                  {"id": 63, "name": "couch"}]
    anns = [(1, 18), (1, 18), (1, 1), (1, 34), (2, 17), (2, 63), (3, 3), (3, 8)]
    inst = write(tmp_path, "instances_val2014.json", {
        "images": [{"id": i} for i in (1, 2, 3, 4)], "categories": categories,
        "annotations": [{"id": k, "image_id": i, "category_id": c} for k, (i, c) in enumerate(anns)]})
    caps = write(tmp_path, "caps.jsonl", [{"question_id": "COCO_val2014_000000000001.jpg", "text": CAPTIONS[0][1]},
                                          {"image_id": 2, "text": CAPTIONS[1][1]},
                                          {"question_id": "000003", "text": CAPTIONS[2][1]}], lines=True)
    out, score = tmp_path / "details.json", tmp_path / "s.json"
    check(chair.main(["--cap-file", caps, "--annotation-file", inst, "--out", str(out), "--score-file", str(score)]))
    assert len(json.loads(out.read_text())["per_caption"]) == 3
    scores = json.loads(score.read_text())
    assert "per_caption" not in scores and scores["score"] == pytest.approx(200 / 3)
    # an image with no annotations has no objects: any mention is a hallucination
    caps4 = write(tmp_path, "caps4.jsonl", [{"image_id": 4, "text": "A dog and a man."}], lines=True)
    m = chair.chair_from_files(caps4, annotation_file=inst)
    assert (m["chair_s"], m["chair_i"], m["recall"]) == (100.0, 100.0, 0.0)


def test_chair_object_lists_union_and_reference_captions(tmp_path):
    lists = write(tmp_path, "objects.json", {str(k): v for k, v in GT.items()})
    caps = write(tmp_path, "caps.jsonl", [{"image_id": k, "text": t} for k, t in CAPTIONS], lines=True)
    check(chair.chair_from_files(caps, object_lists=lists))
    # reference captions add objects: the bench of image 1 is no longer hallucinated
    refs = write(tmp_path, "captions_val2014.json", {"annotations": [{"image_id": 1, "caption": "A dog by benches."}]})
    m = chair.chair_from_files(caps, object_lists=lists, coco_captions_file=refs)
    assert m["chair_s"] == pytest.approx(100 / 3) and m["chair_i"] == pytest.approx(100 * 2 / 10)
    assert m["recall"] == pytest.approx(100 * 7 / 8)  # image 1 now has 4 GT objects, all mentioned


def test_chair_file_errors(tmp_path, capsys):
    lists = write(tmp_path, "objects.json", {"1": ["dog"]})
    caps = write(tmp_path, "caps.jsonl", [{"image_id": 1, "text": "a dog"}, {"image_id": 2, "text": "x"}], lines=True)
    with pytest.raises(ScoringInputError, match=r"caps.jsonl:2: image 2 is not in the annotations"):
        chair.chair_from_files(caps, object_lists=lists)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image_id": 1, "text": "a dog"}\n{"image_id": 1\n')
    with pytest.raises(SystemExit) as e:
        chair.main(["--cap-file", str(bad), "--object-lists", lists])
    assert e.value.code == 1 and "bad.jsonl:2: malformed JSON line" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        chair.main(["--cap-file", caps])  # neither annotation source
    assert "needs --annotation-file and/or --object-lists" in capsys.readouterr().err
