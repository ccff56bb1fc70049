"""Scorers and converters of the eval suite, on small hand-made fixtures in the real file formats.

Every expected number below is worked out by hand from the official rules (comments show the count)."""
import json
import os
import subprocess
import sys

import pytest

from llava.eval import (convert_answer_to_mme, convert_gqa_for_eval, convert_mmbench_for_submission,
                        convert_mmvet_for_eval, convert_seed_for_submission, convert_vizwiz_for_submission,
                        convert_vqav2_for_submission, eval_gqa, eval_mme, eval_pope, eval_science_qa, eval_textvqa)
from llava.eval.m4c_evaluator import EvalAIAnswerProcessor, STVQAAccuracyEvaluator, TextVQAAccuracyEvaluator
from llava.eval.scoring_io import ScoringInputError, read_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return str(path)


# ---- EvalAI answer normalisation ----------------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ("Two.", "2"),                    # period stripped, number word -> digit
    ("Ten.", "10"),
    ("NONE", "0"),                    # "none" -> "0"
    ("zero", "0"),
    ("eleven", "eleven"),             # only zero..ten are mapped
    ("one hundred", "1 hundred"),
    ("one-way", "1 way"),             # '-' touches no space -> space, then "one" -> "1"
    ("ten dogs", "10 dogs"),
    ("the dog's", "dog 's"),          # "'s" detached, article dropped
    ("it's", "it 's"),
    ("What's up?", "what 's up"),     # '?' deleted first
    ("'s", "'s"),
    ("don't", "don't"),
    ("dont", "don't"),                # contraction table
    ("wont", "won't"),
    ("whats", "what's"),
    ("youre right", "you're right"),
    ("couldnt've", "couldn't've"),
    ("couldntve", "couldntve"),       # not a table key (only one apostrophe may be missing)
    ("yall'll", "y'all'll"),
    ("twas", "'twas"),
    ("somebody'd", "somebodyd"),      # the official table's reversed entry
    ("Im", "im"),                     # capitalised keys in the table never match lower-cased text
    ("I'm", "i'm"),
    ("3,000", "3000"),                # commas deleted
    ("red, white", "red white"),
    ("3 , 4", "3 4"),
    ("1,000 - 2", "1000 2"),          # ' -' touches a space -> deleted
    ("a cat", "cat"),
    ("An apple.", "apple"),
    ("the the a an", ""),
    ("a", ""),
    ("a-b-c", "b c"),                 # '-' -> space, then the article "a" goes
    ("  N/A ", "n"),                  # '/' -> space gives "n a"; "a" is an article
    ("1.5", "1.5"),                   # a period before a digit stays
    (".5", ".5"),
    ("3.14.", "3.14"),
    ("2.0.", "2.0"),
    ("12.", "12"),
    ("a.m.", "am"),
    ("mr. smith", "mr smith"),
    ("St. Louis", "st louis"),
    ("yes!", "yes"),
    ("Yes.", "yes"),
    ("No", "no"),
    ("no,", "no"),
    ("(yes)", "yes"),                 # brackets touch no space -> spaces, then collapsed
    ("x/y (z)", "x y z"),             # ' (' touches a space -> all '(' deleted; ')' -> space
    ("left-handed", "left handed"),
    ("left - handed", "left handed"),
    ("e-mail @ home", "e mail home"),  # '@' touches a space (deleted), '-' does not (space)
    ("@home", "home"),
    ('"quoted"', "quoted"),
    ("semi;colon", "semi colon"),
    ("under_score", "under score"),
    ("back\\slash", "back slash"),
    ("<tag>", "tag"),
    ("The answer: Yes", "answer: yes"),  # ':' is not in the punctuation list
    ("$5", "$5"),
    ("100%", "100%"),
    ("#1", "#1"),
    ("it is 2:30", "it is 2:30"),
    ("hello\nworld", "hello world"),
    ("tab\tseparated", "tab separated"),
    ("." * 40, "." * 8),             # the official code strips at most 32 periods (re.UNICODE as count)
])
def test_answer_processor(raw, expected):
    assert EvalAIAnswerProcessor()(raw) == expected


