"""The serving stack on localhost (CPU): a controller and two testbed workers (unpruned and agile@64) in
their own processes, answers streamed through upstream's HTTP API, errors, concurrency limits, a worker
killed mid-answer, the web UI in a real headless browser (Debian's chromium + chromedriver, selenium), and
a bounded load test (slow). Every process is killed at teardown; every wait has a time limit."""
import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from llava.serve import controller as controller_module
from llava.serve import demo_web, gradio_web_server, load_test, model_worker, register_worker, test_message
from llava.serve.http import (BAD_REQUEST, NO_WORKER, OK, OVERLOADED, WORKER_FAILED, iter_chunks, open_stream,
                              post_json, stream_json)

ROOT = Path(os.path.abspath(__file__)).parents[1]
TESTBED = str(ROOT / "playground" / "llava-testbed")
UNPRUNED, PRUNED = "llava-testbed", "llava-testbed@agile64"
QUESTION = "Is there a red star in the image?\nAnswer the question using a single word or phrase."
PROMPT = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions. USER: <image>\n" + QUESTION + " ASSISTANT:")
START_TIMEOUT = 120  # seconds for a worker to import torch, load the testbed and register


# ---- processes ---------------------------------------------------------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


class Proc:
    def __init__(self, name, args, log_dir):
        self.name, self.log = name, Path(log_dir) / f"{name}.log"
        # a user's environment (transformers' default log level), offline as every test
        env = {k: v for k, v in os.environ.items() if k not in ("TRANSFORMERS_VERBOSITY", "PYTHONWARNINGS")}
        env.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        with open(self.log, "wb") as log:
            self.popen = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)

    def output(self):
        return self.log.read_text(errors="replace")

    def kill(self, sig=signal.SIGTERM):
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)


class Stack:
    """Processes started by a test module; all killed at teardown."""

    def __init__(self, log_dir):
        self.log_dir, self.procs = log_dir, []

    def start(self, name, *args):
        proc = Proc(name, args, self.log_dir)
        self.procs.append(proc)
        return proc

    def worker(self, name, port, controller_url, *extra):
        return self.start(name, "llava.serve.model_worker", "--port", str(port), "--controller-address", controller_url,
                          "--model-path", TESTBED, "--device", "cpu", "--heart-beat-interval", "1", *extra)

    def logs(self):
        return "\n".join(f"--- {p.name} (rc {p.popen.poll()}):\n{p.output()[-3000:]}" for p in self.procs)

    def stop(self):
        for p in reversed(self.procs):
            p.kill()


def wait_until(check, timeout, what, stack=None, procs=()):
    """Poll `check` until it is true; fails at once when one of `procs` has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [p.name for p in procs if p.popen.poll() is not None]
        if dead:
            logs = stack.logs() if stack else "\n".join(p.output() for p in procs)
            raise AssertionError(f"{', '.join(dead)} exited while waiting for {what}\n" + logs)
        try:
            value = check()
            if value:
                return value
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n" + (stack.logs() if stack else ""))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A controller (heartbeat expiry 3 s) and two testbed workers, unpruned and agile@64, registered."""
    s = Stack(tmp_path_factory.mktemp("serve"))
    port = free_port()
    s.controller_url = f"http://localhost:{port}"
    s.controller = s.start("controller", "llava.serve.controller", "--port", str(port), "--heart-beat-expiration", "3")
    s.addresses = {}
    try:
        wait_until(lambda: post_json(s.controller_url + "/list_models") is not None, 30, "the controller", s, s.procs)
        for name, extra in ((UNPRUNED, ()), (PRUNED, ("--pruning-method", "agile", "--visual-token-num", "64"))):
            wport = free_port()
            s.addresses[name] = f"http://localhost:{wport}"
            s.worker(name.replace("@", "-"), wport, s.controller_url, *extra)
        wait_until(lambda: set(post_json(s.controller_url + "/list_models")["models"]) >= {UNPRUNED, PRUNED},
                   START_TIMEOUT, "both workers to register", s, s.procs)
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def image_b64(tmp_path_factory):
    from llava.testbed.world import render, sample_scene
    import random

    scene = sample_scene(random.Random(3), "complex")
    path = tmp_path_factory.mktemp("img") / "scene.png"
    render(scene).save(path)
    return str(path), base64.b64encode(path.read_bytes()).decode()


