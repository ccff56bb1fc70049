"""Send one message to a model worker and print the streamed answer (a smoke test of a running stack):
`python -m llava.serve.test_message --model-name llava-testbed --message "What is shown?" --image-file x.png`.

Without --worker-address the controller says which worker serves --model-name. The exit status is 0 for an
answer, 1 when no worker serves the model or the answer ends with an error (its message is printed).
"""
import base64
import sys

from llava.serve.http import OK, post_json, stream_json
from llava.utils import entry_parser

MODULE = "llava.serve.test_message"


def build_parser():
    parser = entry_parser(MODULE, __doc__)
    parser.add_argument("--controller-address", type=str, default="http://localhost:21001", help="the controller's URL")
    parser.add_argument("--worker-address", type=str, default=None, help="a worker's URL (skips the controller)")
    parser.add_argument("--model-name", type=str, default="facebook/opt-350m", help="the model to ask")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="longest answer, in tokens")
    parser.add_argument("--message", type=str, default="Tell me a story with more than 1000 words.",
                        help="the message to send")
    parser.add_argument("--image-file", type=str, default=None,
                        help="an image sent with the message (an <image> token is put before the message)")
    parser.add_argument("--conv-mode", type=str, default="vicuna_v1", help="template the prompt is written in")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature; 0 answers greedily")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from llava.conversation import conv_templates

    if args.conv_mode not in conv_templates:
        print(f"error: --conv-mode: unknown template {args.conv_mode!r}", file=sys.stderr)
        return 2
    images = []
    message = args.message
    if args.image_file:
        from llava.mm_utils import load_image

        try:
            load_image(args.image_file)
            with open(args.image_file, "rb") as f:
                images = [base64.b64encode(f.read()).decode()]
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        message = "<image>\n" + message
    try:
        if args.worker_address:
            worker = args.worker_address
        else:
            controller = args.controller_address.rstrip("/")
            post_json(controller + "/refresh_all_workers", timeout=30)
            models = post_json(controller + "/list_models")["models"]
            print(f"Models: {models}")
            worker = post_json(controller + "/get_worker_address", {"model": args.model_name})["address"]
            print(f"worker_addr: {worker}")
        if not worker:
            print(f"No available workers for {args.model_name}")
            return 1
        conv = conv_templates[args.conv_mode].copy()
        conv.append_message(conv.roles[0], message)
        conv.append_message(conv.roles[1], None)
        prompt = conv.get_prompt()
        payload = {"model": args.model_name, "prompt": prompt, "max_new_tokens": args.max_new_tokens,
                   "temperature": args.temperature, "stop": conv.sep2 or conv.sep, "images": images}
        print(prompt, end="", flush=True)
        shown = len(prompt)
        for data in stream_json(worker.rstrip("/") + "/worker_generate_stream", payload, timeout=120):
            if data.get("error_code", OK) != OK:
                print(f"\nerror: {data.get('text')}", file=sys.stderr)
                return 1
            text = data.get("text", "")
            print(text[shown:], end="", flush=True)
            shown = max(shown, len(text))
        print("")
    except (OSError, ValueError, KeyError) as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