def test_process_punctuation_digit_comma_deletes_all_punctuation():
    p = EvalAIAnswerProcessor()
    assert p.process_punctuation("1,000 (x)") == "1000 x"   # a digit,digit group: every mark deleted
    assert p.process_punctuation("a,b (x)") == "a b x "     # no digit group: "," and ")" -> " ", "(" deleted


def test_contraction_table_size():
    table = EvalAIAnswerProcessor.CONTRACTIONS
    assert len(table) == 114 and table["hed've"] == "he'd've" and table["he'dve"] == "he'd've"
    assert "hedve" not in table and table["'ows'at"] == "'ow's'at"


# ---- TextVQA / ST-VQA accuracy --------------------------------------------------------------------------
GT10 = ["Cat"] * 3 + ["dog", "a dog"] + ["bird"] * 5  # normalised: cat x3, dog x2, bird x5


def test_textvqa_soft_accuracy_by_hand():
    ev = TextVQAAccuracyEvaluator()
    scores = ev._compute_answer_scores(GT10)
    # count c: c copies leave c-1 matches, 10-c others leave c; mean of min(1, m/3)
    assert scores["cat"] == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)       # 0.9
    assert scores["dog"] == pytest.approx((2 * 1 / 3 + 8 * 2 / 3) / 10)   # 0.6
    assert scores["bird"] == pytest.approx(1.0)
    one = ev._compute_answer_scores(["x"] + ["y"] * 9)
    assert one["x"] == pytest.approx(0.3)
    preds = [{"pred_answer": p, "gt_answers": GT10} for p in ["cat.", "Dog", "birds", "The bird"]]
    assert ev.eval_pred_list(preds) == pytest.approx((0.9 + 0.6 + 0 + 1.0) / 4)


def test_textvqa_needs_ten_answers():
    with pytest.raises(ValueError, match="exactly 10"):
        TextVQAAccuracyEvaluator().eval_pred_list([{"pred_answer": "a", "gt_answers": ["a"] * 9}])


def test_stvqa_exact_after_normalisation():
    ev = STVQAAccuracyEvaluator()
    preds = [{"pred_answer": "Two.", "gt_answers": ["2", "3"]}, {"pred_answer": "cats", "gt_answers": ["cat"]},
             {"pred_answer": "The Dog", "gt_answers": ["a dog"]}]
    assert ev.eval_pred_list(preds) == pytest.approx(2 / 3)


# ---- TextVQA scorer -----------------------------------------------------------------------------------
def test_eval_textvqa(tmp_path, capsys):
    ann = write_json(tmp_path / "TextVQA_0.5.1_val.json", {"data": [
        {"image_id": "img1", "question": "What brand is this?", "answers": GT10},
        {"image_id": "img2", "question": "what number?", "answers": ["7"] * 10},
        {"image_id": "img3", "question": "Which team?", "answers": ["Red"] * 4 + ["blue"] * 6},
        {"image_id": "img4", "question": "Who?", "answers": ["x"] * 10}]})
    res = write_jsonl(tmp_path / "answers.jsonl", [
        {"question_id": "img1", "prompt": "What brand is this?\nReference OCR token: nikon\nAnswer the question "
                                          "using a single word or phrase.", "text": "Dog"},          # 0.6
        {"question_id": "img2", "prompt": "OCR tokens: 7, 8 Question: what number? Short answer:", "text": "seven"},
        {"question_id": "img3", "prompt": "Reference OCR token: red\nWhich team?\nAnswer briefly.", "text": "red"},
        {"question_id": "img4", "prompt": "Who?\nAnswer the question using a single word or phrase.", "text": "y"}])
    score_file = tmp_path / "s.json"
    metrics = eval_textvqa.main(["--annotation-file", ann, "--result-file", res, "--score-file", str(score_file)])
    assert metrics["samples"] == 4
    assert metrics["accuracy"] == pytest.approx(100 * (0.6 + 1.0 + 1.0 + 0.0) / 4)  # 65.0
    assert json.loads(score_file.read_text())["score"] == pytest.approx(65.0)
    assert "Accuracy: 65.00%" in capsys.readouterr().out


