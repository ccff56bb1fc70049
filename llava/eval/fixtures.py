"""Write tiny stand-ins for every benchmark, in the real file formats and at the paths the eval scripts read.

    python -m llava.eval.fixtures --out /tmp/eval   # then EVAL_DIR=/tmp/eval bash scripts/v1_5/eval/pope.sh

A handful of questions per benchmark about generated pictures (coloured shapes), with ground truth
where the benchmark has a local scorer, so every pipeline (generate, convert, score) runs end to end
on a generated tiny checkpoint without any download. The numbers mean nothing; the formats are real.
"""
import base64
import io
import json
import os

from PIL import Image, ImageDraw

from llava.utils import entry_parser

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 210, 40)}
SHAPES = ("circle", "square")
SHORT = "\nAnswer the question using a single word or phrase."
LETTER = "\nAnswer with the option's letter from the given choices directly."


def picture(i, size=(96, 72)):
    """A deterministic picture: shape i % 2 in colour i % 4 on a light background."""
    colour = list(COLOURS.values())[i % len(COLOURS)]
    img = Image.new("RGB", size, (235, 235, 230))
    box = (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4)
    (ImageDraw.Draw(img).ellipse if i % 2 == 0 else ImageDraw.Draw(img).rectangle)(box, fill=colour)
    return img


def colour_of(i):
    return list(COLOURS)[i % len(COLOURS)]


def save(img, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path)


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)


def coco_name(split, i):
    return f"COCO_{split}_{i + 1:012d}.jpg"


def pope(root, n=4):
    d = os.path.join(root, "pope")
    questions, qid = [], 0
    for split in ("adversarial", "popular", "random"):
        labels = []
        for i in range(n):
            image = coco_name("val2014", i)
            save(picture(i), os.path.join(d, "val2014", image))
            asked = SHAPES[i % 2] if qid % 2 == 0 else "dog"
            text = f"Is there a {asked} in the image?"
            questions.append({"question_id": qid, "image": image, "text": text + SHORT, "category": split})
            labels.append({"question_id": qid, "image": image, "text": text, "label": "yes" if asked != "dog" else "no"})
            qid += 1
        write_jsonl(os.path.join(d, "coco", f"coco_pope_{split}.json"), labels)
    write_jsonl(os.path.join(d, "llava_pope_test.jsonl"), questions)


def textvqa(root, n=4):
    d = os.path.join(root, "textvqa")
    questions, data = [], []
    for i in range(n):
        image_id = f"{i:04x}ab12cd34ef56"
        save(picture(i), os.path.join(d, "train_images", image_id + ".jpg"))
        q = "what colour is the shape?"
        questions.append({"question_id": image_id, "image": image_id + ".jpg",
                          "text": f"{q}\nReference OCR token: {colour_of(i).upper()}, shape{SHORT}"})
        data.append({"image_id": image_id, "question": q, "question_id": 34602 + i,
                     "answers": [colour_of(i)] * 7 + ["unanswerable"] * 3})
    write_jsonl(os.path.join(d, "llava_textvqa_val_v051_ocr.jsonl"), questions)
    write_json(os.path.join(d, "TextVQA_0.5.1_val.json"), {"dataset_type": "val", "dataset_name": "textvqa",
                                                           "dataset_version": "0.5.1", "data": data})


def gqa(root, n=4):
    d = os.path.join(root, "gqa")
    questions, truth = [], {}
    for i in range(n):
        image, qid = f"n{100000 + i}.jpg", str(20968379 + i)
        save(picture(i), os.path.join(d, "data", "images", image))
        questions.append({"question_id": qid, "image": image, "text": "What colour is the shape?" + SHORT})
        truth[qid] = {"imageId": image[:-4], "question": "What colour is the shape?", "answer": colour_of(i),
                      "fullAnswer": f"The shape is {colour_of(i)}.", "isBalanced": True}
    write_jsonl(os.path.join(d, "llava_gqa_testdev_balanced.jsonl"), questions)
    write_json(os.path.join(d, "data", "testdev_balanced_questions.json"), truth)


