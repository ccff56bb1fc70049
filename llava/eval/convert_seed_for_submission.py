"""Score SEED-Bench answers and write the upload file (upstream's CLI).

    python -m llava.eval.convert_seed_for_submission --annotation-file SEED-Bench.json \\
        --result-file merge.jsonl --result-upload-file upload.jsonl [--score-file scores.json]

(`python scripts/convert_seed_for_submission.py`, upstream's path, runs the same.)

SEED-Bench.json: {"question_type": {name: id}, "questions": [{"question_id", "question_type_id",
"data_type" ("image"/"video"), "answer" (letter)}]}. A prediction is right when the answer text equals
the letter exactly (upstream). Unanswered questions count as wrong. Prints the accuracy per question
type, in total, on image and on video questions; writes JSONL {"question_id", "prediction"} for every
question ("" for an unanswered one, with a warning; upstream crashed). Headline "score": the image
accuracy in % (SEED-I).
"""
import json
import os

from llava.eval.scoring_io import field, qid_key, read_json, read_jsonl, run_cli, write_score_file
from llava.utils import entry_parser


def _accuracy(questions, results, data_type=None):
    """(per type id {id: (correct, count)}, correct, count) over questions of data_type (None = all)."""
    per_type = {}
    for q in questions:
        if data_type is not None and q.get("data_type") != data_type:
            continue
        row = results.get(qid_key(q["question_id"]))
        ok = row is not None and row["text"] == q["answer"]
        c, n = per_type.get(q["question_type_id"], (0, 0))
        per_type[q["question_type_id"]] = (c + ok, n + 1)
    correct = sum(c for c, _ in per_type.values())
    count = sum(n for _, n in per_type.values())
    return per_type, correct, count


def seed_scores(annotation_file, result_file):
    """{"types": {type name: %}, "total", "image", "video" (% or None), "answered", "questions", "score"}."""
    return seed_eval(annotation_file, result_file)[0]


def seed_eval(annotation_file, result_file):
    """(metrics as seed_scores, the annotation's question list, {question id key: answer row})."""
    data = read_json(annotation_file, "SEED-Bench annotation file")
    questions = field(data, "questions", annotation_file)
    for i, q in enumerate(questions):
        for key in ("question_id", "question_type_id", "answer"):
            field(q, key, f"{annotation_file} questions[{i}]")
    id_to_name = {v: k for k, v in data.get("question_type", {}).items()}
    results = {}
    for line, row in enumerate(read_jsonl(result_file, "SEED result file"), 1):
        field(row, "text", result_file, line)
        results[qid_key(field(row, "question_id", result_file, line))] = row
    pct = (lambda c, n: 100.0 * c / n if n else None)
    per_type, correct, count = _accuracy(questions, results)
    metrics = {"types": {id_to_name.get(t, str(t)): pct(c, n) for t, (c, n) in sorted(per_type.items())},
               "total": pct(correct, count)}
    for kind in ("image", "video"):
        _, c, n = _accuracy(questions, results, kind)
        metrics[kind] = pct(c, n)
    metrics["questions"] = len(questions)
    metrics["answered"] = sum(1 for q in questions if qid_key(q["question_id"]) in results)
    metrics["score"] = metrics["image"]
    return metrics, questions, results


def build_parser():
    parser = entry_parser("llava.eval.convert_seed_for_submission", __doc__)
    parser.add_argument("--annotation-file", type=str, required=True,
                        help="the SEED-Bench questions JSON (SEED-Bench.json)")
    parser.add_argument("--result-file", type=str, required=True, help="answers JSONL (from model_vqa_loader)")
    parser.add_argument("--result-upload-file", type=str, required=True,
                        help='upload file to write: JSONL {"question_id", "prediction"}')
    parser.add_argument("--score-file", type=str, default=None, help="also write the scores here (JSON)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        m, questions, results = seed_eval(args.annotation_file, args.result_file)
        fmt = (lambda v: "n/a" if v is None else f"{v:.2f}%")
        for name, acc in m["types"].items():
            print(f"{name}: {fmt(acc)}")
        print(f"Total accuracy: {fmt(m['total'])}\nimage accuracy: {fmt(m['image'])}\n"
              f"video accuracy: {fmt(m['video'])}")
        if m["answered"] < m["questions"]:
            print(f"warning: {m['questions'] - m['answered']} of {m['questions']} questions have no answer "
                  "(counted wrong; empty prediction in the upload file)")
        os.makedirs(os.path.dirname(os.path.abspath(args.result_upload_file)), exist_ok=True)
        with open(args.result_upload_file, "w", encoding="utf-8") as f:
            for q in questions:
                row = results.get(qid_key(q["question_id"]))
                f.write(json.dumps({"question_id": q["question_id"], "prediction": row["text"] if row else ""}) + "\n")
        write_score_file(m, args.score_file)
        return m

    return run_cli(body)


if __name__ == "__main__":
    main()