def test_textvqa_prompt_formats_and_errors(tmp_path):
    assert eval_textvqa.prompt_processor("Q A?\nsuffix") == "q a?"
    with pytest.raises(ValueError):
        eval_textvqa.prompt_processor("one line only")
    ann = write_json(tmp_path / "a.json", {"data": [{"image_id": "i", "question": "q", "answers": ["a"] * 10}]})
    res = write_jsonl(tmp_path / "r.jsonl", [{"question_id": "i", "prompt": "other\nsuffix", "text": "a"}])
    with pytest.raises(ScoringInputError, match="r.jsonl: answer 1: no annotation"):
        eval_textvqa.textvqa_scores(ann, res)


# ---- POPE --------------------------------------------------------------------------------------------
def make_pope(tmp_path, drop_last=False):
    ann = tmp_path / "coco"
    write_jsonl(ann / "coco_pope_random.json", [{"label": x} for x in ["yes", "yes", "no", "no"]])
    write_jsonl(ann / "coco_pope_popular.json", [{"label": x} for x in ["yes", "no", "yes", "yes"]])
    cats = ["random", "popular"] * 4
    qf = write_jsonl(tmp_path / "llava_pope_test.jsonl",
                     [{"question_id": i, "image": f"{i}.jpg", "text": "q", "category": c} for i, c in enumerate(cats)])
    random_texts = ["Yes, there is a dog.", "No.", "There is not a cat.", "Yes"]
    popular_texts = ["yes", "Not sure, no.", "The answer is yes. No doubt.", "Nope"]
    texts = [t for pair in zip(random_texts, popular_texts) for t in pair]
    answers = [{"question_id": i, "prompt": "q", "text": t} for i, t in enumerate(texts)]
    res = write_jsonl(tmp_path / "answers.jsonl", answers[:-1] if drop_last else answers)
    return str(ann), qf, res


def test_pope_answer_rule():
    assert eval_pope.answer_to_label("No, there is none.") == "no"
    assert eval_pope.answer_to_label("Not really") == "yes"       # capitalised "Not" is not in the word list
    assert eval_pope.answer_to_label("No\nThere is") == "yes"     # words are split on single spaces only
    assert eval_pope.answer_to_label("Yes. There is no cat.") == "yes"  # first sentence only
    assert eval_pope.answer_to_label("nope") == "yes"


def test_eval_pope(tmp_path, capsys):
    ann, qf, res = make_pope(tmp_path)
    score_file = tmp_path / "s.json"
    m = eval_pope.main(["--annotation-dir", ann, "--question-file", qf, "--result-file", res,
                        "--score-file", str(score_file)])
    r = m["splits"]["random"]   # preds yes,no,no,yes vs labels yes,yes,no,no
    assert (r["TP"], r["FP"], r["TN"], r["FN"]) == (1, 1, 1, 1)
    assert (r["accuracy"], r["precision"], r["recall"], r["f1"], r["yes_ratio"]) == (0.5, 0.5, 0.5, 0.5, 0.5)
    p = m["splits"]["popular"]  # preds yes,no,yes,yes == labels
    assert (p["TP"], p["FP"], p["TN"], p["FN"]) == (3, 0, 1, 0)
    assert (p["accuracy"], p["f1"], p["yes_ratio"]) == (1.0, 1.0, 0.75)
    assert m["f1_mean"] == pytest.approx(75.0) and m["score"] == pytest.approx(75.0)
    assert json.loads(score_file.read_text())["splits"]["popular"]["TP"] == 3
    out = capsys.readouterr().out
    assert "Category: random, # samples: 4" in out and "0.500, 0.500, 0.500, 0.500, 0.500" in out


