"""Score ScienceQA answers as upstream's eval_science_qa does (same command-line interface).

    python -m llava.eval.eval_science_qa --base-dir scienceqa --result-file answers.jsonl \\
        --output-file X_output.jsonl --output-result X_result.json [--split test] [--score-file scores.json]

Reads `<base-dir>/pid_splits.json` (split -> problem ids) and `<base-dir>/problems.json` (id ->
{"choices", "answer" (index), "image", ...}). Each answer's text is parsed to a letter: the text itself
if it is one of the options; else "X. ..." ; else the single match of "The answer is X." ; else FAILED (a
missing answer is FAILED too). A problem counts as an image question when its answer's prompt contains
"<image>" (upstream's rule); for a problem with no answer, whether problems.json gives it an image
(upstream counted those as text-only, which inflated IMG-Accuracy on partial runs).
Outputs as upstream: the analysis {"correct": [...], "incorrect": [...]} and
{"acc", "correct", "count", "results": {pid: choice index or -1}, "outputs": {pid: text}}.
Headline "score": IMG-Accuracy in % (the SQA-IMG column of the LLaVA and AgilePruner tables).
"""
import os
import re

from llava.eval.scoring_io import (ScoringInputError, field, qid_key, read_json, read_jsonl, run_cli, write_json,
                                   write_score_file)
from llava.utils import entry_parser

OPTIONS = ["A", "B", "C", "D", "E"]
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def parse_answer(text, options=OPTIONS):
    """The option letter an answer text names, or "FAILED"."""
    if text in options:
        return text
    if len(text) >= 3 and text[0] in options and text[1:3] == ". ":
        return text[0]
    found = _ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 else "FAILED"


def get_pred_idx(prediction, choices, options=OPTIONS):
    """Index of the predicted letter among the problem's choices, or -1."""
    return options.index(prediction) if prediction in options[:len(choices)] else -1


def science_qa_scores(base_dir, result_file, split="test", options=OPTIONS):
    """{"total", "correct", "accuracy" (%), "img_total", "img_correct", "img_accuracy" (%), "missing", "score"}."""
    return science_qa_eval(base_dir, result_file, split, options)[0]


def science_qa_eval(base_dir, result_file, split="test", options=OPTIONS):
    """(metrics as science_qa_scores, upstream's analysis dict, upstream's sqa_results dict)."""
    splits = read_json(os.path.join(base_dir, "pid_splits.json"), "ScienceQA pid_splits.json")
    problems_path = os.path.join(base_dir, "problems.json")
    problems = read_json(problems_path, "ScienceQA problems.json")
    if split not in splits:
        raise ScoringInputError(f"{base_dir}/pid_splits.json has no split {split!r} (has {sorted(splits)})")
    predictions = {}
    for line, pred in enumerate(read_jsonl(result_file, "ScienceQA result file"), 1):
        field(pred, "text", result_file, line)
        predictions[qid_key(field(pred, "question_id", result_file, line))] = pred
    analysis = {"correct": [], "incorrect": []}
    sqa = {"acc": None, "correct": None, "count": None, "results": {}, "outputs": {}}
    for pid in splits[split]:
        pid = qid_key(pid)
        if pid not in problems:
            raise ScoringInputError(f"{problems_path}: no problem {pid!r} (listed in pid_splits.json[{split!r}])")
        prob = problems[pid]
        pred = predictions.get(pid)
        if pred is None:
            text, prompt, multimodal = "FAILED", "Unknown", bool(prob.get("image"))
        else:
            text, prompt = pred["text"], pred.get("prompt", "")
            multimodal = "<image>" in prompt
        answer = parse_answer(text, options)
        pred_idx = get_pred_idx(answer, prob["choices"], options)
        entry = {"question_id": pid, "parsed_ans": answer, "ground_truth": options[prob["answer"]],
                 "question": prompt, "pred": text, "is_multimodal": multimodal}
        sqa["results"][pid] = pred_idx
        sqa["outputs"][pid] = text
        analysis["correct" if pred_idx == prob["answer"] else "incorrect"].append(entry)
    correct, total = len(analysis["correct"]), len(analysis["correct"]) + len(analysis["incorrect"])
    img_correct = sum(1 for x in analysis["correct"] if x["is_multimodal"])
    img_total = img_correct + sum(1 for x in analysis["incorrect"] if x["is_multimodal"])
    accuracy = 100.0 * correct / total if total else 0.0
    img_accuracy = 100.0 * img_correct / img_total if img_total else 0.0
    sqa.update(acc=accuracy, correct=correct, count=total)
    missing = sum(1 for pid in splits[split] if qid_key(pid) not in predictions)
    metrics = {"total": total, "correct": correct, "accuracy": accuracy, "img_total": img_total,
               "img_correct": img_correct, "img_accuracy": img_accuracy, "missing": missing, "score": img_accuracy}
    return metrics, analysis, sqa


def build_parser():
    parser = entry_parser("llava.eval.eval_science_qa", __doc__)
    parser.add_argument("--base-dir", type=str, required=True,
                        help="the ScienceQA data folder, holding pid_splits.json and problems.json")
    parser.add_argument("--result-file", type=str, required=True, help="answers JSONL (from model_vqa_science)")
    parser.add_argument("--output-file", type=str, default=None,
                        help='write the per-question analysis here (JSON: {"correct": [...], "incorrect": [...]})')
    parser.add_argument("--output-result", type=str, default=None,
                        help='write upstream\'s result summary here (JSON: {"acc", "correct", "count", "results", '
                             '"outputs"})')
    parser.add_argument("--split", type=str, default="test", help="the split of pid_splits.json to score")
    parser.add_argument("--options", type=list, default=OPTIONS,
                        help="the answer letters, written as one string (ABCDE)")
    parser.add_argument("--score-file", type=str, default=None, help="also write the scores here (JSON)")
    return parser


def get_args(argv=None):
    return build_parser().parse_args(argv)


def main(argv=None):
    args = get_args(argv)

    def body():
        metrics, analysis, sqa = science_qa_eval(args.base_dir, args.result_file, args.split, args.options)
        print(f"Total: {metrics['total']}, Correct: {metrics['correct']}, Accuracy: {metrics['accuracy']:.2f}%, "
              f"IMG-Accuracy: {metrics['img_accuracy']:.2f}%")
        if args.output_file:
            write_json(analysis, args.output_file, indent=2)
        if args.output_result:
            write_json(sqa, args.output_result)
        write_score_file(metrics, args.score_file)
        return metrics

    return run_cli(body)


if __name__ == "__main__":
    main()
