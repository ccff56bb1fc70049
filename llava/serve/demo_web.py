"""`make demo-web`: the serving stack on localhost with one command: a controller, two testbed workers
(unpruned, and pruned with --pruning-method/--visual-token-num) and the web UI; Ctrl-C stops them all.

Each part is the ordinary entry point (llava.serve.controller, llava.serve.model_worker,
llava.serve.gradio_web_server) in its own process, started as the README's serving section shows.
"""
import os
import signal
import subprocess
import sys
import time

from llava.serve.http import post_json, say
from llava.utils import entry_parser

MODULE = "llava.serve.demo_web"
MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "playground",
                     "llava-testbed")


def build_parser():
    parser = entry_parser(MODULE, __doc__)
    parser.add_argument("--model-path", default=MODEL, help="the checkpoint both workers serve")
    parser.add_argument("--device", default="cpu", help="where the workers run the model")
    parser.add_argument("--port", type=int, default=7860, help="the web UI's port")
    parser.add_argument("--controller-port", type=int, default=21001, help="the controller's port")
    parser.add_argument("--worker-ports", default="21002,21003", help="the two workers' ports")
    parser.add_argument("--pruning-method", default="agile", help="the pruned worker's method")
    parser.add_argument("--visual-token-num", type=int, default=64, help="the pruned worker's K")
    parser.add_argument("--token-delay", type=float, default=0.0,
                        help="seconds after each token (the testbed answers in a blink; 0.1 shows the streaming)")
    parser.add_argument("--start-timeout", type=float, default=180.0, help="seconds to wait for the workers")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        ports = [int(p) for p in args.worker_ports.split(",")]
        assert len(ports) == 2
    except (ValueError, AssertionError):
        print("error: --worker-ports takes two ports, e.g. 21002,21003", file=sys.stderr)
        return 2
    controller = f"http://localhost:{args.controller_port}"
    common = ["--controller-address", controller, "--model-path", args.model_path, "--device", args.device,
              "--token-delay", str(args.token_delay)]
    commands = [
        ["llava.serve.controller", "--port", str(args.controller_port)],
        ["llava.serve.model_worker", "--port", str(ports[0]), *common],
        ["llava.serve.model_worker", "--port", str(ports[1]), *common, "--pruning-method", args.pruning_method,
         "--visual-token-num", str(args.visual_token_num)],
    ]
    procs = []

    def start(cmd):
        procs.append(subprocess.Popen([sys.executable, "-m", *cmd], start_new_session=True))

    def stop():
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, also where it was inherited ignored
    try:
        for cmd in commands:
            start(cmd)
        deadline = time.monotonic() + args.start_timeout
        models = []
        while len(models) < 2:
            if any(p.poll() is not None for p in procs):
                print("error: a part of the stack exited (see its message above)", file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                print(f"error: the workers did not register within {args.start_timeout:g} s", file=sys.stderr)
                return 1
            time.sleep(0.5)
            try:
                models = post_json(controller + "/list_models")["models"]
            except (OSError, ValueError, KeyError):
                pass
        start(["llava.serve.gradio_web_server", "--host", "localhost", "--port", str(args.port),
               "--controller-url", controller])
        say(MODULE, f"serving {', '.join(models)}: open http://localhost:{args.port} (Ctrl-C stops everything)")
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("error: a part of the stack exited (see its message above)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 0
    finally:
        stop()


if __name__ == "__main__":
    sys.exit(main())