def test_pope_count_mismatch_and_zero_division(tmp_path):
    ann, qf, res = make_pope(tmp_path, drop_last=True)
    with pytest.raises(ScoringInputError, match=r"3 answers for split 'popular' but .*coco_pope_popular.json has 4"):
        eval_pope.pope_scores(ann, qf, res)
    m = eval_pope.pope_metrics(["no", "no"], ["yes", "no"])
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"]) == (0.0, 0.0, 0.0, 0.5)


def test_pope_unknown_question(tmp_path):
    ann, qf, _ = make_pope(tmp_path)
    res = write_jsonl(tmp_path / "bad.jsonl", [{"question_id": 99, "text": "yes"}])
    with pytest.raises(ScoringInputError, match="bad.jsonl:1: question_id '99'"):
        eval_pope.pope_scores(ann, qf, res)


# ---- ScienceQA ---------------------------------------------------------------------------------------
def make_sqa(tmp_path):
    base = tmp_path / "scienceqa"
    write_json(base / "pid_splits.json", {"test": ["1", "2", "3", "4", "5"], "val": ["6"]})
    write_json(base / "problems.json", {
        "1": {"choices": ["a", "b", "c"], "answer": 0, "image": "image.png"},
        "2": {"choices": ["a", "b"], "answer": 1, "image": None},
        "3": {"choices": ["a", "b", "c", "d"], "answer": 2, "image": "image.png"},
        "4": {"choices": ["a", "b"], "answer": 0, "image": "image.png"},
        "5": {"choices": ["a", "b", "c"], "answer": 1, "image": "image.png"},
        "6": {"choices": ["a", "b"], "answer": 0, "image": None}})
    res = write_jsonl(tmp_path / "answers.jsonl", [
        {"question_id": "1", "prompt": "<image>\nQ1", "text": "A"},                 # right, image
        {"question_id": "2", "prompt": "Q2", "text": "B. yes"},                     # right, text only
        {"question_id": "3", "prompt": "<image>\nQ3", "text": "The answer is C."},  # right, image
        {"question_id": "4", "prompt": "<image>\nQ4", "text": "C"}])                # C is not a choice: wrong
    return str(base), res                                                           # 5: missing, image


def test_sqa_parse():
    assert eval_science_qa.parse_answer("B") == "B"
    assert eval_science_qa.parse_answer("B. cat") == "B"
    assert eval_science_qa.parse_answer("B.cat") == "FAILED"
    assert eval_science_qa.parse_answer("So The answer is D.") == "D"
    assert eval_science_qa.parse_answer("The answer is A. The answer is B.") == "FAILED"
    assert eval_science_qa.get_pred_idx("C", ["x", "y"]) == -1


def test_eval_science_qa(tmp_path, capsys):
    base, res = make_sqa(tmp_path)
    out_file, out_result, score_file = (tmp_path / n for n in ("o.json", "r.json", "s.json"))
    m = eval_science_qa.main(["--base-dir", base, "--result-file", res, "--output-file", str(out_file),
                              "--output-result", str(out_result), "--score-file", str(score_file)])
    assert (m["total"], m["correct"], m["missing"]) == (5, 3, 1)
    assert m["accuracy"] == pytest.approx(60.0)
    assert (m["img_total"], m["img_correct"]) == (4, 2) and m["img_accuracy"] == pytest.approx(50.0)
    assert json.loads(score_file.read_text())["score"] == pytest.approx(50.0)
    sqa = json.loads(out_result.read_text())
    assert sqa["results"] == {"1": 0, "2": 1, "3": 2, "4": -1, "5": -1} and sqa["outputs"]["5"] == "FAILED"
    assert sqa["acc"] == pytest.approx(60.0) and sqa["count"] == 5
    analysis = json.loads(out_file.read_text())
    assert [x["question_id"] for x in analysis["incorrect"]] == ["4", "5"]
    assert "Accuracy: 60.00%, IMG-Accuracy: 50.00%" in capsys.readouterr().out