def vqav2(root, n=4):
    d = os.path.join(root, "vqav2")
    rows = []
    for i in range(n + 2):
        image = coco_name("test2015", i)
        save(picture(i), os.path.join(d, "test2015", image))
        rows.append({"question_id": 1000 * (i + 1), "image": image, "text": "What colour is it?" + SHORT,
                     "category": "default"})
    write_jsonl(os.path.join(d, "llava_vqav2_mscoco_test-dev2015.jsonl"), rows[:n])
    write_jsonl(os.path.join(d, "llava_vqav2_mscoco_test2015.jsonl"), rows)  # the full test list is larger


def vizwiz(root, n=4):
    d = os.path.join(root, "vizwiz")
    rows = []
    for i in range(n):
        image = f"VizWiz_test_{i:08d}.jpg"
        save(picture(i), os.path.join(d, "test", image))
        rows.append({"question_id": i, "image": image, "text": "What is this?\nWhen the provided information is "
                     "insufficient, respond with 'Unanswerable'." + SHORT})
    write_jsonl(os.path.join(d, "llava_test.jsonl"), rows)


def scienceqa(root, n=4):
    d = os.path.join(root, "scienceqa")
    items, problems = [], {}
    for i in range(n):
        pid = str(10 + i)
        choices = ["red", "blue", "green"]
        answer = i % 3
        has_image = i % 2 == 0
        question = f"Context: a picture.\nQuestion: Which colour is named {choices[answer]}?\nOptions: " + \
                   " ".join(f"({'ABC'[j]}) {c}" for j, c in enumerate(choices))
        item = {"id": pid, "conversations": [{"from": "human", "value": ("<image>\n" if has_image else "") + question},
                                             {"from": "gpt", "value": "ABC"[answer]}]}
        if has_image:
            item["image"] = f"{pid}/image.png"
            save(picture(i), os.path.join(d, "images", "test", pid, "image.png"))
        items.append(item)
        problems[pid] = {"question": f"Which colour is named {choices[answer]}?", "choices": choices,
                         "answer": answer, "hint": "a picture", "image": "image.png" if has_image else None,
                         "task": "closed choice", "grade": "grade2", "subject": "natural science",
                         "topic": "colours", "category": "colours", "skill": "colours", "lecture": "",
                         "solution": "", "split": "test"}
    write_json(os.path.join(d, "llava_test_CQM-A.json"), items)
    write_json(os.path.join(d, "problems.json"), problems)
    write_json(os.path.join(d, "pid_splits.json"), {"test": list(problems), "train": [], "val": [], "minival": []})


MME_TASKS = ("existence", "color", "code_reasoning")  # two perception subtasks and one cognition subtask


