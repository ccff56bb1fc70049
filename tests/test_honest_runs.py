"""Runs do what they say: `--pruning-method none` is unpruned, a resume with other settings is refused,
no pruning flag is silently ignored, the template and the erank calibration come from the checkpoint,
and every bad setting is one `error:` line before any weights are read (issue: honest runs, 1-9)."""
import json
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTBED = os.path.join(ROOT, "playground", "llava-testbed")


@pytest.fixture
def one_question(monkeypatch):
    """The CLI's standard input: one question, then end of input."""
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("What colour?\n"))


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    Image.new("RGB", (336, 336), (200, 40, 40)).save(folder / "red.png")
    return folder


@pytest.fixture(scope="module")
def trained_with_pruning(tiny_checkpoint, tmp_path_factory):
    """A tiny checkpoint saved as training saves one with METHOD=agile K=64: "pruning" in its config."""
    src = tiny_checkpoint("v1.5")["model_path"]
    dst = tmp_path_factory.mktemp("ckpt") / "llava-v1.5-agile64"
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["pruning"] = {"method": "agile", "visual_token_num": 64, "erank_avg": 90.0}
    (dst / "config.json").write_text(json.dumps(cfg))
    return str(dst)


def questions(folder, n=2, image="red.png"):
    path = folder / "q.jsonl"
    path.write_text("".join(json.dumps({"question_id": i, "image": image, "text": "What colour?"}) + "\n"
                            for i in range(n)))
    return str(path)


def generate(args, capsys):
    from llava.eval import model_vqa_loader

    code = model_vqa_loader.main(args)
    return code, capsys.readouterr().err


def loader_args(model, q, folder, answers, *more):
    return ["--model-path", model, "--question-file", q, "--image-folder", str(folder), "--answers-file",
            str(answers), "--device", "cpu", "--temperature", "0", "--max-new-tokens", "2", *more]


def kept_tokens(answers):
    return [json.loads(x)["metadata"]["pruning"]["kept_tokens"] for x in open(answers) if x.strip()]


# 1. --pruning-method none is unpruned, whatever the checkpoint was trained with; the run says what it does
def test_none_means_unpruned_and_the_checkpoint_setting_is_the_default(trained_with_pruning, picture, tmp_path, capsys):
    q = questions(tmp_path)
    code, err = generate(loader_args(trained_with_pruning, q, picture, tmp_path / "none.jsonl",
                                     "--pruning-method", "none", "--pruning-stats"), capsys)
    assert code == 0 and "pruning none +stats [flag]" in err
    assert kept_tokens(tmp_path / "none.jsonl") == [576, 576]
    code, err = generate(loader_args(trained_with_pruning, q, picture, tmp_path / "ckpt.jsonl", "--pruning-stats"),
                         capsys)
    assert code == 0 and "pruning agile K=64" in err and "[checkpoint]" in err
    assert kept_tokens(tmp_path / "ckpt.jsonl") == [64, 64]


def test_cli_none_is_unpruned_and_says_so(trained_with_pruning, picture, capsys, one_question):
    from llava.serve.cli import cli

    assert cli(["--model-path", trained_with_pruning, "--image-file", str(picture / "red.png"), "--device", "cpu",
                "--pruning-method", "none", "--pruning-stats", "--max-new-tokens", "2"]) == 0
    err = capsys.readouterr().err
    assert "pruning none +stats [flag]" in err and "kept=576" in err


# 2. a resume with other settings is refused, naming the differences
def test_resume_with_other_settings_is_refused(tiny_checkpoint, picture, tmp_path, capsys):
    model = tiny_checkpoint("v1.5")["model_path"]
    q, answers = questions(tmp_path), tmp_path / "a.jsonl"
    agile = ["--pruning-method", "agile", "--visual-token-num", "64"]
    assert generate(loader_args(model, q, picture, answers, *agile), capsys)[0] == 0
    assert json.loads((tmp_path / "a.jsonl.run.json").read_text())["pruning"]["method"] == "agile"
    code, err = generate(loader_args(model, q, picture, answers, "--pruning-method", "none", "--max-new-tokens", "4"),
                         capsys)
    assert code == 2 and "other settings" in err and "pruning.method: 'agile' -> 'none'" in err
    assert "max_new_tokens: 2 -> 4" in err
    code, err = generate(loader_args(model, q, picture, answers, *agile, "--erank-avg", "12.03"), capsys)
    assert code == 2 and "pruning.erank_avg: 90.0 -> 12.03" in err
    assert len(answers.read_text().splitlines()) == 2  # nothing mixed in
    code, err = generate(loader_args(model, q, picture, answers, *agile), capsys)  # same settings: resumes
    assert code == 0 and "2 of 2 already answered" in err
    code, _ = generate(loader_args(model, q, picture, answers, "--no-resume", "--pruning-method", "none"), capsys)
    assert code == 0 and json.loads((tmp_path / "a.jsonl.run.json").read_text())["pruning"]["method"] == "none"