def test_sqa_missing_file_cli(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        eval_science_qa.main(["--base-dir", str(tmp_path / "nope"), "--result-file", "x.jsonl"])
    assert e.value.code == 1 and "pid_splits.json not found" in capsys.readouterr().err


# ---- GQA ---------------------------------------------------------------------------------------------
def test_gqa_convert_and_eval(tmp_path):
    src = write_jsonl(tmp_path / "merge.jsonl", [{"question_id": "q1", "text": "Yes.."},
                                                  {"question_id": "q2", "text": "Left"},
                                                  {"question_id": "q3", "text": "the cat"}])
    dst = tmp_path / "testdev_balanced_predictions.json"
    convert_gqa_for_eval.main(["--src", src, "--dst", str(dst)])
    assert json.loads(dst.read_text()) == [{"questionId": "q1", "prediction": "yes"},
                                           {"questionId": "q2", "prediction": "left"},
                                           {"questionId": "q3", "prediction": "the cat"}]
    qs = write_json(tmp_path / "testdev_balanced_questions.json", {
        "q1": {"answer": "yes", "isBalanced": True, "types": {"structural": "verify"}},
        "q2": {"answer": "left", "isBalanced": True, "types": {"structural": "query"}},
        "q3": {"answer": "cat", "isBalanced": True, "types": {"structural": "query"}},   # "the cat" != "cat"
        "q4": {"answer": "x", "isBalanced": False, "types": {"structural": "query"}}})  # not scored
    score_file = tmp_path / "s.json"
    m = eval_gqa.main(["--predictions", str(dst), "--questions", qs, "--score-file", str(score_file)])
    assert (m["total"], m["correct"]) == (3, 2) and m["accuracy"] == pytest.approx(200 / 3)
    assert m["binary"] == pytest.approx(100.0) and m["open"] == pytest.approx(50.0)
    assert json.loads(score_file.read_text())["score"] == pytest.approx(200 / 3)
    partial = write_json(tmp_path / "partial.json", [{"questionId": "q1", "prediction": "no"}])
    with pytest.raises(ScoringInputError, match="no prediction for 2 of the balanced questions"):
        eval_gqa.gqa_scores(partial, qs)
    m = eval_gqa.gqa_scores(partial, qs, allow_missing=True)
    assert (m["total"], m["correct"], m["missing"], m["accuracy"]) == (1, 0, 2, 0.0)


# ---- MME ---------------------------------------------------------------------------------------------
YN = " Please answer yes or no."
SHORT = "\nAnswer the question using a single word or phrase."


def make_mme(tmp_path):
    bench = tmp_path / "MME_Benchmark_release_version"
    (bench / "existence").mkdir(parents=True)
    (bench / "existence" / "0001.txt").write_text(f"Is there a dog?{YN}\tYes\nIs there a cat?{YN}\tNo\n")
    (bench / "existence" / "0002.txt").write_text(f"Is there a car?{YN}\tYes\nIs there a bus?{YN}\tNo\n")
    (bench / "artwork" / "images").mkdir(parents=True)
    (bench / "artwork" / "questions_answers_YN").mkdir()
    (bench / "artwork" / "questions_answers_YN" / "10002.txt").write_text(
        f"Is this by X?{YN}\tYes\nIs this by Y? {YN}\tNo\n")  # second line: two spaces, as some official files
    (bench / "code_reasoning").mkdir()
    (bench / "code_reasoning" / "0020.txt").write_text(f"Is python shown?{YN}\tYes\nIs c++ shown?{YN}\tNo\n")
    rows = [("existence/0001.png", f"Is there a dog?{YN}", "Yes", "yes"),
            ("existence/0001.png", f"Is there a cat?{YN}", "No", "No"),
            ("existence/0002.png", "Is there a car?" + SHORT, "Yes", "yes, there is"),
            ("existence/0002.png", f"Is there a bus?{YN}", "No", "Yes"),
            ("artwork/images/10002.jpg", "Is this by X?" + SHORT, "Yes", "No"),
            ("artwork/images/10002.jpg", "Is this by Y?", "No", "not sure"),
            ("code_reasoning/0020.png", f"Is python shown?{YN}", "Yes", "Maybe"),
            ("code_reasoning/0020.png", f"Is c++ shown?{YN}", "No", "no")]
    answers = write_jsonl(tmp_path / "answers" / "ckpt.jsonl",
                          [{"question_id": q, "prompt": p, "text": t} for q, p, _, t in rows])
    questions = write_jsonl(tmp_path / "llava_mme.jsonl",
                            [{"question_id": q, "image": q, "text": p, "category": q.split("/")[0], "answer": g}
                             for q, p, g, _ in rows])
    return str(bench), answers, questions


def check_mme(m):
    ex, art, code = (m["subtasks"][k] for k in ("existence", "artwork", "code_reasoning"))
    assert (ex["acc"], ex["acc_plus"], ex["score"]) == (0.75, 0.5, 125.0)   # 3/4 right, 1/2 images both right
    assert (art["acc"], art["acc_plus"], art["score"]) == (0.5, 0.0, 50.0)  # "not sure" reads as "no"
    assert (code["acc"], code["acc_plus"], code["other"], code["score"]) == (0.5, 0.0, 1, 50.0)
    assert (m["perception"], m["cognition"], m["total"], m["score"]) == (175.0, 50.0, 225.0, 175.0)
    assert len(m["missing_subtasks"]) == 11


def test_mme_parse_rule():
    p = eval_mme.parse_pred_ans
    assert [p(x) for x in ["Yes", "NO", "Yes.", " no", "nope", "none", "know", "I know", "The answer is yes"]] == \
        ["yes", "no", "yes", "no", "no", "no", "no", "other", "other"]


def test_mme_convert_then_score(tmp_path):
    bench, answers, _ = make_mme(tmp_path)
    result_dir = tmp_path / "eval_tool" / "answers" / "ckpt"
    convert_answer_to_mme.main(["--experiment", "ckpt", "--answers-file", answers, "--data-path", bench,
                                "--result-dir", str(result_dir)])
    lines = (result_dir / "artwork.txt").read_text().splitlines()
    assert lines == [f"10002.txt\tIs this by X?{YN}\tYes\tNo", f"10002.txt\tIs this by Y? {YN}\tNo\tnot sure"]
    assert sorted(os.listdir(result_dir)) == ["artwork.txt", "code_reasoning.txt", "existence.txt"]
    score_file = tmp_path / "s.json"
    check_mme(eval_mme.main(["--results-dir", str(result_dir), "--score-file", str(score_file)]))
    assert json.loads(score_file.read_text())["score"] == 175.0
    check_mme(eval_mme.mme_scores_from_answers(answers, data_path=bench))
    m = eval_mme.main(["--results-dir", str(result_dir), "--headline", "total", "--score-file", str(score_file)])
    assert m["score"] == 225.0 and json.loads(score_file.read_text())["score"] == 225.0


def test_mme_from_question_file_and_errors(tmp_path):
    bench, answers, questions = make_mme(tmp_path)
    check_mme(eval_mme.main(["--answers-file", answers, "--question-file", questions]))
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question_id": "existence/0001.png", "prompt": "Other?", "text": "y"}])
    with pytest.raises(ScoringInputError, match="bad.jsonl:1: no MME ground truth for existence/0001.txt"):
        convert_answer_to_mme.answers_to_mme_rows(bad, convert_answer_to_mme.load_mme_gt(bench))


# ---- SEED-Bench --------------------------------------------------------------------------------------
def test_seed(tmp_path, capsys):
    ann = write_json(tmp_path / "SEED-Bench.json", {
        "question_type": {"Scene Understanding": 1, "Instance Identity": 2, "Action Recognition": 10},
        "questions": [
            {"question_id": "101", "question_type_id": 1, "data_type": "image", "answer": "A"},
            {"question_id": "102", "question_type_id": 1, "data_type": "image", "answer": "B"},
            {"question_id": "103", "question_type_id": 2, "data_type": "image", "answer": "C"},
            {"question_id": "104", "question_type_id": 10, "data_type": "video", "answer": "D"},
            {"question_id": "105", "question_type_id": 2, "data_type": "image", "answer": "A"}]})
    res = write_jsonl(tmp_path / "merge.jsonl", [{"question_id": 101, "text": "A"}, {"question_id": 102, "text": "C"},
                                                  {"question_id": 103, "text": "C"}, {"question_id": 104, "text": "D"}])
    upload, score_file = tmp_path / "up" / "ckpt.jsonl", tmp_path / "s.json"
    m = convert_seed_for_submission.main(["--annotation-file", ann, "--result-file", res, "--result-upload-file",
                                          str(upload), "--score-file", str(score_file)])
    assert m["types"] == {"Scene Understanding": 50.0, "Instance Identity": 50.0, "Action Recognition": 100.0}
    assert (m["total"], m["image"], m["video"], m["score"]) == (60.0, 50.0, 100.0, 50.0)  # 3/5, 2/4, 1/1
    assert [json.loads(x) for x in upload.read_text().splitlines()][-2:] == [
        {"question_id": "104", "prediction": "D"}, {"question_id": "105", "prediction": ""}]
    assert json.loads(score_file.read_text())["score"] == 50.0
    out = capsys.readouterr().out
    assert "Total accuracy: 60.00%" in out and "1 of 5 questions have no answer" in out


# ---- server-scored converters ------------------------------------------------------------------------
def test_vqav2(tmp_path, capsys):
    d = tmp_path / "vqav2"
    write_jsonl(d / "llava_vqav2_mscoco_test2015.jsonl", [{"question_id": i, "text": "q"} for i in (1, 2, 3)])
    src = d / "answers" / "test-dev" / "ckpt" / "merge.jsonl"
    write_jsonl(src, [{"question_id": 1, "text": "Two."}, {"question_id": 3, "text": "the dog's"}])
    with open(src, "a") as f:
        f.write('{"question_id": 2, "te\n')  # a torn line is skipped and reported
    convert_vqav2_for_submission.main(["--dir", str(d), "--ckpt", "ckpt", "--split", "test-dev"])
    out = json.loads((d / "answers_upload" / "test-dev" / "ckpt.json").read_text())
    assert out == [{"question_id": 1, "answer": "2"}, {"question_id": 2, "answer": ""},
                   {"question_id": 3, "answer": "dog 's"}]
    assert "skipped 1 malformed line(s): [3]" in capsys.readouterr().out


def test_vizwiz(tmp_path):
    ann = write_jsonl(tmp_path / "llava_test.jsonl", [{"question_id": 0, "image": "a.jpg"},
                                                      {"question_id": 1, "image": "b.jpg"}])
    res = write_jsonl(tmp_path / "ans.jsonl", [{"question_id": 1, "text": "Unanswerable."},
                                               {"question_id": 0, "text": "A red car"}])
    up = tmp_path / "up" / "ckpt.json"
    convert_vizwiz_for_submission.main(["--annotation-file", ann, "--result-file", res, "--result-upload-file",
                                        str(up)])
    assert json.loads(up.read_text()) == [{"image": "a.jpg", "answer": "red car"},
                                          {"image": "b.jpg", "answer": "unanswerable"}]
    res2 = write_jsonl(tmp_path / "ans2.jsonl", [{"question_id": 1, "text": "x"}])
    with pytest.raises(ScoringInputError, match="ans2.jsonl: no answer for question '0'"):
        convert_vizwiz_for_submission.convert_vizwiz(ann, res2, str(up))


def test_mmbench(tmp_path):
    cols = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "source", "l2-category",
            "comment", "split", "image"]
    rows = [["0", 'Which "one"?', "h", "x", "y", "", "", "A", "c", "s", "l2", "", "dev", "iVBOR" * 1000],
            ["1", "Q2", "", "p", "q", "r", "", "C", "c", "s", "l2", "", "dev", "iVBOR"]]
    tsv = tmp_path / "mmbench_dev_20230712.tsv"
    import csv
    with open(tsv, "w", newline="") as f:
        csv.writer(f, delimiter="\t").writerows([cols] + rows)
    result_dir = tmp_path / "answers" / "dev"
    write_jsonl(result_dir / "ckpt.jsonl", [{"question_id": 0, "round_id": 0, "text": "A"},
                                            {"question_id": 1, "round_id": 0, "text": "B"},
                                            {"question_id": 1, "round_id": 1, "text": "C"}])  # last round wins
    upload = tmp_path / "answers_upload" / "dev"
    args = ["--annotation-file", str(tsv), "--result-dir", str(result_dir), "--upload-dir", str(upload),
            "--experiment", "ckpt"]
    try:
        import openpyxl  # noqa: F401
        has_xlsx = True
    except ImportError:
        has_xlsx = False
    if has_xlsx:
        convert_mmbench_for_submission.main(args)
        assert (upload / "ckpt.xlsx").is_file()
    else:
        with pytest.raises(SystemExit):
            convert_mmbench_for_submission.main(args)
        with pytest.raises(ScoringInputError, match="pip install openpyxl"):
            convert_mmbench_for_submission.write_sheet(*convert_mmbench_for_submission.build_sheet(
                str(tsv), str(result_dir / "ckpt.jsonl")), str(upload), "ckpt")
    with open(upload / "ckpt.tsv", newline="") as f:
        out = list(csv.reader(f, delimiter="\t"))
    assert out[0] == ["index", "question", "A", "B", "C", "D", "prediction", "answer", "split"]
    assert out[1] == ["0", 'Which "one"?', "x", "y", "", "", "A", "A", "dev"]
    assert out[2] == ["1", "Q2", "p", "q", "r", "", "C", "C", "dev"]


