"""Score GQA predictions on testdev-balanced as the official eval.py does (exact string match).

    python -m llava.eval.eval_gqa --predictions testdev_balanced_predictions.json \\
        --questions testdev_balanced_questions.json [--score-file scores.json]

Predictions: the JSON list [{"questionId", "prediction"}] written by convert_gqa_for_eval. Questions:
the official {qid: {"answer", "isBalanced", "types": {"structural"}, ...}}. Accuracy is the fraction of
balanced questions (all of testdev-balanced) whose prediction equals the answer; a missing prediction is an
error, as in the official script (`--allow-missing` scores only the answered questions, for partial runs;
the result then says how many were missing). Also reported, as the official script does: accuracy on
"binary" (structural type other than "query") and "open" ("query") questions.
Headline "score": accuracy in %.
"""
from llava.eval.scoring_io import ScoringInputError, field, qid_key, read_json, run_cli, write_score_file
from llava.utils import entry_parser


def gqa_scores(predictions_file, questions_file, allow_missing=False):
    """{"accuracy" (%), "binary", "open" (% or None), "total", "correct", "missing", "score"}."""
    raw = read_json(predictions_file, "GQA predictions file")
    if not isinstance(raw, list):
        raise ScoringInputError(f"{predictions_file}: expected a JSON list of {{questionId, prediction}}")
    predictions = {qid_key(field(p, "questionId", predictions_file)): field(p, "prediction", predictions_file)
                   for p in raw}
    questions = read_json(questions_file, "GQA questions file")
    scores = {"all": [], "binary": [], "open": []}
    missing = []
    for qid, question in questions.items():
        if not question.get("isBalanced", True):
            continue
        if qid_key(qid) not in predictions:
            missing.append(qid)
            continue
        correct = predictions[qid_key(qid)] == field(question, "answer", questions_file)
        structural = question.get("types", {}).get("structural")
        scores["all"].append(correct)
        if structural is not None:
            scores["open" if structural == "query" else "binary"].append(correct)
    if missing and not allow_missing:
        raise ScoringInputError(f"{predictions_file}: no prediction for {len(missing)} of the balanced questions "
                                f"in {questions_file} (e.g. {missing[0]!r}); use --allow-missing for a partial run")

    def pct(xs):
        return 100.0 * sum(xs) / len(xs) if xs else None

    accuracy = pct(scores["all"]) or 0.0
    return {"total": len(scores["all"]), "correct": sum(scores["all"]), "missing": len(missing),
            "accuracy": accuracy, "binary": pct(scores["binary"]), "open": pct(scores["open"]), "score": accuracy}


def build_parser():
    parser = entry_parser("llava.eval.eval_gqa", __doc__)
    parser.add_argument("--predictions", type=str, required=True,
                        help='predictions JSON: a list of {"questionId", "prediction"} (from convert_gqa_for_eval)')
    parser.add_argument("--questions", type=str, required=True,
                        help="the official questions JSON (testdev_balanced_questions.json)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="score only the answered questions (partial runs) instead of failing on a missing one")
    parser.add_argument("--score-file", type=str, default=None, help="also write the scores here (JSON)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        m = gqa_scores(args.predictions, args.questions, args.allow_missing)
        print(f"Questions: {m['total']} (missing {m['missing']})\nAccuracy: {m['accuracy']:.2f}%")
        for kind in ("binary", "open"):
            if m[kind] is not None:
                print(f"{kind}: {m[kind]:.2f}%")
        write_score_file(m, args.score_file)
        return m

    return run_cli(body)


if __name__ == "__main__":
    main()
