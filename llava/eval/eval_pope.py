"""Score POPE answers as upstream's eval_pope does (same command-line interface).

    python -m llava.eval.eval_pope --annotation-dir pope/coco --question-file llava_pope_test.jsonl \\
        --result-file answers.jsonl [--score-file scores.json]

For every `coco_pope_<split>.json` in the annotation dir (JSON lines with `label` "yes"/"no"; other
files are skipped), the answers whose question has `category == <split>` are paired with the labels **by position** (answers
in question-file order, as upstream); a count mismatch is an error naming both files. An answer reads
as "no" when its first sentence (text before the first '.'), with commas removed and split on single
spaces, contains the word "No", "no" or "not"; otherwise "yes". Per split: TP, FP, TN, FN, accuracy,
precision, recall, F1, yes-ratio (precision/recall/F1 are 0 when their denominator is 0, where upstream
divides by zero). Headline "score": the mean F1 over the splits present, x100 (LLaVA's POPE column).
"""
import os

from llava.eval.scoring_io import ScoringInputError, field, qid_key, read_jsonl, run_cli, write_score_file
from llava.utils import entry_parser


def answer_to_label(text):
    """'yes' or 'no' for a free-form answer, by upstream's rule (see module docstring)."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def pope_metrics(pred_labels, gt_labels):
    """Metrics dict for equal-length lists of 'yes'/'no' predictions and labels (label 'no' = negative)."""
    preds = [0 if p == "no" else 1 for p in pred_labels]
    labels = [0 if g == "no" else 1 for g in gt_labels]
    tp = sum(1 for p, g in zip(preds, labels) if p == 1 and g == 1)
    fp = sum(1 for p, g in zip(preds, labels) if p == 1 and g == 0)
    tn = sum(1 for p, g in zip(preds, labels) if p == 0 and g == 0)
    fn = sum(1 for p, g in zip(preds, labels) if p == 0 and g == 1)
    n = len(preds)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"samples": n, "TP": tp, "FP": fp, "TN": tn, "FN": fn, "accuracy": (tp + tn) / n if n else 0.0,
            "precision": precision, "recall": recall, "f1": f1, "yes_ratio": preds.count(1) / n if n else 0.0}


def pope_scores(annotation_dir, question_file, result_file, verbose=False):
    """{"splits": {split: metrics}, "f1_mean" (%), "accuracy_mean" (%), "score" (= f1_mean)}."""
    if not os.path.isdir(annotation_dir):
        raise FileNotFoundError(f"POPE annotation dir not found: {annotation_dir}")
    questions = {}
    for line, q in enumerate(read_jsonl(question_file, "POPE question file"), 1):
        questions[qid_key(field(q, "question_id", question_file, line))] = field(q, "category", question_file, line)
    answers = read_jsonl(result_file, "POPE result file")
    categories = []
    for line, a in enumerate(answers, 1):
        qid = qid_key(field(a, "question_id", result_file, line))
        if qid not in questions:
            raise ScoringInputError(f"{result_file}:{line}: question_id {qid!r} is not in {question_file}")
        field(a, "text", result_file, line)
        categories.append(questions[qid])
    splits = {}
    for name in sorted(os.listdir(annotation_dir)):
        if not (name.startswith("coco_pope_") and name.endswith(".json")):
            if verbose:
                print(f"Skipping {name} (not coco_pope_<split>.json)")
            continue
        split = name[len("coco_pope_"):-len(".json")]
        label_file = os.path.join(annotation_dir, name)
        labels = [field(x, "label", label_file, i) for i, x in enumerate(read_jsonl(label_file, "POPE label file"), 1)]
        cur = [a["text"] for a, c in zip(answers, categories) if c == split]
        if len(cur) != len(labels):
            raise ScoringInputError(
                f"{result_file} has {len(cur)} answers for split '{split}' but {label_file} has {len(labels)} "
                "labels; answers are paired with labels by position, so the run must cover the whole split")
        splits[split] = pope_metrics([answer_to_label(t) for t in cur], labels)
        if verbose:
            m = splits[split]
            print(f"Category: {split}, # samples: {len(cur)}")
            print("TP\tFP\tTN\tFN\t\n{}\t{}\t{}\t{}".format(m["TP"], m["FP"], m["TN"], m["FN"]))
            for key, title in [("accuracy", "Accuracy"), ("precision", "Precision"), ("recall", "Recall"),
                               ("f1", "F1 score"), ("yes_ratio", "Yes ratio")]:
                print(f"{title}: {m[key]}")
            print("%.3f, %.3f, %.3f, %.3f, %.3f" % (m["f1"], m["accuracy"], m["precision"], m["recall"],
                                                    m["yes_ratio"]))
            print("====================================")
    if not splits:
        raise ScoringInputError(f"{annotation_dir}: no coco_pope_<split>.json files")
    f1_mean = 100.0 * sum(m["f1"] for m in splits.values()) / len(splits)
    acc_mean = 100.0 * sum(m["accuracy"] for m in splits.values()) / len(splits)
    return {"splits": splits, "f1_mean": f1_mean, "accuracy_mean": acc_mean, "score": f1_mean}


def build_parser():
    parser = entry_parser("llava.eval.eval_pope", __doc__)
    parser.add_argument("--annotation-dir", type=str, required=True,
                        help='folder of coco_pope_<split>.json label files (JSON lines with "label" yes/no)')
    parser.add_argument("--question-file", type=str, required=True,
                        help='the question JSONL the answers were generated from (its "category" is the split)')
    parser.add_argument("--result-file", type=str, required=True, help="answers JSONL, in question-file order")
    parser.add_argument("--score-file", type=str, default=None, help="also write the scores here (JSON)")
    return parser


def get_args(argv=None):
    return build_parser().parse_args(argv)


def main(argv=None):
    args = get_args(argv)

    def body():
        metrics = pope_scores(args.annotation_dir, args.question_file, args.result_file, verbose=True)
        print("Mean F1 over {} splits: {:.2f}".format(len(metrics["splits"]), metrics["f1_mean"]))
        write_score_file(metrics, args.score_file)
        return metrics

    return run_cli(body)


if __name__ == "__main__":
    main()
