"""Score answers on the testbed's eval sets: accuracy per question type, and CHAIR on shape captions.

    python -m llava.testbed.score vqa --truth eval/simple/vqa/truth.jsonl --result-file answers.jsonl \
        [--score-dir eval/simple --ckpt C --pruning-method M --visual-token-num K]
    python -m llava.testbed.score chair --objects eval/simple/chair/objects.json --cap-file captions.jsonl [...]

Answers are compared after the standard VQA normalisation (llava.eval.m4c_evaluator: case, punctuation,
articles, number words -> digits), so "Yes.", "yes" and "Two" vs "2" count as they should. With
--score-dir, each question type's accuracy is written as a benchmark score file
`<score-dir>/<type>/scores/<ckpt>/<method>/k<K>.json` ({"score": accuracy %}), which
`python -m llava.eval.summarize --eval-dir <score-dir>` turns into a table (one column per type).
CHAIR uses llava.eval.chair's metrics with the testbed's vocabulary: an object is a "colour shape"
phrase ("red circle", "blue squares").
"""
import json
import os
import re
import sys
from collections import defaultdict

from llava.eval.m4c_evaluator import EvalAIAnswerProcessor
from llava.eval.scoring_io import read_jsonl
from llava.testbed.world import COLOURS, NUMBERS, SHAPES, WORDS, plural
from llava.utils import entry_parser

_normalise = EvalAIAnswerProcessor()
_SHAPE_WORDS = {**{s: s for s in SHAPES}, **{plural(s): s for s in SHAPES}}
_MENTION = re.compile(r"\b(" + "|".join(COLOURS) + r")\s+(" + "|".join(sorted(_SHAPE_WORDS, key=len, reverse=True))
                      + r")\b")


def normalise(text):
    """The answer as compared: first line, VQA-normalised."""
    return _normalise(text.strip().split("\n")[0])


# what each question type of the world answers with (answers of the truth file are added to these)
ANSWER_KINDS = {"colour": [normalise(c) for c in COLOURS], "counting": [str(n) for n in range(0, 21)],
                "position": ["yes", "no"], "reading": [normalise(w) for w in WORDS + NUMBERS]}


def vqa_accuracy(truth, answers):
    """{type: accuracy %, "all": ..., "counts": {type: n}, "type_match": {type: %}} for truth rows
    {question_id, type, answer} and answer rows {question_id, text}. type_match: the share of answers that
    are of the kind the question asks for (one of the answers that question type has in the truth file: a
    number for "How many", a colour for "What colour"; ANSWER_KINDS), right or wrong. A question without an answer is an
    error (run the eval to the end)."""
    by_id = {a["question_id"]: a["text"] for a in answers}
    kinds = defaultdict(set, {k: set(v) for k, v in ANSWER_KINDS.items()})
    for t in truth:
        kinds[t["type"]].add(normalise(t["answer"]))
    right, total, typed = defaultdict(int), defaultdict(int), defaultdict(int)
    for t in truth:
        if t["question_id"] not in by_id:
            raise ValueError(f"question {t['question_id']} has no answer")
        answer = normalise(by_id[t["question_id"]])
        ok = answer == normalise(t["answer"])
        for key in (t["type"], "all"):
            right[key] += ok
            typed[key] += answer in kinds[t["type"]]
            total[key] += 1
    return {**{k: 100.0 * right[k] / total[k] for k in total}, "counts": dict(total),
            "type_match": {k: 100.0 * typed[k] / total[k] for k in total}}


def shape_mentions(caption):
    """(mentions, canonical objects) in the testbed vocabulary: "red circles" -> "red circle"."""
    found = [(m.group(0), f"{m.group(1)} {_SHAPE_WORDS[m.group(2)]}") for m in _MENTION.finditer(caption.lower())]
    return [f for f, _ in found], [c for _, c in found]


def chair(objects, captions):
    """CHAIR metrics (llava.eval.chair.chair_scores) of caption rows {question_id or image_id, text} against
    {image_id: [object names]}."""
    from llava.eval.chair import chair_scores

    pairs = [(c.get("image_id", c["question_id"]), c["text"]) for c in captions]
    return chair_scores(pairs, objects, extract=shape_mentions)


def write_score(score_dir, bench, ckpt, method, k, payload):
    path = os.path.join(score_dir, bench, "scores", ckpt, method, f"k{k}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1)
    return path


def build_parser():
    p = entry_parser("llava.testbed.score", __doc__)
    p.add_argument("what", choices=["vqa", "chair"],
                   help="vqa: accuracy per question type; chair: CHAIR on the captions")
    p.add_argument("--truth", help="vqa: the eval set's truth.jsonl")
    p.add_argument("--result-file", "--cap-file", dest="result_file", required=True,
                   help="the answers (vqa) or captions (chair) JSONL")
    p.add_argument("--objects", help="chair: the eval set's objects.json")
    p.add_argument("--score-dir", help="write score files under this eval dir, one per benchmark (vqa: per question "
                                       "type): <score-dir>/<bench>/scores/<ckpt>/<method>/k<K>.json")
    p.add_argument("--ckpt", default="llava-testbed", help="checkpoint name in the score file paths")
    p.add_argument("--pruning-method", "--method", dest="method", default="none",
                   help="pruning method in the score file paths")
    p.add_argument("--visual-token-num", "--k", dest="k", metavar="K", type=int, default=576,
                   help="K (visual tokens kept) in the score file paths")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        answers = read_jsonl(args.result_file)
        if args.what == "vqa":
            if not args.truth:
                raise ValueError("vqa needs --truth")
            scores = vqa_accuracy(read_jsonl(args.truth), answers)
            print(" ".join(f"{k}: {v:.1f}%" for k, v in scores.items() if k not in ("counts", "type_match")))
            print("answers of the kind asked: " + " ".join(f"{k}: {v:.1f}%" for k, v in scores["type_match"].items()))
            if args.score_dir:
                for kind in scores["counts"]:
                    if kind != "all":
                        write_score(args.score_dir, kind, args.ckpt, args.method, args.k,
                                    {"score": scores[kind], "questions": scores["counts"][kind],
                                     "type_match": scores["type_match"][kind]})
        else:
            if not args.objects:
                raise ValueError("chair needs --objects")
            with open(args.objects, encoding="utf-8") as f:
                scores = chair(json.load(f), answers)
            print(f"CHAIR_s: {scores['chair_s']:.1f}  CHAIR_i: {scores['chair_i']:.1f}  "
                  f"recall: {scores['recall']:.1f}  len: {scores['len']:.1f}")
            if args.score_dir:
                write_score(args.score_dir, "chair", args.ckpt, args.method, args.k,
                            {k: v for k, v in scores.items() if k != "per_caption"})
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
