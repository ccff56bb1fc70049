"""Convert an MME answers JSONL to the official MME results layout (the eval.zip step). It writes one
`<subtask>.txt` per subtask, lines "image<TAB>question<TAB>gt<TAB>answer" in answer order, which the
official calculation.py and llava.eval.eval_mme read.

Upstream CLI, run inside playground/data/eval/MME: `python -m llava.eval.convert_answer_to_mme
--experiment CKPT` reads answers/CKPT.jsonl and MME_Benchmark_release_version/, writes
eval_tool/answers/CKPT/. `--answers-file`, `--data-path`, `--result-dir` override those three paths.

Ground truth comes from the benchmark folder: `<subtask>/questions_answers_YN/<name>.txt` (or
`<subtask>/<name>.txt`), lines "question<TAB>Yes|No". An answer's subtask is the first part of its
`question_id` ("artwork/images/10002.jpg"), its txt name the id's stem + ".txt"; the prompt is matched
with the LLaVA suffix "Answer the question using a single word or phrase." removed and
" Please answer yes or no." put back (also tried with two spaces, as some official files have).
Tabs and newlines inside an answer become spaces (upstream wrote them raw, which breaks the format).
"""
import os
from collections import OrderedDict

from llava.eval.scoring_io import ScoringInputError, field, read_jsonl, run_cli
from llava.utils import entry_parser

SHORT_ANSWER = "Answer the question using a single word or phrase."
YES_NO = " Please answer yes or no."


def load_mme_gt(data_path):
    """{(subtask, txt name, question): "Yes"/"No"} from the MME_Benchmark_release_version folder."""
    if not os.path.isdir(data_path):
        raise FileNotFoundError(f"MME benchmark folder not found: {data_path}")
    gt = {}
    for category in sorted(os.listdir(data_path)):
        cat_dir = os.path.join(data_path, category)
        if not os.path.isdir(cat_dir):
            continue
        qa_dir = os.path.join(cat_dir, "questions_answers_YN") if os.path.isdir(os.path.join(cat_dir, "images")) \
            else cat_dir
        if not os.path.isdir(qa_dir):
            raise FileNotFoundError(f"MME subtask {category}: no folder {qa_dir}")
        for name in sorted(os.listdir(qa_dir)):
            if not name.endswith(".txt"):
                continue
            path = os.path.join(qa_dir, name)
            with open(path, encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    parts = line.strip().split("\t")
                    if len(parts) != 2:
                        raise ScoringInputError(f"{path}:{number}: expected 'question<TAB>answer'")
                    gt[(category, name, parts[0])] = parts[1]
    return gt


def mme_key(question_id, prompt):
    """(subtask, txt name, prompt) as the answer's ground-truth key, before the suffix fallbacks."""
    question_id = str(question_id)
    category = question_id.split("/")[0]
    name = question_id.split("/")[-1].split(".")[0] + ".txt"
    if SHORT_ANSWER in prompt:
        prompt = prompt.replace(SHORT_ANSWER, "").strip()
    return category, name, prompt


def lookup_gt(gt, category, name, prompt):
    """(prompt as matched, gt answer) or None, trying the upstream suffix variants."""
    candidates = [prompt] if YES_NO.strip() in prompt else [prompt + YES_NO, prompt + " " + YES_NO]
    for cand in candidates:
        if (category, name, cand) in gt:
            return cand, gt[(category, name, cand)]
    return None


def answers_to_mme_rows(answers_file, gt):
    """{subtask: [(image txt name, question, gt, answer)]} in answer order; unmatched answer -> error."""
    rows = OrderedDict()
    for line, ans in enumerate(read_jsonl(answers_file, "MME answers file"), 1):
        category, name, prompt = mme_key(field(ans, "question_id", answers_file, line),
                                         field(ans, "prompt", answers_file, line))
        found = lookup_gt(gt, category, name, prompt)
        if found is None:
            raise ScoringInputError(f"{answers_file}:{line}: no MME ground truth for {category}/{name} "
                                    f"question {prompt!r}")
        text = " ".join(str(field(ans, "text", answers_file, line)).replace("\t", " ").splitlines())
        rows.setdefault(category, []).append((name, found[0], found[1], text))
    return rows


def write_mme_results(rows, result_dir):
    """Write one `<subtask>.txt` per subtask into result_dir; returns the paths written."""
    os.makedirs(result_dir, exist_ok=True)
    paths = []
    for category, items in rows.items():
        path = os.path.join(result_dir, f"{category}.txt")
        with open(path, "w", encoding="utf-8") as f:
            for item in items:
                f.write("\t".join(item) + "\n")
        paths.append(path)
    return paths


def build_parser():
    parser = entry_parser("llava.eval.convert_answer_to_mme", __doc__)
    parser.add_argument("--experiment", type=str, required=True,
                        help="the run's name (checkpoint): picks the answers file and the result folder")
    parser.add_argument("--answers-file", type=str, default=None,
                        help="answers JSONL (default: answers/<experiment>.jsonl)")
    parser.add_argument("--data-path", type=str, default="MME_Benchmark_release_version",
                        help="the MME benchmark folder (ground truth)")
    parser.add_argument("--result-dir", type=str, default=None,
                        help="folder for the <subtask>.txt files (default: eval_tool/answers/<experiment>)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    answers_file = args.answers_file or os.path.join("answers", f"{args.experiment}.jsonl")
    result_dir = args.result_dir or os.path.join("eval_tool", "answers", args.experiment)
    return run_cli(lambda: write_mme_results(answers_to_mme_rows(answers_file, load_mme_gt(args.data_path)),
                                             result_dir))


if __name__ == "__main__":
    main()
