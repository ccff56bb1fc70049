"""`python -m llava.serve.cli` driven through piped stdin, as a user would."""
import subprocess
import sys

import pytest
from PIL import Image


def run_cli(args, stdin, timeout=240):
    return subprocess.run([sys.executable, "-m", "llava.serve.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "red.png"
    Image.new("RGB", (320, 240), (200, 30, 30)).save(path)
    return str(path)


@pytest.mark.slow
def test_multi_turn_chat_through_piped_stdin(tiny_checkpoint, image_file):
    ckpt = tiny_checkpoint("v1.5")
    res = run_cli(["--model-path", ckpt["model_path"], "--image-file", image_file, "--device", "cpu",
                   "--temperature", "0", "--max-new-tokens", "5", "--debug"],
                  "What is this?\nAnd the colour?\n")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    chat = "\n".join(line for line in out.splitlines() if "'prompt':" not in line)  # without --debug dumps
    assert chat.count("USER: ") == 3 and chat.count("ASSISTANT: ") == 2  # two turns, then the exit prompt
    assert out.rstrip().endswith("exit...")
    # the second prompt carries the first answer and the image token only once
    prompts = [line for line in out.splitlines() if "'prompt':" in line]
    assert len(prompts) == 2 and prompts[1].count("<image>") == 1 and "And the colour?" in prompts[1]
    assert "</s></s>" not in prompts[1]


@pytest.mark.slow
def test_empty_line_exits_cleanly(tiny_checkpoint, image_file):
    ckpt = tiny_checkpoint("v1.5")
    res = run_cli(["--model-path", ckpt["model_path"], "--image-file", image_file, "--device", "cpu"], "\n")
    assert res.returncode == 0 and res.stdout.strip().endswith("exit...")


def test_unreadable_image_is_a_clear_error(tiny_checkpoint, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    ckpt = tiny_checkpoint("v1.5")
    res = run_cli(["--model-path", ckpt["model_path"], "--image-file", str(bad), "--device", "cpu"], "")
    assert res.returncode == 2
    assert "broken.jpg" in res.stderr and "Traceback" not in res.stderr


def test_missing_checkpoint_is_a_clear_error(tmp_path, image_file):
    res = run_cli(["--model-path", str(tmp_path / "missing-llava"), "--image-file", image_file, "--device", "cpu"], "")
    assert res.returncode == 2
    assert "Checkpoint not found" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_pruning_flags_in_the_cli(tiny_checkpoint, image_file):
    ckpt = tiny_checkpoint("v1.5")
    res = run_cli(["--model-path", ckpt["model_path"], "--image-file", image_file, "--device", "cpu",
                   "--temperature", "0", "--max-new-tokens", "3", "--pruning-method", "agile",
                   "--visual-token-num", "64", "--pruning-stats"], "What is this?\n")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("ASSISTANT: ") == 1 and res.stdout.rstrip().endswith("exit...")
    assert "[pruning-stats]" in res.stderr and "erank_kept" in res.stderr and "kept=64" in res.stderr


def test_bad_pruning_flag_is_a_clear_error(tiny_checkpoint, image_file):
    ckpt = tiny_checkpoint("v1.5")
    res = run_cli(["--model-path", ckpt["model_path"], "--image-file", image_file, "--device", "cpu",
                   "--pruning-method", "agile", "--visual-token-num", "-4"], "")
    assert res.returncode == 2 and "--visual-token-num" in res.stderr and "Traceback" not in res.stderr
