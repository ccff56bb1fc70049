"""Score MME answers as the official eval_tool/calculation.py does.

    python -m llava.eval.eval_mme --results-dir eval_tool/answers/CKPT           # official layout
    python -m llava.eval.eval_mme --answers-file answers/CKPT.jsonl \\
        (--data-path MME_Benchmark_release_version | --question-file llava_mme.jsonl) [--score-file s.json]

Per subtask: acc = share of questions answered right; acc+ = share of images whose questions (two per
image) are all right; subtask score = 100*acc + 100*acc+. Perception = sum over the 10 perception
subtasks, cognition = sum over the 4 cognition subtasks (subtasks absent from the input are listed in
"missing_subtasks" and count 0). An answer is parsed as the official tool does: lower-cased, "yes"/"no"
as is, else "yes" if its first 4 characters contain "yes", else "no" if they contain "no", else "other"
(never right). Images are grouped by name within a subtask; the official tool pairs consecutive lines,
which is the same thing for its files (an image's questions are adjacent).

Ground truth for --answers-file: the benchmark folder (as convert_answer_to_mme) or, when the question
file's lines carry an "answer" field, the question file (subtask from its "category" field, else from
the question_id prefix; an answer is matched on question_id and prompt = the question's text, since both
questions of an image share the id). Headline "score": the perception total (the MME column of the LLaVA paper and
of AgilePruner's 13B/NeXT tables); `--headline total` makes it perception + cognition, which is what
the AgilePruner 7B table prints (1862 for the full model).
"""
import os
from collections import OrderedDict

from llava.eval.convert_answer_to_mme import answers_to_mme_rows, load_mme_gt
from llava.eval.scoring_io import ScoringInputError, field, qid_key, read_jsonl, run_cli, write_score_file
from llava.utils import entry_parser

EVAL_TYPES = {
    "perception": ["existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
                   "artwork", "OCR"],
    "cognition": ["commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"],
}


def parse_pred_ans(text):
    """'yes', 'no' or 'other' for a model answer (official rule, see module docstring)."""
    text = text.lower()
    if text in ("yes", "no"):
        return text
    prefix = text[:4]
    return "yes" if "yes" in prefix else "no" if "no" in prefix else "other"


def subtask_metrics(rows, where="MME"):
    """Metrics of one subtask from [(image, gt "yes"/"no" any case, model answer text)]."""
    images = OrderedDict()
    correct = other = 0
    for image, gt, text in rows:
        gt = gt.lower().strip()
        if gt not in ("yes", "no"):
            raise ScoringInputError(f"{where}: ground truth {gt!r} for {image} is not yes/no")
        pred = parse_pred_ans(text)
        other += pred == "other"
        correct += pred == gt
        images.setdefault(image, []).append(pred == gt)
    acc = correct / len(rows) if rows else 0.0
    acc_plus = sum(all(v) for v in images.values()) / len(images) if images else 0.0
    return {"questions": len(rows), "images": len(images), "acc": acc, "acc_plus": acc_plus, "other": other,
            "score": acc * 100 + acc_plus * 100}


def mme_scores_from_rows(rows_by_task, where="MME"):
    """{"perception", "cognition", "total", "subtasks": {name: metrics}, "missing_subtasks", "score"}."""
    out = {"subtasks": {}, "missing_subtasks": []}
    for kind, tasks in EVAL_TYPES.items():
        total = 0
        for task in tasks:
            if task not in rows_by_task:
                out["missing_subtasks"].append(task)
                continue
            m = subtask_metrics(rows_by_task[task], f"{where}/{task}")
            out["subtasks"][task] = m
            total += m["score"]
        out[kind] = total
    unknown = sorted(set(rows_by_task) - set(out["subtasks"]) - set(out["missing_subtasks"]))
    if unknown:
        raise ScoringInputError(f"{where}: unknown MME subtasks {unknown}")
    out["total"] = out["perception"] + out["cognition"]
    out["score"] = out["perception"]
    return out