def mme(root):
    """MME: images + the per-subtask ground-truth txt files of the official release, and llava_mme.jsonl."""
    d = os.path.join(root, "MME")
    rel = os.path.join(d, "MME_Benchmark_release_version")
    rows = []
    for t, task in enumerate(MME_TASKS):
        for i in range(2):
            name = f"{i:04d}.png"
            save(picture(t + i), os.path.join(rel, task, name))
            lines = []
            for j, truth in enumerate(("Yes", "No")):
                colour = colour_of(t + i) if truth == "Yes" else "purple"
                q = f"Is the shape {colour}?"
                lines.append(f"{q} Please answer yes or no.\t{truth}")  # the release's wording
                rows.append({"question_id": f"{task}/{name}", "image": f"{task}/{name}", "text": q + SHORT,
                             "category": task})  # LLaVA's question file swaps the suffix
            with open(os.path.join(rel, task, name[:-4] + ".txt"), "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
    write_jsonl(os.path.join(d, "llava_mme.jsonl"), rows)


def mmbench(root, folder="mmbench", name="mmbench_dev_20230712.tsv", n=3, cn=False):
    import csv

    d = os.path.join(root, folder)
    os.makedirs(d, exist_ok=True)
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
              "l2-category", "comment", "split"]
    with open(os.path.join(d, name), "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(header)
        for i in range(n):
            buf = io.BytesIO()
            picture(i).save(buf, format="JPEG")
            options = ["red", "green", "blue", "yellow"][: 2 + i % 3]  # 2 to 4 options
            question = "形状是什么颜色？" if cn else "What colour is the shape?"
            w.writerow([i, question, "" if i % 2 else "Look closely.", *(options + [""] * (4 - len(options))),
                        "ABCD"[options.index(colour_of(i))] if colour_of(i) in options else "A", "colour",
                        base64.b64encode(buf.getvalue()).decode(), "fixture", "perception", "", "dev"])


def seed(root, n=4):
    d = os.path.join(root, "seed_bench")
    rows, questions = [], []
    for i in range(n):
        image = f"SEED-Bench-image/{i:05d}.jpg"
        save(picture(i), os.path.join(d, image))
        options = ["red", "green", "blue", "yellow"]
        qid = str(100 + i)
        rows.append({"question_id": qid, "image": image, "category": "Instance Attributes",
                     "text": "What colour is the shape?\n" + "\n".join(f"{'ABCD'[j]}. {o}" for j, o in enumerate(options))
                     + LETTER})
        questions.append({"question_id": qid, "question_type_id": 2, "data_type": "image",
                          "answer": "ABCD"[options.index(colour_of(i))], "question": "What colour is the shape?",
                          "choice_a": "red", "choice_b": "green", "choice_c": "blue", "choice_d": "yellow",
                          "data_id": image})
    write_jsonl(os.path.join(d, "llava-seed-bench.jsonl"), rows)
    write_json(os.path.join(d, "SEED-Bench.json"), {"questions": questions, "question_type": {
        "Scene Understanding": 1, "Instance Identity": 2, "Instance Attributes": 3}})


def open_ended(root, folder, qfile, n=3):
    d = os.path.join(root, folder)
    rows = []
    for i in range(n):
        image = f"{i:03d}.jpg"
        save(picture(i), os.path.join(d, "images", image))
        rows.append({"question_id": i, "image": image, "text": "Describe the shape and its colour.",
                     "category": "detail"})
    write_jsonl(os.path.join(d, qfile), rows)


CHAIR_CATEGORIES = [(1, "person"), (3, "car"), (18, "dog"), (44, "bottle"), (62, "chair")]


def chair(root, n=4):
    d = os.path.join(root, "chair")
    images, annotations = [], []
    for i in range(n):
        name = coco_name("val2014", i)
        save(picture(i), os.path.join(d, "val2014", name))
        images.append({"id": i + 1, "file_name": name, "width": 96, "height": 72})
        for j in range(1 + i % 2):
            cat = CHAIR_CATEGORIES[(i + j) % len(CHAIR_CATEGORIES)][0]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cat,
                                "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0})
    write_json(os.path.join(d, "annotations", "instances_val2014.json"), {
        "images": images, "annotations": annotations,
        "categories": [{"id": c, "name": name, "supercategory": "x"} for c, name in CHAIR_CATEGORIES]})


def make_all(root):
    """Every benchmark's fixture under root (the EVAL_DIR of the scripts)."""
    pope(root)
    textvqa(root)
    gqa(root)
    vqav2(root)
    vizwiz(root)
    scienceqa(root)
    mme(root)
    mmbench(root)
    mmbench(root, "mmbench_cn", "mmbench_dev_cn_20231003.tsv", cn=True)
    seed(root)
    open_ended(root, "llava-bench-in-the-wild", "questions.jsonl")
    open_ended(root, "mm-vet", "llava-mm-vet.jsonl")
    chair(root)
    return root


def build_parser():
    p = entry_parser("llava.eval.fixtures", __doc__)
    p.add_argument("--out", required=True, help="the EVAL_DIR to fill (a folder; created if missing)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    make_all(args.out)
    print(f"benchmark fixtures written under {args.out}")


if __name__ == "__main__":
    main()
