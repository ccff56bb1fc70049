"""Register a running model worker with a controller by hand: `python -m llava.serve.register_worker
--controller-address http://localhost:21001 --worker-name http://localhost:21002`.

The controller asks the worker for its status; the exit status is 0 when it took the worker, 1 otherwise.
"""
import sys

from llava.serve.http import post_json
from llava.utils import entry_parser

MODULE = "llava.serve.register_worker"


def build_parser():
    parser = entry_parser(MODULE, __doc__)
    parser.add_argument("--controller-address", type=str, default="http://localhost:21001", help="the controller's URL")
    parser.add_argument("--worker-name", type=str, required=True, help="the worker's URL")
    parser.add_argument("--check-heart-beat", action="store_true",
                        help="drop the worker when it stops sending heartbeats")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        answer = post_json(args.controller_address.rstrip("/") + "/register_worker",
                           {"worker_name": args.worker_name, "check_heart_beat": args.check_heart_beat}, timeout=15)
    except OSError as e:
        print(f"error: cannot reach the controller at {args.controller_address}: {getattr(e, 'reason', e)}",
              file=sys.stderr)
        return 1
    if not answer.get("ok"):
        print(f"error: the controller could not reach the worker {args.worker_name}", file=sys.stderr)
        return 1
    print(f"registered {args.worker_name} with {args.controller_address}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