def mme_scores_from_results_dir(results_dir):
    """Scores from the official layout: <results_dir>/<subtask>.txt, lines image\\tquestion\\tgt\\tanswer."""
    if not os.path.isdir(results_dir):
        raise FileNotFoundError(f"MME results dir not found: {results_dir}")
    rows = {}
    for task in EVAL_TYPES["perception"] + EVAL_TYPES["cognition"]:
        path = os.path.join(results_dir, task + ".txt")
        if not os.path.isfile(path):
            continue
        rows[task] = []
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                parts = line.rstrip("\n").split("\t", 3)
                if len(parts) != 4:
                    raise ScoringInputError(f"{path}:{number}: expected image<TAB>question<TAB>gt<TAB>answer")
                rows[task].append((parts[0], parts[2], parts[3]))
    return mme_scores_from_rows(rows, results_dir)


def mme_scores_from_answers(answers_file, data_path=None, question_file=None):
    """Scores of an answers JSONL, ground truth from the benchmark folder or the question file."""
    if data_path:
        rows = answers_to_mme_rows(answers_file, load_mme_gt(data_path))
        return mme_scores_from_rows({k: [(r[0], r[2], r[3]) for r in v] for k, v in rows.items()}, answers_file)
    if not question_file:
        raise ScoringInputError("MME: give --data-path (MME_Benchmark_release_version) or a --question-file "
                                "whose lines have an 'answer' field")
    # llava_mme.jsonl gives both questions of an image the image path as question_id: key on (id, text)
    questions = {}
    for line, q in enumerate(read_jsonl(question_file, "MME question file"), 1):
        qid = field(q, "question_id", question_file, line)
        category = q.get("category") or str(qid).split("/")[0]
        key = (qid_key(qid), field(q, "text", question_file, line))
        questions[key] = (category, str(q.get("image", qid)), field(q, "answer", question_file, line))
    rows = OrderedDict()
    for line, ans in enumerate(read_jsonl(answers_file, "MME answers file"), 1):
        key = (qid_key(field(ans, "question_id", answers_file, line)), field(ans, "prompt", answers_file, line))
        if key not in questions:
            raise ScoringInputError(f"{answers_file}:{line}: question {key[0]!r} with prompt {key[1][:60]!r} "
                                    f"is not in {question_file}")
        category, image, gt = questions[key]
        rows.setdefault(category, []).append((image, gt, field(ans, "text", answers_file, line)))
    return mme_scores_from_rows(rows, answers_file)


def print_scores(m):
    """Print per-kind totals and subtask scores (the official tool's layout)."""
    for kind, tasks in EVAL_TYPES.items():
        print(f"=========== {kind.capitalize()} ===========")
        print("total score:", m[kind], "\n")
        for task in tasks:
            if task in m["subtasks"]:
                print("\t", task, " score:", m["subtasks"][task]["score"])
        print()
    if m["missing_subtasks"]:
        print("missing subtasks (counted 0):", ", ".join(m["missing_subtasks"]))


def build_parser():
    parser = entry_parser("llava.eval.eval_mme", __doc__)
    parser.add_argument("--results-dir", "--results_dir", dest="results_dir", type=str, default=None,
                        help="the official results layout: a folder of <subtask>.txt files "
                             "(from convert_answer_to_mme); or give --answers-file")
    parser.add_argument("--answers-file", type=str, default=None,
                        help="answers JSONL (from model_vqa_loader); needs --data-path or --question-file")
    parser.add_argument("--data-path", type=str, default=None,
                        help="with --answers-file: the MME_Benchmark_release_version folder (ground truth)")
    parser.add_argument("--question-file", type=str, default=None,
                        help='with --answers-file: a question JSONL whose lines carry an "answer" (ground truth)')
    parser.add_argument("--score-file", type=str, default=None, help="also write the scores here (JSON)")
    parser.add_argument("--headline", choices=["perception", "total"], default="perception",
                        help="what the score file's 'score' is: perception (LLaVA; AgilePruner 13B/NeXT tables) "
                             "or total = perception + cognition (AgilePruner 7B table)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.results_dir is None) == (args.answers_file is None):
        parser.error("give exactly one of --results-dir and --answers-file")

    def body():
        if args.results_dir:
            m = mme_scores_from_results_dir(args.results_dir)
        else:
            m = mme_scores_from_answers(args.answers_file, args.data_path, args.question_file)
        m["score"] = m[args.headline]
        print_scores(m)
        write_score_file(m, args.score_file)
        return m

    return run_cli(body)


if __name__ == "__main__":
    main()
