"""A bounded load test: N clients send requests to one worker (or through the controller) for a fixed time
and every request must end answered or cleanly refused, none lost or hung: `python -m llava.serve.load_test
--worker-address http://localhost:21002 --concurrency 16 --duration 60 --image-file x.png`.

Prints the requests sent, answered, refused (busy), failed, lost (stream cut) and hung (no end within
--request-timeout), p50/p95 latency and time to first token of the answered ones, and the machine. Exit
status 0 when nothing failed, was lost or hung, else 1.
"""
import base64
import os
import platform
import sys
import threading
import time

from llava.serve.http import OK, OVERLOADED, iter_chunks, open_stream, post_json
from llava.utils import entry_parser

MODULE = "llava.serve.load_test"


def percentile(values, q):
    """The q-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    values = sorted(values)
    pos = (len(values) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def one_request(url, payload, timeout):
    """('answered' | 'refused' | 'failed' | 'lost' | 'hung', latency s, ttft s or None, message)."""
    start = time.perf_counter()
    last = None
    try:
        with open_stream(url, payload, timeout=timeout) as response:
            for data in iter_chunks(response):
                last = data
                if time.perf_counter() - start > timeout:
                    return "hung", time.perf_counter() - start, None, "no end within the time limit"
    except ConnectionError as e:
        kind = "hung" if "time limit" in str(e) else "lost"
        return kind, time.perf_counter() - start, None, str(e)
    except OSError as e:
        return "lost", time.perf_counter() - start, None, str(e)
    elapsed = time.perf_counter() - start
    if last is None:
        return "lost", elapsed, None, "empty answer"
    code = last.get("error_code", OK)
    if code == OK:
        return "answered", elapsed, last.get("ttft_s"), ""
    return ("refused" if code == OVERLOADED else "failed"), elapsed, None, last.get("text", "")


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
        backend = f"torch {torch.__version__}, {device}"
    except ImportError:
        backend = "torch not installed here"
    return f"{os.cpu_count()} cores ({cpu}), {backend}"


def run(url, payload, concurrency, duration, timeout):
    """Run the load; returns the summary dict."""
    results, lock = [], threading.Lock()
    deadline = time.monotonic() + duration

    def client():
        while time.monotonic() < deadline:
            outcome = one_request(url, payload, timeout)
            with lock:
                results.append(outcome)
            if outcome[0] == "refused":
                time.sleep(0.05)  # a refused client asks again shortly, as a person would

    started = time.monotonic()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + timeout + 30)
    wall = time.monotonic() - started
    unfinished = sum(t.is_alive() for t in threads)
    counts = {k: sum(r[0] == k for r in results) for k in ("answered", "refused", "failed", "lost", "hung")}
    counts["hung"] += unfinished
    latencies = [r[1] for r in results if r[0] == "answered"]
    ttfts = [r[2] for r in results if r[0] == "answered" and r[2] is not None]
    failures = sorted({r[3] for r in results if r[0] in ("failed", "lost", "hung")})
    return {"requests": len(results) + unfinished, **counts, "concurrency": concurrency, "duration_s": duration,
            "wall_s": round(wall, 1), "p50_s": percentile(latencies, 50), "p95_s": percentile(latencies, 95),
            "ttft_p50_s": percentile(ttfts, 50), "ttft_p95_s": percentile(ttfts, 95),
            "answers_per_s": round(len(latencies) / wall, 2) if wall else None, "failures": failures[:5],
            "machine": machine()}


def report(summary):
    def s(v):
        return "-" if v is None else f"{v:.3f} s"

    lines = [f"load: {summary['concurrency']} clients for {summary['duration_s']:g} s (wall {summary['wall_s']} s)",
             f"requests {summary['requests']}: answered {summary['answered']}, refused (busy) {summary['refused']}, "
             f"failed {summary['failed']}, lost {summary['lost']}, hung {summary['hung']}",
             f"latency p50 {s(summary['p50_s'])}, p95 {s(summary['p95_s'])}; time to first token p50 "
             f"{s(summary['ttft_p50_s'])}, p95 {s(summary['ttft_p95_s'])}; {summary['answers_per_s']} answers/s",
             f"machine: {summary['machine']}"]
    lines += [f"  failure: {f}" for f in summary["failures"]]
    return "\n".join(lines)


def build_parser():
    parser = entry_parser(MODULE, __doc__)
    parser.add_argument("--worker-address", type=str, default=None, help="a worker's URL (load on that worker)")
    parser.add_argument("--controller-address", type=str, default="http://localhost:21001",
                        help="the controller's URL (used without --worker-address)")
    parser.add_argument("--model-name", type=str, default=None,
                        help="the model to ask (default: the worker's, or the controller's first)")
    parser.add_argument("--concurrency", type=int, default=16, help="clients sending requests at the same time")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds during which clients send requests")
    parser.add_argument("--request-timeout", type=float, default=120.0,
                        help="seconds after which a request without an end counts as hung")
    parser.add_argument("--image-file", type=str, default=None, help="an image sent with every request")
    parser.add_argument("--message", type=str, default="Is there a red star in the image?", help="the question")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="longest answer, in tokens")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.concurrency < 1 or not args.duration > 0 or not args.request_timeout > 0:
        print("error: --concurrency must be at least 1, --duration and --request-timeout > 0", file=sys.stderr)
        return 2
    images, message = [], args.message
    if args.image_file:
        try:
            with open(args.image_file, "rb") as f:
                images = [base64.b64encode(f.read()).decode()]
        except OSError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        message = "<image>\n" + message
    try:
        if args.worker_address:
            base = args.worker_address.rstrip("/")
            model = args.model_name or post_json(base + "/worker_get_status")["model_names"][0]
        else:
            base = args.controller_address.rstrip("/")
            model = args.model_name or post_json(base + "/list_models")["models"][0]
    except (OSError, ValueError, KeyError, IndexError) as e:
        print(f"error: cannot reach a worker to load: {e}", file=sys.stderr)
        return 2
    from llava.conversation import conv_templates

    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message(conv.roles[0], message)
    conv.append_message(conv.roles[1], None)
    payload = {"model": model, "prompt": conv.get_prompt(), "images": images, "temperature": 0,
               "max_new_tokens": args.max_new_tokens, "stop": conv.sep2}
    summary = run(base + "/worker_generate_stream", payload, args.concurrency, args.duration, args.request_timeout)
    print(report(summary))
    return 0 if summary["failed"] == summary["lost"] == summary["hung"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
