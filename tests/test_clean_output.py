"""What a person reads is clean: the CLI (piped and on a terminal), an eval generator and training print no
library warnings, deprecation notices, weight-loading progress bars or tracebacks; Ctrl-C ends with one
line. The commands run as a user runs them: in a subprocess, with transformers' default log level."""
import fcntl
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import termios
import time

import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTBED = os.path.join(ROOT, "playground", "llava-testbed")
# what the issue saw: warnings, deprecation notices, loading bars, tracebacks, transformers' log lines (the
# every-turn "Both `max_new_tokens` and `max_length` seem to have been set" among them)
NOISE = re.compile(r"warning|deprecat|loading weights|traceback|\[transformers\]|seem to have been set", re.IGNORECASE)


def user_env():
    """The environment a user has: no test-only log level, offline as every test."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRANSFORMERS_VERBOSITY", "PYTHONWARNINGS")}
    env["HF_HUB_OFFLINE"] = "1"
    return env


def noise(text):
    return [line for line in text.splitlines() if NOISE.search(line)]


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "blue.png"
    Image.new("RGB", (336, 336), (30, 120, 200)).save(path)
    return str(path)


def cli(args, stdin):
    return subprocess.run([sys.executable, "-m", "llava.serve.cli", "--model-path", TESTBED, "--device", "cpu", *args],
                          input=stdin, capture_output=True, text=True, timeout=300, env=user_env(), cwd=ROOT)


def test_cli_piped_prints_prompts_and_answers_only(picture):
    out = cli(["--image-file", picture, "--max-new-tokens", "4"], "What colour is the square?\n")
    assert out.returncode == 0, out.stderr
    assert noise(out.stdout + out.stderr) == []
    assert out.stdout.count("ASSISTANT:") == 1 and out.stdout.rstrip().endswith("exit...")


def test_cli_template_override_is_said_on_stderr_not_stdout(picture):
    out = cli(["--image-file", picture, "--conv-mode", "llava_v0", "--max-new-tokens", "4"], "Hello?\n")
    assert out.returncode == 0, out.stderr
    assert noise(out.stdout + out.stderr) == []
    assert "llava_v0" not in out.stdout and "Human:" in out.stdout  # stdout: the conversation alone
    assert "template llava_v0 [--conv-mode]" in out.stderr


def _default_sigint():
    """In a child: SIGINT back to its default. A suite started as a background job (`nohup make test &`)
    inherits SIGINT ignored, and Python then never raises KeyboardInterrupt: the tests below send one."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Terminal:
    """The CLI on a pseudo-terminal (stdin and stdout), standard error to a pipe."""

    def __init__(self, args):
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, "-m", "llava.serve.cli", "--model-path", TESTBED,
                                      "--device", "cpu", *args], stdin=slave, stdout=slave, stderr=subprocess.PIPE,
                                     env=dict(user_env(), TERM="xterm"), cwd=ROOT, preexec_fn=self._own_terminal)
        os.close(slave)
        self.screen, self.pos = b"", 0

    @staticmethod
    def _own_terminal():
        """In the child: a new session whose controlling terminal is the pty, so Ctrl-C sends SIGINT."""
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        _default_sigint()

    def read_until(self, marker, timeout=240):
        """Wait for `marker` after what the previous call found; returns the whole screen so far."""
        end = time.time() + timeout
        while self.screen.find(marker.encode(), self.pos) < 0:
            if time.time() > end:
                raise AssertionError(f"no {marker!r} on the terminal; got {self.screen[-500:]!r}")
            ready, _, _ = select.select([self.master], [], [], 1)
            if ready:
                try:
                    self.screen += os.read(self.master, 4096)
                except OSError:  # the process closed the terminal
                    raise AssertionError(f"no {marker!r} on the terminal; got {self.screen[-500:]!r}") from None
        self.pos = self.screen.find(marker.encode(), self.pos) + len(marker)
        return self.screen.decode(errors="replace")

    def type(self, text):
        os.write(self.master, text.encode())

    def finish(self, timeout=120):
        """(exit status, stderr); a CLI still running after `timeout` s is killed and the test fails."""
        try:
            _, stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise AssertionError(f"the CLI did not exit; terminal: {self.screen[-500:]!r}") from None
        finally:
            os.close(self.master)
        return self.proc.returncode, stderr.decode()


def test_cli_on_a_terminal_edits_lines_and_keeps_its_prompt_with_stderr_redirected(picture):
    term = Terminal(["--image-file", picture, "--max-new-tokens", "2", "--debug"])
    term.read_until("USER:")  # the prompt is on the terminal although stderr is a pipe
    term.type("What colr\x1b[Du\x1b[C is it?\r")  # left arrow, insert "u", right arrow
    term.read_until("'outputs'")  # --debug prints the prompt and the answer
    term.read_until("USER:")
    term.type("\r")
    screen = term.read_until("exit...")
    code, stderr = term.finish()
    assert code == 0, stderr
    assert "What colur is it? ASSISTANT:" in screen  # the arrows moved the cursor, none of them in the question
    assert noise(screen + stderr) == []


def test_cli_ctrl_c_is_one_line(picture):
    term = Terminal(["--image-file", picture])
    term.read_until("USER:")
    time.sleep(1)  # a person's pace: let input() reach its wait (a signal just before it is not seen by CPython)
    term.type("\x03")  # Ctrl-C at the prompt
    code, stderr = term.finish()
    screen = term.screen.decode(errors="replace")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 130 and lines[0].startswith("run: ") and lines[1:] == ["interrupted"]
    assert "Traceback" not in screen and "KeyboardInterrupt" not in screen


