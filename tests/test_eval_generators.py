"""Answer generators (llava.eval.model_vqa*, model_caption): formats, batching, resume, errors, scripts."""
import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest

from llava.eval import fixtures
from llava.eval.common import AnswerFile, EvalInputError, get_chunk, split_list

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANSWER_KEYS = {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}


def lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(x) for x in f if x.strip()]


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    return tiny_checkpoint("v1.5")["model_path"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return fixtures.make_all(str(tmp_path_factory.mktemp("evaldata")))


def run(module, *args):
    from importlib import import_module

    return import_module(f"llava.eval.{module}").main([*map(str, args)])


def loader_args(ckpt, data, answers, *extra):
    d = os.path.join(data, "pope")
    return ["--model-path", ckpt, "--question-file", os.path.join(d, "llava_pope_test.jsonl"),
            "--image-folder", os.path.join(d, "val2014"), "--answers-file", answers, "--temperature", "0",
            "--max_new_tokens", "5", "--num-workers", "0", "--device", "cpu", *extra]


# ---- pure helpers -----------------------------------------------------------------------------------------
def test_chunks_follow_upstream():
    items = list(range(10))
    assert split_list(items, 3) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert sum((get_chunk(items, 3, k) for k in range(3)), []) == items
    assert get_chunk([1], 2, 1) == []


def test_answer_file_resumes_and_cuts_a_torn_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"question_id": 1, "text": "a"}\n{"question_id": 2, "text": "b"}\n{"question_id": 3, "te')
    with AnswerFile(str(path)) as f:
        assert f.done == {1, 2}
        f.write({"question_id": 3, "text": "c"})
    assert [r["question_id"] for r in lines(path)] == [1, 2, 3]


def test_answer_file_refuses_a_foreign_file(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"question_id": 1}\nnot json\n{"question_id": 2}\n')
    with pytest.raises(EvalInputError, match=r"a.jsonl:2"):
        AnswerFile(str(path))
    with AnswerFile(str(path), resume=False) as f:  # --no-resume starts afresh
        assert f.done == set()
    assert path.read_text() == ""


# ---- generators -------------------------------------------------------------------------------------------
def test_loader_writes_upstream_format_with_pruning_stats(ckpt, data, tmp_path):
    out = str(tmp_path / "a.jsonl")
    assert run("model_vqa_loader", *loader_args(ckpt, data, out, "--pruning-method", "agile",
                                                "--visual-token-num", "16", "--pruning-stats")) == 0
    rows = lines(out)
    questions = lines(os.path.join(data, "pope", "llava_pope_test.jsonl"))
    assert [r["question_id"] for r in rows] == [q["question_id"] for q in questions]
    assert all(ANSWER_KEYS <= set(r) and r["prompt"] == q["text"] for r, q in zip(rows, questions))
    stats = rows[0]["metadata"]["pruning"]
    assert stats["kept_tokens"] == 16 and stats["erank_kept"] < stats["erank_all"]


def test_pruning_stats_with_fastv_record_what_it_kept(ckpt, data, tmp_path):
    """FastV prunes inside the decoder: its records have the kept tokens but no selection time or erank."""
    out = str(tmp_path / "f.jsonl")
    assert run("model_vqa_loader", *loader_args(ckpt, data, out, "--pruning-method", "fastv", "--visual-token-num",
                                                "16", "--fastv-layer", "1", "--pruning-stats")) == 0
    stats = lines(out)[0]["metadata"]["pruning"]
    assert stats["kept_tokens"] == 16 and stats["pruning_time_s"] is None and stats["erank_all"] is None


@pytest.mark.parametrize("method", ["none", "agile"])
def test_batched_answers_equal_unbatched(ckpt, data, tmp_path, method):
    prune = ["--pruning-method", method, "--visual-token-num", "32"]
    one, four = str(tmp_path / "b1.jsonl"), str(tmp_path / "b4.jsonl")
    assert run("model_vqa_loader", *loader_args(ckpt, data, one, *prune)) == 0
    assert run("model_vqa_loader", *loader_args(ckpt, data, four, "--batch-size", "4", *prune)) == 0
    with open(one) as a, open(four) as b:
        assert a.read() == b.read()


def test_crash_midway_then_rerun_gives_the_uninterrupted_file(ckpt, data, tmp_path):
    """An image that cannot be read stops the run with an error naming it; the answers before it stay;
    once the image is back, the re-run resumes and writes the same file as an uninterrupted run."""
    d = os.path.join(data, "gqa")
    questions = lines(os.path.join(d, "llava_gqa_testdev_balanced.jsonl"))  # 4 questions, 4 images
    images = tmp_path / "images"
    shutil.copytree(os.path.join(d, "data", "images"), images)

    def args(out):
        return ["--model-path", ckpt, "--question-file", os.path.join(d, "llava_gqa_testdev_balanced.jsonl"),
                "--image-folder", str(images), "--answers-file", out, "--temperature", "0", "--max_new_tokens", "5",
                "--num-workers", "0", "--device", "cpu"]

    full, part = str(tmp_path / "full.jsonl"), str(tmp_path / "part.jsonl")
    assert run("model_vqa_loader", *args(full)) == 0
    victim = images / questions[2]["image"]
    saved = victim.read_bytes()
    victim.write_bytes(b"not an image")
    assert run("model_vqa_loader", *args(part)) == 2
    assert [r["question_id"] for r in lines(part)] == [q["question_id"] for q in questions[:2]]
    victim.write_bytes(saved)
    with open(part, "a") as f:
        f.write('{"question_id": "20968381", "prom')  # and a torn line, as a kill mid-write leaves
    assert run("model_vqa_loader", *args(part)) == 0
    with open(full) as a, open(part) as b:
        assert a.read() == b.read()


def test_bad_inputs_give_one_line_errors(ckpt, data, tmp_path, capsys):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question_id": 1, "image": "x.jpg", "text": "hi"}\n{"question_id": 2, "image": \n')
    args = loader_args(ckpt, data, str(tmp_path / "a.jsonl"))
    args[args.index("--question-file") + 1] = str(bad)
    assert run("model_vqa_loader", *args) == 2
    assert f"{bad}:2: malformed JSON line" in capsys.readouterr().err
    missing = tmp_path / "m.jsonl"
    missing.write_text('{"question_id": 1, "image": "nope.jpg", "text": "hi"}\n')
    args[args.index("--question-file") + 1] = str(missing)
    assert run("model_vqa_loader", *args) == 2
    assert "nope.jpg" in capsys.readouterr().err
    no_text = tmp_path / "n.jsonl"
    no_text.write_text('{"question_id": 1, "image": "nope.jpg"}\n')
    args[args.index("--question-file") + 1] = str(no_text)
    assert run("model_vqa_loader", *args) == 2
    assert "missing field(s) 'text'" in capsys.readouterr().err


def test_science_prompts_and_text_only_questions(ckpt, data, tmp_path):
    d = os.path.join(data, "scienceqa")
    out = str(tmp_path / "sqa.jsonl")
    assert run("model_vqa_science", "--model-path", ckpt, "--question-file", os.path.join(d, "llava_test_CQM-A.json"),
               "--image-folder", os.path.join(d, "images", "test"), "--answers-file", out, "--single-pred-prompt",
               "--temperature", "0", "--max_new_tokens", "3", "--conv-mode", "vicuna_v1", "--device", "cpu") == 0
    items = json.load(open(os.path.join(d, "llava_test_CQM-A.json")))
    for row, item in zip(lines(out), items):
        assert row["question_id"] == item["id"]
        assert row["prompt"].startswith("<image>\n") == ("image" in item)
        assert row["prompt"].endswith("\nAnswer with the option's letter from the given choices directly.")
        assert "<image>" not in row["prompt"][len("<image>\n"):]


def test_mmbench_rounds_rotate_options(ckpt, data, tmp_path):
    out = str(tmp_path / "mmb.jsonl")
    tsv = os.path.join(data, "mmbench", "mmbench_dev_20230712.tsv")
    assert run("model_vqa_mmbench", "--model-path", ckpt, "--question-file", tsv, "--answers-file", out,
               "--all-rounds", "--single-pred-prompt", "--temperature", "0", "--max_new_tokens", "2",
               "--device", "cpu") == 0
    rows = lines(out)
    first = [r for r in rows if r["question_id"] == 0]  # 2 options, a hint
    assert [r["round_id"] for r in first] == [0, 1]
    assert first[0]["options"] == ["red", "green"] and first[1]["options"] == ["green", "red"]
    assert first[1]["option_char"] == ["B", "A"]
    assert first[0]["prompt"] == "Look closely.\nWhat colour is the shape?\nA. red\nB. green"
    assert first[1]["prompt"].endswith("\nA. green\nB. red")
    assert len([r for r in rows if r["question_id"] == 2]) == 4  # 4 options, 4 rounds


def test_caption_entry_point_samples_and_captions(ckpt, data, tmp_path):
    d = os.path.join(data, "chair")
    q = str(tmp_path / "q.jsonl")
    assert run("model_caption", "--make-questions", q, "--annotation-file",
               os.path.join(d, "annotations", "instances_val2014.json"), "--image-folder",
               os.path.join(d, "val2014"), "--num-images", "3") == 0
    out = str(tmp_path / "caps.jsonl")
    assert run("model_caption", "--model-path", ckpt, "--question-file", q, "--image-folder",
               os.path.join(d, "val2014"), "--answers-file", out, "--temperature", "0", "--max_new_tokens", "3",
               "--num-workers", "0", "--device", "cpu") == 0
    rows = lines(out)
    assert len(rows) == 3 and all(r["image_id"] == r["question_id"] for r in rows)
    assert rows[0]["prompt"] == "Please describe this image in detail."


# ---- the benchmark scripts, end to end on the fixtures ---------------------------------------------------
SCRIPTS = ["pope", "textvqa", "gqa", "vqav2", "vizwiz", "sqa", "mme", "mmbench", "mmbench_cn", "seed",
           "llavabench", "mmvet", "chair"]
SCORED = {"pope": "pope", "textvqa": "textvqa", "gqa": "gqa", "sqa": "scienceqa", "mme": "MME",
          "seed": "seed_bench", "chair": "chair"}
BENCH_DIR = {"sqa": "scienceqa", "mme": "MME", "seed": "seed_bench", "llavabench": "llava-bench-in-the-wild",
             "mmvet": "mm-vet"}


@pytest.mark.slow
@pytest.mark.parametrize("method,k", [("none", 576), ("agile", 32)])
def test_every_script_runs_on_its_fixture(ckpt, tmp_path, method, k):
    root = fixtures.make_all(str(tmp_path / "eval"))
    env = dict(os.environ, EVAL_DIR=root, MODEL_PATH=ckpt, CKPT="tiny", PYTHON=sys.executable,
               EVAL_ARGS="--device cpu --num-workers 0 --max_new_tokens 3", HF_HUB_OFFLINE="1",
               CUDA_VISIBLE_DEVICES="0,1")  # two chunks for the chunked benchmarks
    for script in SCRIPTS:
        proc = subprocess.run(["bash", f"scripts/v1_5/eval/{script}.sh", method, str(k)], cwd=REPO, env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, f"{script}: {proc.stderr[-2000:]}"
        bench = BENCH_DIR.get(script, script)
        answers = os.path.join(root, bench, "answers", "tiny", method, f"k{k}.jsonl")
        rows = lines(answers)
        assert rows and all(ANSWER_KEYS <= set(r) for r in rows), script
        if script in SCORED:
            with open(os.path.join(root, SCORED[script], "scores", "tiny", method, f"k{k}.json")) as f:
                assert isinstance(json.load(f)["score"], (int, float)), script
    assert os.path.isfile(os.path.join(root, "vqav2", "answers_upload", "llava_vqav2_mscoco_test-dev2015", "tiny",
                                       method, f"k{k}.json"))
    from llava.eval.summarize import summarize

    benches, rows, _ = summarize(root, "tiny")
    assert {"pope", "gqa", "MME", "chair"} <= set(benches) and rows[0]["method"] == method


def test_missing_benchmark_data_is_named(tmp_path, ckpt):
    env = dict(os.environ, EVAL_DIR=str(tmp_path), MODEL_PATH=ckpt, PYTHON=sys.executable)
    proc = subprocess.run(["bash", "scripts/v1_5/eval/pope.sh", "agile", "64"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "llava_pope_test.jsonl not found" in proc.stderr


def test_all_sh_runs_the_paper_set_by_default():
    text = open(os.path.join(REPO, "scripts", "v1_5", "eval", "all.sh")).read()
    assert 'vqav2 gqa vizwiz sqa textvqa pope mme mmbench mmbench_cn' in text
    assert all(os.path.isfile(os.path.join(REPO, "scripts", "v1_5", "eval", f"{s}.sh")) for s in SCRIPTS)


def test_summarize_table_average_and_outputs(tmp_path):
    from llava.eval import summarize

    def put(bench, method, k, score):
        d = tmp_path / bench / "scores" / "m" / method
        d.mkdir(parents=True, exist_ok=True)
        (d / f"k{k}.json").write_text(json.dumps({"score": score}))

    put("pope", "none", 576, 80.0)
    put("gqa", "none", 576, 60.0)
    put("chair", "none", 576, 50.0)
    put("pope", "agile", 64, 72.0)
    put("gqa", "agile", 64, 66.0)
    put("chair", "agile", 64, 10.0)
    put("pope", "agile", 128, 80.0)
    benches, rows, _ = summarize.summarize(str(tmp_path), "m")
    assert benches == ["gqa", "pope", "chair"]
    by = {(r["method"], r["K"]): r for r in rows}
    assert by[("none", 576)]["avg"] == pytest.approx(100.0)
    assert by[("agile", 64)]["avg"] == pytest.approx((90.0 + 110.0) / 2) and by[("agile", 64)]["n"] == 2  # chair not averaged
    assert by[("agile", 128)]["n"] == 1
    assert [(r["method"], r["K"]) for r in rows] == [("none", 576), ("agile", 128), ("agile", 64)]
    md, csv_out, png = tmp_path / "t.md", tmp_path / "t.csv", tmp_path / "p.png"
    assert summarize.main(["--eval-dir", str(tmp_path), "--ckpt", "m", "--markdown", str(md), "--csv", str(csv_out),
                           "--plot", str(png)]) == 0
    assert "| agile | 64 | 66.0 | 72.0 | 10.0 | 100.00% | 2 |" in md.read_text()
    assert csv_out.read_text().splitlines()[0] == "method,K,gqa,pope,chair,avg_relative_percent,n_benchmarks"
    assert png.stat().st_size > 1000


def test_summarize_reports_pruning_stats(tmp_path):
    from llava.eval import summarize

    d = tmp_path / "pope" / "scores" / "m" / "agile"
    d.mkdir(parents=True)
    (d / "k64.json").write_text('{"score": 70}')
    a = tmp_path / "pope" / "answers" / "m" / "agile"
    a.mkdir(parents=True)
    recs = [{"question_id": i, "metadata": {"pruning": {"erank_kept": e, "attention_entropy": 5.0}}}
            for i, e in enumerate((20.0, 30.0))]
    (a / "k64.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    _, _, stats = summarize.summarize(str(tmp_path), "m")
    assert stats[("agile", 64)]["pope"] == (25.0, 5.0, 2)


@pytest.mark.parametrize("prune", [[], ["--pruning-method", "agile", "--visual-token-num", "32"],
                                   ["--pruning-method", "fastervlm", "--visual-token-num", "64", "--budget-scope", "global"]])
def test_llava16_batches_of_different_image_sizes_equal_unbatched(tiny_checkpoint, tmp_path, prune):
    """LLaVA-1.6 (anyres): images of different aspect ratios give different view grids in one batch."""
    ckpt = tiny_checkpoint("v1.6")["model_path"]
    (tmp_path / "img").mkdir()
    with open(tmp_path / "q.jsonl", "w") as f:
        for i, size in enumerate([(96, 72), (60, 140), (200, 90), (80, 80)]):
            fixtures.picture(i, size).save(tmp_path / "img" / f"{i}.png")
            f.write(json.dumps({"question_id": i, "image": f"{i}.png", "text": "What is it?" + " Look." * i}) + "\n")
    outs = []
    for bs in (1, 4):
        outs.append(str(tmp_path / f"a{bs}.jsonl"))
        assert run("model_vqa_loader", "--model-path", ckpt, "--question-file", tmp_path / "q.jsonl", "--image-folder",
                   tmp_path / "img", "--answers-file", outs[-1], "--temperature", "0", "--max_new_tokens", "5",
                   "--num-workers", "0", "--device", "cpu", "--conv-mode", "vicuna_v1", "--batch-size", bs, *prune) == 0
    with open(outs[0]) as a, open(outs[1]) as b:
        assert a.read() == b.read()