def test_mmvet_and_script_wrapper(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [{"question_id": 0, "text": "It is a cat."},
                                             {"question_id": "v2", "text": "x"}])
    dst = tmp_path / "results" / "ckpt.json"
    env = dict(os.environ, PYTHONPATH=REPO)
    subprocess.run([sys.executable, os.path.join(REPO, "scripts", "convert_mmvet_for_eval.py"), "--src", src,
                    "--dst", str(dst)], check=True, env=env, cwd=str(tmp_path))
    assert json.loads(dst.read_text()) == {"v1_0": "It is a cat.", "v1_v2": "x"}
    assert convert_mmvet_for_eval.convert_mmvet(src, str(dst)) == {"v1_0": "It is a cat.", "v1_v2": "x"}


@pytest.mark.parametrize("name", ["convert_gqa_for_eval", "convert_vqav2_for_submission",
                                  "convert_vizwiz_for_submission", "convert_mmbench_for_submission",
                                  "convert_seed_for_submission", "convert_mmvet_for_eval"])
def test_script_wrappers_exist(name):
    text = open(os.path.join(REPO, "scripts", f"{name}.py")).read()
    assert f"from llava.eval.{name} import main" in text and len(text.strip().splitlines()) == 3


# ---- input errors ------------------------------------------------------------------------------------
def test_malformed_and_missing_inputs(tmp_path):
    bad = tmp_path / "answers.jsonl"
    bad.write_text('{"question_id": 1, "text": "a"}\n\n{"question_id": 2,\n')
    with pytest.raises(ScoringInputError, match=r"answers.jsonl:3: malformed JSON line"):
        read_jsonl(str(bad))
    with pytest.raises(FileNotFoundError, match="GQA answers file not found: .*nope.jsonl"):
        convert_gqa_for_eval.convert_gqa(str(tmp_path / "nope.jsonl"), str(tmp_path / "x.json"))
    no_text = write_jsonl(tmp_path / "no_text.jsonl", [{"question_id": 1}])
    with pytest.raises(ScoringInputError, match=r"no_text.jsonl:1: entry has no 'text' field"):
        convert_gqa_for_eval.convert_gqa(no_text, str(tmp_path / "x.json"))


def test_cli_error_is_one_line(tmp_path):
    bad = tmp_path / "answers.jsonl"
    bad.write_text("not json\n")
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-m", "llava.eval.convert_gqa_for_eval", "--src", str(bad), "--dst",
                           str(tmp_path / "o.json")], capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: ") and "answers.jsonl:1: malformed JSON line" in proc.stderr