def payload(model, image, **extra):
    return {"model": model, "prompt": PROMPT, "images": [image], "temperature": 0, "max_new_tokens": 16,
            "stop": "</s>", **extra}


def raw_stream(url, body, timeout=60):
    """(HTTP status, raw body bytes) of a streaming endpoint."""
    response = open_stream(url, body, timeout=timeout)
    with response:
        return getattr(response, "status", None) or response.code, response.read()


# ---- the HTTP API ----------------------------------------------------------------------------------------
def test_models_names_and_status_carry_the_pruning(stack):
    assert post_json(stack.controller_url + "/list_models")["models"] == [UNPRUNED, PRUNED]
    status = post_json(stack.addresses[PRUNED] + "/worker_get_status")
    assert status["model_names"] == [PRUNED] and status["speed"] == 1 and status["queue_length"] == 0
    assert status["pruning"]["method"] == "agile" and status["pruning"]["visual_token_num"] == 64
    assert status["pruning"]["describe"].startswith("agile K=64")
    assert post_json(stack.addresses[UNPRUNED] + "/worker_get_status")["pruning"]["method"] == "none"
    workers = {w["worker_name"]: w for w in post_json(stack.controller_url + "/list_workers")["workers"]}
    assert workers[stack.addresses[PRUNED]]["pruning"]["visual_token_num"] == 64
    assert workers[stack.addresses[UNPRUNED]]["conv_mode"] == "v1"  # the checkpoint's template
    address = post_json(stack.controller_url + "/get_worker_address", {"model": PRUNED})["address"]
    assert address == stack.addresses[PRUNED]
    assert post_json(stack.controller_url + "/get_worker_address", {"model": "nope"})["address"] == ""
    assert post_json(stack.controller_url + "/receive_heart_beat", {"worker_name": "http://x:1", "queue_length": 0}) \
        == {"exist": False}
    aggregate = post_json(stack.controller_url + "/worker_get_status")
    assert aggregate["model_names"] == [UNPRUNED, PRUNED] and aggregate["speed"] == 2
    assert post_json(stack.addresses[UNPRUNED] + "/model_details")["context_length"] > 0
    count = post_json(stack.addresses[UNPRUNED] + "/count_token", {"prompt": PROMPT})
    assert count["error_code"] == 0 and count["count"] > 10
    post_json(stack.controller_url + "/refresh_all_workers")
    assert post_json(stack.controller_url + "/list_models")["models"] == [UNPRUNED, PRUNED]


def test_answers_stream_in_upstreams_format_with_pruning_details(stack, image_b64):
    _, image = image_b64
    for model, visual in ((UNPRUNED, 576), (PRUNED, 64)):
        status, body = raw_stream(stack.controller_url + "/worker_generate_stream",
                                  payload(model, image, pruning_details=True))
        assert status == 200 and body.endswith(b"\0")
        chunks = [json.loads(part) for part in body.split(b"\0") if part]
        assert all(c["error_code"] == 0 and c["text"].startswith(PROMPT) for c in chunks)
        first, last = chunks[0], chunks[-1]
        assert first["ttft_s"] > 0 and last["finished"] and last["model"] == model
        assert last["text"][len(PROMPT):].strip()  # an answer
        details = last["pruning"]
        assert details["visual_tokens"] == visual and details["visual_tokens_unpruned"] == 576
        if model == PRUNED:
            assert len(details["kept_indices"]) == 64 and details["grid"] == 24
            assert details["kept_indices"] == sorted(details["kept_indices"])
            assert details["kept_picture"].startswith("data:image/png;base64,")
        else:
            assert "kept_picture" not in details
    # upstream's clients send no pruning_details: no picture in the stream
    chunks = list(stream_json(stack.addresses[PRUNED] + "/worker_generate_stream", payload(PRUNED, image)))
    assert chunks[-1]["error_code"] == 0 and "pruning" not in chunks[-1]


