"""Score TextVQA answers as upstream's eval_textvqa does (same command-line interface).

    python -m llava.eval.eval_textvqa --annotation-file TextVQA_0.5.1_val.json --result-file answers.jsonl \\
        [--result-dir DIR] [--score-file scores.json]

Each answer line is matched to its annotation by (image_id, lower-cased question): the LLaVA TextVQA
question file uses the image id as `question_id`, and the question is recovered from the answer's
`prompt` (formats below). Accuracy is the soft VQA accuracy of m4c_evaluator.TextVQAAccuracyEvaluator.
Headline "score": accuracy in % (as in the LLaVA and AgilePruner tables).
"""
import os
import re

from llava.eval.m4c_evaluator import TextVQAAccuracyEvaluator
from llava.eval.scoring_io import ScoringInputError, field, read_json, read_jsonl, run_cli, write_score_file
from llava.utils import entry_parser


def prompt_processor(prompt):
    """The lower-cased question inside an answer's prompt.

    Formats: "OCR tokens: ... Question: Q Short answer:"; three lines with a "Reference OCR token: ..."
    line (the question is line 1 if the prompt starts with that line, else line 0); two lines
    "Q\\n<instruction>". Anything else raises ValueError.
    """
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):
        match = re.search(r"Question: (.*?) Short answer:", prompt, re.DOTALL)
        if match is None:
            raise ValueError(f"OCR-token prompt without 'Question: ... Short answer:': {prompt[:80]!r}")
        question = match.group(1)
    elif "Reference OCR token: " in prompt and len(lines) == 3:
        question = lines[1] if prompt.startswith("Reference OCR token:") else lines[0]
    elif len(lines) == 2:
        question = lines[0]
    else:
        raise ValueError(f"cannot find the question in prompt {prompt[:80]!r}")
    return question.lower()


def textvqa_scores(annotation_file, result_file):
    """{"samples", "accuracy" (%), "score"} for one answers JSONL against TextVQA_0.5.1_val.json."""
    data = field(read_json(annotation_file, "TextVQA annotation file"), "data", annotation_file)
    annotations = {(str(a["image_id"]), a["question"].lower()): a for a in data}
    pred_list = []
    for line, result in enumerate(read_jsonl(result_file, "TextVQA result file"), 1):
        where = f"{result_file}: answer {line}"
        try:
            question = prompt_processor(field(result, "prompt", result_file, line))
        except ValueError as e:
            raise ScoringInputError(f"{where}: {e}") from None
        key = (str(field(result, "question_id", result_file, line)), question)
        if key not in annotations:
            raise ScoringInputError(f"{where}: no annotation for image {key[0]!r} with question {key[1]!r}")
        pred_list.append({"pred_answer": field(result, "text", result_file, line),
                          "gt_answers": annotations[key]["answers"]})
    accuracy = 100.0 * TextVQAAccuracyEvaluator().eval_pred_list(pred_list)
    return {"samples": len(pred_list), "accuracy": accuracy, "score": accuracy}


def eval_single(annotation_file, result_file):
    """Print "Samples / Accuracy" for one result file (upstream output) and return its metrics."""
    print(os.path.splitext(os.path.basename(result_file))[0])
    metrics = textvqa_scores(annotation_file, result_file)
    print("Samples: {}\nAccuracy: {:.2f}%\n".format(metrics["samples"], metrics["accuracy"]))
    return metrics


def build_parser():
    parser = entry_parser("llava.eval.eval_textvqa", __doc__)
    parser.add_argument("--annotation-file", type=str, required=True,
                        help="the TextVQA annotations JSON (TextVQA_0.5.1_val.json)")
    parser.add_argument("--result-file", type=str, help="answers JSONL to score (from model_vqa_loader)")
    parser.add_argument("--result-dir", type=str, help="score every *.jsonl answers file in this folder")
    parser.add_argument("--score-file", type=str, default=None,
                        help="write the metrics of --result-file (or of the last file in --result-dir) as JSON")
    return parser


def get_args(argv=None):
    return build_parser().parse_args(argv)


def main(argv=None):
    args = get_args(argv)
    if args.result_file is None and args.result_dir is None:
        raise SystemExit("error: give --result-file and/or --result-dir")

    def body():
        metrics = None
        if args.result_dir is not None:
            for name in sorted(os.listdir(args.result_dir)):
                if not name.endswith(".jsonl"):
                    print(f"Skipping {name}")
                    continue
                metrics = eval_single(args.annotation_file, os.path.join(args.result_dir, name))
        if args.result_file is not None:
            metrics = eval_single(args.annotation_file, args.result_file)
        write_score_file(metrics, args.score_file)
        return metrics

    return run_cli(body)


if __name__ == "__main__":
    main()