def test_answers_without_a_settings_record_are_not_resumed(tiny_checkpoint, picture, tmp_path, capsys):
    model = tiny_checkpoint("v1.5")["model_path"]
    answers = tmp_path / "old.jsonl"
    answers.write_text(json.dumps({"question_id": 0, "text": "red"}) + "\n")
    code, err = generate(loader_args(model, questions(tmp_path), picture, answers), capsys)
    assert code == 2 and "without a record of the settings" in err


# 3. an eval script with a method and no K stops
def test_eval_script_needs_k_with_a_method(tmp_path):
    out = subprocess.run(["bash", "scripts/v1_5/eval/pope.sh", "agile"], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, EVAL_DIR=str(tmp_path)))
    assert out.returncode == 2 and "needs K" in out.stderr and not list(tmp_path.iterdir())


def test_eval_script_paths_tell_runs_apart():
    env = dict(os.environ, PRUNING_ARGS="--erank-avg 12.03 --pruning-stats", CONV_MODE="llava_v1")
    out = subprocess.run(["bash", "-c", 'source scripts/v1_5/eval/common.sh agile 64 && echo "$RUN"'], cwd=ROOT,
                         capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "llava-v1.5-7b/agile+erank-avg=12.03+conv=llava_v1/k64"


# 4. the CLI ignores no pruning flag, refuses impossible settings, says when K prunes nothing
@pytest.mark.parametrize("flags, message", [
    (["--visual-token-num", "64"], "--visual-token-num given without a pruning method"),
    (["--erank-avg", "12"], "--erank-avg given without a pruning method"),
    (["--temperature", "-1"], "--temperature must be >= 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    (["--conv-mode", "nope"], "--conv-mode: unknown template 'nope'"),
    (["--pruning-method", "visionzip", "--visual-token-num", "64", "--budget-scope", "global"], "per-view only"),
])
def test_cli_bad_settings_fail_before_loading(flags, message, tiny_checkpoint, picture, capsys, monkeypatch):
    import llava.serve.cli as cli_module

    monkeypatch.setattr(cli_module, "load_pretrained_model", lambda *a, **k: pytest.fail("weights were read"))
    code = cli_module.cli(["--model-path", tiny_checkpoint("v1.5")["model_path"], "--image-file",
                           str(picture / "red.png"), "--device", "cpu", *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_cli_cuda_without_cuda_is_an_error(tiny_checkpoint, picture, capsys):
    import torch

    from llava.serve.cli import cli

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert cli(["--model-path", tiny_checkpoint("v1.5")["model_path"], "--image-file", str(picture / "red.png"),
                "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_cli_k_above_the_tokens_is_said(tiny_checkpoint, picture, capsys, one_question):
    from llava.serve.cli import cli

    assert cli(["--model-path", tiny_checkpoint("v1.5")["model_path"], "--image-file", str(picture / "red.png"),
                "--device", "cpu", "--pruning-method", "fastervlm", "--visual-token-num", "600",
                "--max-new-tokens", "1"]) == 0
    assert "keeps them all (no pruning)" in capsys.readouterr().err


# 5. the template a checkpoint was trained with is used, whatever the folder is called
def test_testbed_template_comes_from_the_checkpoint_even_in_a_folder_named_plain(picture, tmp_path, capsys):
    copy = tmp_path / "plain"
    shutil.copytree(TESTBED, copy)
    code, err = generate(loader_args(str(copy), questions(tmp_path), picture, tmp_path / "a.jsonl"), capsys)
    assert code == 0 and "template v1 [checkpoint]" in err


# 6. a calibration the checkpoint carries is the default --erank-avg; the flag wins; the run says which
def test_calibration_is_the_default_erank(picture, capsys, monkeypatch):
    import io

    from llava.serve.cli import cli

    common = ["--model-path", TESTBED, "--image-file", str(picture / "red.png"), "--device", "cpu",
              "--pruning-method", "agile", "--visual-token-num", "64", "--max-new-tokens", "1"]
    calibrated = json.load(open(os.path.join(TESTBED, "erank_calibration.json")))["erank_avg"]
    monkeypatch.setattr("sys.stdin", io.StringIO("What colour?\n"))
    assert cli(common) == 0
    assert f"erank_avg={calibrated:g} (calibration)" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("What colour?\n"))
    assert cli(common + ["--erank-avg", "50"]) == 0
    assert "erank_avg=50 (flag)" in capsys.readouterr().err


# 7. training takes bad pruning input as the CLI does, and --help lists the pruning flags
@pytest.mark.parametrize("flags, message", [
    (["--pruning-method", "agile", "--visual-token-num", "0"], "must be a positive integer"),
    (["--pruning-method", "fastv", "--visual-token-num", "64"], "inside the LLM at inference only"),
])
def test_training_bad_pruning_is_one_line(flags, message):
    out = subprocess.run([sys.executable, "llava/train/train_mem.py", "--model_name_or_path", "x", *flags], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and message in out.stderr
    assert "Traceback" not in out.stderr


def test_training_help_lists_the_pruning_flags():
    out = subprocess.run([sys.executable, "llava/train/train_mem.py", "--help"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0 and "--pruning-method" in out.stdout and "--erank-avg" in out.stdout


# 8. visualize: every method it can show, a clear word for those it cannot, K required
@pytest.mark.parametrize("flags, message", [
    (["--methods", "agile,fastv", "--visual-token-num", "8"], "fastv prunes inside the LLM"),
    (["--methods", "visionzip", "--visual-token-num", "8"], "visionzip builds new tokens"),
    (["--methods", "agile"], "--visual-token-num is required"),
])
def test_visualize_says_what_it_cannot_show(flags, message, picture, capsys):
    from llava.tools import visualize

    with pytest.raises(SystemExit) as exit_:
        visualize.main(["--model-path", TESTBED, "--image-file", str(picture / "red.png"), "--device", "cpu", *flags])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_visualize_pruning_method_flag_is_used(picture, tmp_path, capsys):
    from llava.tools import visualize

    visualize.main(["--model-path", TESTBED, "--image-file", str(picture / "red.png"), "--device", "cpu",
                    "--pruning-method", "fps", "--visual-token-num", "8", "--out", str(tmp_path / "p.png")])
    assert "1 panels (fps, K=8)" in capsys.readouterr().out


# 9. errors point the right way
def test_errors_name_the_right_input(tiny_checkpoint, picture, tmp_path, capsys):
    from llava.serve.cli import cli

    model = tiny_checkpoint("v1.5")["model_path"]
    image = str(picture / "red.png")
    assert cli(["--model-path", "/nonexistent/llava", "--image-file", image, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "no such folder" in err and "hf download" not in err
    assert cli(["--model-path", model, "--image-file", image, "--device", "cpu", "--vision-tower",
                str(tmp_path / "no-tower")]) == 2
    assert "(--vision-tower)" in capsys.readouterr().err
    assert cli(["--model-path", model, "--image-file", str(tmp_path), "--device", "cpu"]) == 2
    assert "is a directory, not an image file" in capsys.readouterr().err


def test_eval_errors_name_the_question_and_empty_files_stop(tiny_checkpoint, picture, tmp_path, capsys):
    model = tiny_checkpoint("v1.5")["model_path"]
    code, err = generate(loader_args(model, questions(tmp_path, image="missing.png"), picture, tmp_path / "a.jsonl"),
                         capsys)
    assert code == 2 and "question_id 0" in err and "missing.png" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    code, err = generate(loader_args(model, str(empty), picture, tmp_path / "b.jsonl"), capsys)
    assert code == 2 and "holds no questions" in err


def test_summarize_says_when_the_baseline_is_missing(tmp_path, capsys):
    from llava.eval import summarize

    folder = tmp_path / "pope" / "scores" / "c" / "agile"
    folder.mkdir(parents=True)
    (folder / "k64.json").write_text(json.dumps({"score": 80.0}))
    summarize.summarize(str(tmp_path), "c", baseline="fastv")
    assert "no scores of --baseline fastv" in capsys.readouterr().err