def test_test_message_against_the_controller(stack, image_b64, capsys):
    path, _ = image_b64
    rc = test_message.main(["--controller-address", stack.controller_url, "--model-name", PRUNED, "--image-file", path,
                            "--message", QUESTION, "--temperature", "0", "--conv-mode", "v1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"worker_addr: {stack.addresses[PRUNED]}" in out and "ASSISTANT:" in out
    assert test_message.main(["--controller-address", stack.controller_url, "--model-name", "nope"]) == 1
    assert "No available workers for nope" in capsys.readouterr().out


def test_bad_requests_get_a_clear_error_not_a_stream(stack, image_b64):
    from PIL import Image

    _, image = image_b64
    huge = io.BytesIO()
    Image.new("1", (7000, 7000)).save(huge, format="PNG")  # 49 M pixels in a few kB
    cases = [
        (dict(payload(UNPRUNED, image), prompt="  "), "empty prompt"),
        (payload(UNPRUNED, "not base64!"), "not valid base64"),
        (payload(UNPRUNED, base64.b64encode(b"hello, no image").decode()), "cannot be read as an image"),
        (payload(UNPRUNED, base64.b64encode(huge.getvalue()).decode()), "too large: 7000x7000"),
        (dict(payload(UNPRUNED, image), images=[image, image]), "must match"),
        (dict(payload(UNPRUNED, image), max_new_tokens="many"), "must be numbers"),
    ]
    for body, message in cases:
        for url in (stack.addresses[UNPRUNED], stack.controller_url):  # direct, and relayed by the controller
            status, raw = raw_stream(url + "/worker_generate_stream", body, timeout=20)
            chunks = [json.loads(p) for p in raw.split(b"\0") if p]
            assert status == 400 and len(chunks) == 1, (message, raw)
            assert chunks[0]["error_code"] == BAD_REQUEST and message in chunks[0]["text"]
    status, raw = raw_stream(stack.controller_url + "/worker_generate_stream", payload("no-such-model", image))
    chunk = json.loads(raw.rstrip(b"\0"))
    assert status == 404 and chunk["error_code"] == NO_WORKER and "no-such-model" in chunk["text"]
    assert UNPRUNED in chunk["text"]  # the models there are


def test_concurrency_limit_queues_then_refuses(stack, image_b64):
    """2 answers at once, 1 waiting, the rest refused at once with a clear message; none hangs."""
    _, image = image_b64
    port = free_port()
    proc = stack.worker("busy", port, stack.controller_url, "--no-register", "--limit-model-concurrency", "2",
                        "--max-queue-length", "1", "--token-delay", "0.5")
    url = f"http://localhost:{port}"
    wait_until(lambda: post_json(url + "/worker_get_status"), START_TIMEOUT, "the busy worker", stack, [proc])
    results = [None] * 6

    def ask(i):
        start = time.perf_counter()
        chunks = list(stream_json(url + "/worker_generate_stream", payload(UNPRUNED, image), timeout=30))
        results[i] = (chunks[-1], time.perf_counter() - start)

    threads = []
    for i in range(6):
        threads.append(threading.Thread(target=ask, args=(i,), daemon=True))
        threads[-1].start()
        time.sleep(0.05)
    for t in threads:
        t.join(40)
    assert not any(t.is_alive() for t in threads), "a request hung"
    codes = sorted(r[0]["error_code"] for r in results)
    assert codes == [OK, OK, OK, OVERLOADED, OVERLOADED, OVERLOADED], results
    refused = [r for r in results if r[0]["error_code"] == OVERLOADED]
    assert all("busy" in r[0]["text"] and r[1] < 2 for r in refused)  # refused at once, not after a wait
    waited = [r[0]["queue_s"] for r in results if r[0]["error_code"] == OK]
    assert max(waited) > 0.3  # the third one waited for a slot
    assert post_json(url + "/worker_get_status")["queue_length"] == 0
    assert list(stream_json(url + "/worker_generate_stream", payload(UNPRUNED, image)))[-1]["error_code"] == OK
    proc.kill()


def test_a_worker_killed_mid_answer_is_dropped_and_the_next_request_goes_to_a_live_one(stack, image_b64):
    _, image = image_b64
    url = stack.controller_url
    # a dispatch to the first worker, so the new one (never dispatched to) gets the next request
    assert list(stream_json(url + "/worker_generate_stream", payload(UNPRUNED, image)))[-1]["error_code"] == OK
    port = free_port()
    doomed = stack.worker("doomed", port, url, "--model-name", UNPRUNED, "--token-delay", "2")
    address = f"http://localhost:{port}"
    wait_until(lambda: any(w["worker_name"] == address for w in post_json(url + "/list_workers")["workers"]),
               START_TIMEOUT, "the second worker of the model", stack, [doomed])
    start = time.monotonic()
    with open_stream(url + "/worker_generate_stream", payload(UNPRUNED, image), timeout=30) as response:
        # the controller answers once the worker has; the worker is now answering (2 s per token), so it
        # dies mid-answer. (Killing it at the first text chunk raced the answer's end: a one-word answer
        # arrives in one piece, right before the final chunk.)
        doomed.kill(signal.SIGKILL)
        chunks = list(iter_chunks(response))
    assert time.monotonic() - start < 20
    assert chunks[-1]["error_code"] == WORKER_FAILED and "stopped while answering" in chunks[-1]["text"]
    assert address not in [w["worker_name"] for w in post_json(url + "/list_workers")["workers"]]
    for _ in range(3):
        assert list(stream_json(url + "/worker_generate_stream", payload(UNPRUNED, image)))[-1]["error_code"] == OK


def test_a_dead_worker_is_skipped_then_dropped_by_heartbeat(stack, image_b64):
    _, image = image_b64
    url = stack.controller_url
    dead = f"http://localhost:{free_port()}"  # nothing listens there
    status = {"model_names": [UNPRUNED], "speed": 1, "queue_length": 0}
    # registered with a shorter queue than the live worker: the controller picks it, cannot reach it, drops
    # it and answers from the live one
    post_json(url + "/register_worker", {"worker_name": dead, "check_heart_beat": True, "worker_status": status})
    assert list(stream_json(url + "/worker_generate_stream", payload(UNPRUNED, image)))[-1]["error_code"] == OK
    assert dead not in [w["worker_name"] for w in post_json(url + "/list_workers")["workers"]]
    # registering by hand: the controller checks that the worker answers
    assert register_worker.main(["--controller-address", url, "--worker-name", dead]) == 1
    assert register_worker.main(["--controller-address", url, "--worker-name", stack.addresses[PRUNED],
                                 "--check-heart-beat"]) == 0
    # a worker that stops sending heartbeats is dropped after the expiry (3 s here)
    post_json(url + "/register_worker", {"worker_name": dead, "check_heart_beat": True,
                                         "worker_status": dict(status, model_names=["ghost"])})
    assert "ghost" in post_json(url + "/list_models")["models"]
    wait_until(lambda: "ghost" not in post_json(url + "/list_models")["models"], 10, "the heartbeat expiry", stack)
    assert post_json(url + "/list_models")["models"] == [UNPRUNED, PRUNED]  # live workers keep beating


# ---- arguments --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--pruning-method", "agile"], "--visual-token-num is required"),
    (["--visual-token-num", "64"], "without a pruning method"),
    (["--pruning-method", "agile", "--visual-token-num", "0"], "--visual-token-num must be a positive integer"),
    (["--limit-model-concurrency", "0"], "--limit-model-concurrency must be at least 1"),
])
def test_worker_settings_errors_exit_2_before_loading(argv, message, capsys):
    assert model_worker.main(["--model-path", TESTBED, "--device", "cpu", "--no-register", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("flag, message", [("--share", "--share needs"), ("--moderate", "--moderate calls")])
def test_web_server_refuses_share_and_moderate(flag, message, capsys):
    assert gradio_web_server.main([flag]) == 2
    assert message in capsys.readouterr().err


def test_entry_points_are_built_like_the_others():
    for module in (controller_module, model_worker, gradio_web_server, test_message, load_test, demo_web,
                   register_worker):
        parser = module.build_parser()
        name = module.__name__
        assert parser.prog == f"python -m {name}" and parser.description.endswith(".")
        assert all((a.help or "").strip() for a in parser._actions)
        parser.format_help()
    upstream = {"--host", "--port", "--controller-url", "--concurrency-count", "--model-list-mode", "--share",
                "--moderate", "--embed"}
    assert upstream <= {s for a in gradio_web_server.build_parser()._actions for s in a.option_strings}
    worker_flags = {s for a in model_worker.build_parser()._actions for s in a.option_strings}
    assert {"--worker-address", "--controller-address", "--model-path", "--model-base", "--model-name", "--device",
            "--multi-modal", "--limit-model-concurrency", "--stream-interval", "--no-register", "--load-8bit",
            "--load-4bit", "--use-flash-attn", "--pruning-method", "--visual-token-num"} <= worker_flags
    # upstream's README abbreviations still parse
    args = model_worker.build_parser().parse_args(["--controller", "http://c:1", "--worker", "http://w:2"])
    assert (args.controller_address, args.worker_address) == ("http://c:1", "http://w:2")


# ---- the web UI -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def web(stack):
    port = free_port()
    stack.start("web", "llava.serve.gradio_web_server", "--host", "localhost", "--port", str(port),
                "--controller-url", stack.controller_url)
    url = f"http://localhost:{port}"
    wait_until(lambda: urllib.request.urlopen(url + "/api/models", timeout=2).status == 200, 60, "the web server",
               stack, stack.procs[-1:])
    return url


def web_chat(url, body):
    request = urllib.request.Request(url + "/api/chat", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, [json.loads(x) for x in response.read().splitlines() if x.strip()]
    except urllib.error.HTTPError as e:
        return e.code, [json.loads(x) for x in e.read().splitlines() if x.strip()]


def test_web_api_answers_and_errors(web, image_b64):
    _, image = image_b64
    data_url = "data:image/png;base64," + image
    models = json.loads(urllib.request.urlopen(web + "/api/models", timeout=10).read())
    assert models["models"] == [UNPRUNED, PRUNED]
    status, lines = web_chat(web, {"model": PRUNED, "text": QUESTION, "image": data_url, "temperature": 0})
    assert status == 200 and lines[-1]["error_code"] == 0 and lines[-1]["text"]
    assert not lines[-1]["text"].startswith("A chat")  # the answer alone, without the prompt
    assert lines[-1]["pruning"]["visual_tokens"] == 64 and lines[-1]["pruning"]["kept_picture"]
    # a second turn about the same image (the history goes back with it)
    status, lines = web_chat(web, {"model": UNPRUNED, "text": "What colour is the star?", "image": data_url,
                                   "history": [[QUESTION, "Yes"]], "temperature": 0})
    assert status == 200 and lines[-1]["error_code"] == 0
    for body, code, message in [
        ({"model": UNPRUNED, "text": "   ", "image": data_url}, BAD_REQUEST, "empty question"),
        ({"model": "gpt-5", "text": "hi"}, NO_WORKER, "unknown model 'gpt-5'"),
        ({"model": UNPRUNED, "text": "hi", "image": "data:image/png;base64,aGVsbG8="}, BAD_REQUEST, "cannot be read"),
        ({"model": UNPRUNED, "text": "hi", "image": "data:image/png;base64," + "A" * (17 * 2**20 * 4 // 3)},
         BAD_REQUEST, "too large"),
    ]:
        status, lines = web_chat(web, body)
        assert status in (400, 404) and len(lines) == 1, lines
        assert lines[0]["error_code"] == code and message in lines[0]["text"]


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("LLAVA_TEST_NO_BROWSER"):
            pytest.skip("no chromium/chromedriver (LLAVA_TEST_NO_BROWSER set)")
        pytest.fail("the browser test needs Debian's chromium and chromium-driver: run `make browser` (apt-get)")
    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,800",
                "--disable-extensions", "--no-first-run", "--disable-background-networking"):
        options.add_argument(arg)
    options.binary_location = chromium
    return webdriver.Chrome(options=options, service=Service(driver))


def test_compare_view_in_a_real_browser(web, image_b64, stack):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    path, _ = image_b64
    driver = browser()
    try:
        driver.set_page_load_timeout(30)
        driver.get(web)
        find = lambda i: driver.find_element(By.ID, i)  # noqa: E731
        WebDriverWait(driver, 20).until(lambda d: find("cmp-model-b").get_attribute("value") == PRUNED)
        assert find("cmp-model-a").get_attribute("value") == UNPRUNED  # unpruned against pruned by default
        find("cmp-go").click()  # no question yet: a clear message, nothing sent
        WebDriverWait(driver, 5).until(lambda d: find("cmp-error").is_displayed())
        assert "Type a question" in find("cmp-error").text
        find("cmp-image").send_keys(path)
        WebDriverWait(driver, 10).until(lambda d: find("cmp-preview").get_attribute("src"))
        find("cmp-question").send_keys(QUESTION)
        find("cmp-go").click()
        WebDriverWait(driver, 60).until(
            lambda d: all(find(f"cmp-card-{s}").get_attribute("data-state") in ("done", "error") for s in "ab"))
        for side, model in (("a", UNPRUNED), ("b", PRUNED)):
            assert find(f"cmp-card-{side}").get_attribute("data-state") == "done", find(f"cmp-answer-{side}").text
            assert find(f"cmp-name-{side}").text == model
            assert find(f"cmp-answer-{side}").text.strip() not in ("", "…")
            assert "time to first token" in find(f"cmp-stats-{side}").text
        assert "visual tokens fed to the LLM 576 of 576" in find("cmp-stats-a").text
        assert "visual tokens fed to the LLM 64 of 576" in find("cmp-stats-b").text
        kept = find("cmp-kept-b")
        assert kept.is_displayed() and kept.get_attribute("src").startswith("data:image/png;base64,")
        assert driver.execute_script("return arguments[0].naturalWidth", kept) == 336
        assert not find("cmp-kept-a").is_displayed()  # unpruned: no picture
        assert "64 of 576" in find("cmp-kept-caption-b").text
        if os.environ.get("LLAVA_SCREENSHOT"):  # how docs/compare_view.png is made
            driver.save_screenshot(os.environ["LLAVA_SCREENSHOT"])
        # the chat tab: a question about the image, streamed into the conversation
        find("tab-chat").click()
        find("chat-image").send_keys(path)
        WebDriverWait(driver, 10).until(lambda d: find("chat-preview").get_attribute("src"))
        find("chat-question").send_keys(QUESTION)
        find("chat-send").click()
        WebDriverWait(driver, 60).until(lambda d: "time to first token" in find("chat-stats").text)
        assert len(driver.find_elements(By.CSS_SELECTOR, "#chat-log .msg.bot")) == 1
    finally:
        driver.quit()


def test_server_output_is_clean(stack, web):
    """What the servers printed so far (start-up, answers, errors, a killed worker): our one-line messages only,
    no library warnings, deprecation notices, loading bars, access logs or tracebacks."""
    import re

    noise = re.compile(r"warning|deprecat|loading weights|traceback|\[transformers\]|HTTP/1.1|INFO:", re.IGNORECASE)
    for proc in stack.procs:
        lines = [line for line in proc.output().splitlines() if line.strip()]
        assert lines and all(line.startswith("[llava.serve.") for line in lines), (proc.name, lines)
        assert not [line for line in lines if noise.search(line)], proc.name


# ---- load --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_bounded_load_nothing_lost_or_hung(stack, image_b64):
    """16 clients against one worker (4 answers at once, 8 waiting) for 20 s: every request answered or
    cleanly refused."""
    path, _ = image_b64
    port = free_port()
    proc = stack.worker("load", port, stack.controller_url, "--no-register", "--limit-model-concurrency", "4",
                        "--max-queue-length", "8")
    url = f"http://localhost:{port}"
    wait_until(lambda: post_json(url + "/worker_get_status"), START_TIMEOUT, "the load worker", stack, [proc])
    image = base64.b64encode(Path(path).read_bytes()).decode()
    summary = load_test.run(url + "/worker_generate_stream", payload(UNPRUNED, image), concurrency=16, duration=20,
                            timeout=60)
    print(load_test.report(summary))
    assert summary["answered"] > 20 and summary["refused"] > 0
    assert summary["failed"] == summary["lost"] == summary["hung"] == 0, summary
    assert summary["requests"] == summary["answered"] + summary["refused"]
    assert post_json(url + "/worker_get_status")["queue_length"] == 0
    proc.kill()


@pytest.mark.slow
def test_demo_web_starts_the_stack_and_stops_it_all(tmp_path):
    """`make demo-web`: controller, two workers and the UI with one command; Ctrl-C leaves nothing behind."""
    ports = [free_port() for _ in range(4)]
    proc = Proc("demo-web", ["llava.serve.demo_web", "--port", str(ports[0]), "--controller-port", str(ports[1]),
                             "--worker-ports", f"{ports[2]},{ports[3]}"], tmp_path)
    try:
        url = f"http://localhost:{ports[0]}"
        wait_until(lambda: json.loads(urllib.request.urlopen(url + "/api/models", timeout=2).read())["models"]
                   == [UNPRUNED, PRUNED], START_TIMEOUT, "the demo's web UI", procs=[proc])
        assert "open http://localhost:" in proc.output()
        os.kill(proc.popen.pid, signal.SIGINT)
        assert proc.popen.wait(20) == 0
        for port in ports:  # every part stopped: nothing listens any more
            with pytest.raises(OSError):
                socket.create_connection(("localhost", port), timeout=1).close()
    finally:
        proc.kill()