def test_eval_generator_on_the_testbed_is_quiet(tmp_path, picture):
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "image": os.path.basename(picture),
                                             "text": "What colour is the square?"}) + "\n" for i in range(3)))
    answers = tmp_path / "a.jsonl"
    out = subprocess.run([sys.executable, "-m", "llava.eval.model_vqa_loader", "--model-path", TESTBED,
                          "--question-file", str(questions), "--image-folder", os.path.dirname(picture),
                          "--answers-file", str(answers), "--device", "cpu", "--temperature", "0",
                          "--max-new-tokens", "3", "--conv-mode", "vicuna_v1"],
                         capture_output=True, text=True, timeout=300, env=user_env(), cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert noise(out.stdout + out.stderr) == []
    assert len(answers.read_text().splitlines()) == 3


def test_eval_ctrl_c_says_what_was_kept(tmp_path, capsys):
    from llava.eval.common import AnswerFile, answer_record, run_main
    from llava.utils import entry_parser

    path = tmp_path / "a.jsonl"

    def interrupted(args):
        with AnswerFile(str(path)) as answers:
            for i in range(2):
                answers.write(answer_record(i, "q", "a", "m"))
            raise KeyboardInterrupt

    assert run_main(interrupted, [], entry_parser("llava.eval.x", "Test.")) == 130
    err = capsys.readouterr().err
    assert f"interrupted: 2 answers kept in {path}; run the same command again to resume" in err
    assert len(path.read_text().splitlines()) == 2


def test_eval_generator_ctrl_c_mid_run_keeps_answers_and_resumes(tmp_path, picture):
    """A real SIGINT while answering: one line on stderr, no traceback, and a re-run completes the file."""
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "image": os.path.basename(picture),
                                             "text": "Describe it."}) + "\n" for i in range(40)))
    answers = tmp_path / "a.jsonl"
    cmd = [sys.executable, "-m", "llava.eval.model_vqa_loader", "--model-path", TESTBED,
           "--question-file", str(questions), "--image-folder", os.path.dirname(picture),
           "--answers-file", str(answers), "--device", "cpu", "--temperature", "0", "--max-new-tokens", "8"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=user_env(), cwd=ROOT,
                            preexec_fn=_default_sigint)
    end = time.time() + 240
    while not (answers.exists() and answers.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.time() < end, proc.communicate()[1]
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and re.search(r"interrupted: \d+ answers kept in .*resume", err), err
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=user_env(), cwd=ROOT)
    assert again.returncode == 0, again.stderr
    assert sorted(json.loads(x)["question_id"] for x in answers.read_text().splitlines()) == list(range(40))


@pytest.fixture
def load_messages(caplog, capfd):
    """What loading says: transformers' log records at its default level (warnings, as a user has them) and
    what reaches stderr (progress bars). Call it to read and clear."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()

    def read():
        text = caplog.text + capfd.readouterr().err
        caplog.clear()
        return text

    yield read
    hf_logging.set_verbosity(level)


LOAD_NOISE = re.compile(r"LOAD REPORT|MISSING|UNEXPECTED|newly initialized|Loading weights")


def test_loading_trained_outputs_reports_nothing_untrue(tiny_checkpoint, tmp_path, load_messages):
    """A checkpoint saved with the CLIP tower inside (as training saves one), a projector-only and a LoRA
    output load without a report: the tower keys are not used (as upstream), the projector comes next."""
    from safetensors.torch import load_file

    from llava.model.builder import load_pretrained_model

    ckpt = tiny_checkpoint("v1.5")
    tokenizer, model, _, _ = load_pretrained_model(ckpt["model_path"], None, "llava-v1.5", device="cpu")
    saved = tmp_path / "llava-stage2-output"
    model.save_pretrained(saved)
    tokenizer.save_pretrained(saved)
    assert any(k.startswith("model.vision_tower.") for k in load_file(saved / "model.safetensors"))
    load_messages()
    load_pretrained_model(str(saved), None, "llava-stage2-output", device="cpu")
    for kind in ("projector", "lora"):
        ckpt = tiny_checkpoint(kind)
        load_pretrained_model(ckpt["model_path"], ckpt["model_base"], f"llava-{kind}", device="cpu")
    said = load_messages()
    assert not LOAD_NOISE.search(said), said


def test_a_weight_that_is_really_missing_is_still_reported(tiny_checkpoint, tmp_path, load_messages):
    from safetensors.torch import load_file, save_file

    from llava.model.builder import load_pretrained_model

    ckpt = tiny_checkpoint("v1.5")
    tokenizer, model, _, _ = load_pretrained_model(ckpt["model_path"], None, "llava-v1.5", device="cpu")
    broken = tmp_path / "llava-no-projector"
    model.save_pretrained(broken)
    tokenizer.save_pretrained(broken)
    state = load_file(broken / "model.safetensors")
    save_file({k: v for k, v in state.items() if "mm_projector" not in k}, broken / "model.safetensors",
              metadata={"format": "pt"})
    load_messages()
    load_pretrained_model(str(broken), None, "llava-no-projector", device="cpu")
    said = load_messages()
    assert "LOAD REPORT" in said and "mm_projector" in said and "MISSING" in said
