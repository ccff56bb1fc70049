"""The web UI: chat about an image with any model the controller knows, or compare two models (e.g.
unpruned and agile@64) on the same image and question side by side: `python -m llava.serve.gradio_web_server
--controller-url http://localhost:21001 --port 7860`.

Upstream's module name and arguments; the page is our own small HTML/JS page served by starlette (no
Gradio: nothing is fetched from the internet, no analytics). Answers stream from the workers through the
controller; the compare view shows, per model, the time to first token, the visual tokens fed to the LLM
and which patches pruning kept.
"""
import base64
import io
import json
import os
import sys
import threading

from llava.serve.http import (BAD_REQUEST, HTTP_STATUS, NO_WORKER, OK, OVERLOADED, WORKER_FAILED, ServeError,
                              iter_chunks, missing_server_deps, open_stream, post_json, run_server, say)
from llava.utils import entry_parser

MODULE = "llava.serve.gradio_web_server"
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
IMAGE_MODES = ("Crop", "Resize", "Pad", "Default")
MAX_TEXT, MAX_TEXT_WITH_IMAGE = 1536, 1200  # upstream's caps


def template_for(model_name, reported=None):
    """The conversation template: the one the worker reports (its checkpoint's), else upstream's web-UI
    rules on the model name (with its two unregistered names mapped to registered ones)."""
    from llava.conversation import conv_templates

    if reported in conv_templates:
        return reported
    name = model_name.lower()
    if "llava" in name:
        if "llama-2" in name:
            return "llava_llama_2"
        if "mistral" in name or "mixtral" in name:
            return "chatml_direct" if "hermes" in name else "mistral_instruct"
        if "llava-v1.6-34b" in name:
            return "chatml_direct"
        if "v1" in name:
            return "v1_mmtag" if "mmtag" in name or ("plain" in name and "finetune" not in name) else "llava_v1"
        if "mpt" in name:
            return "mpt"
        return "v0_mmtag" if "mmtag" in name else "llava_v0"
    if "mpt" in name:
        return "mpt"
    return "llama_2" if "llama-2" in name else "vicuna_v1"


def decode_data_url(data, max_bytes):
    """PIL image (RGB) from a data URL or bare base64; ServeError naming the problem otherwise."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(data, str):
        raise ServeError(BAD_REQUEST, "the image must be sent as a data URL")
    if data.startswith("data:") and "," in data:
        data = data.split(",", 1)[1]
    if len(data) * 3 // 4 > max_bytes:
        raise ServeError(BAD_REQUEST, f"the image is too large (over {max_bytes // 2**20} MiB)")
    try:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as image:
            return image.convert("RGB")
    except (ValueError, UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise ServeError(BAD_REQUEST, f"the image cannot be read: {e}") from None


class WebServer:
    def __init__(self, args):
        self.args = args
        self.controller = args.controller_url.rstrip("/")
        self.slots = threading.BoundedSemaphore(args.concurrency_count)
        self._models = None
        self._workers = []
        self.lock = threading.Lock()

    # ---- models ----------------------------------------------------------------------------------------
    def models(self, refresh=False):
        """(model names, worker details) from the controller; once mode asks again only while it has none."""
        with self.lock:
            cached = self._models
        if cached and self.args.model_list_mode == "once" and not refresh:
            return cached, self._workers
        try:
            post_json(self.controller + "/refresh_all_workers", timeout=30)
            models = post_json(self.controller + "/list_models")["models"]
            workers = post_json(self.controller + "/list_workers")["workers"]
        except (OSError, ValueError, KeyError, TypeError):
            return cached or [], self._workers
        with self.lock:
            self._models, self._workers = models, workers
        return models, workers

    def worker_details(self, model):
        _, workers = self.models()
        return next((w for w in workers if model in w.get("model_names", [])), {})

    # ---- one question ----------------------------------------------------------------------------------
    def prepare(self, body):
        """(model, prompt, worker payload) for a chat request, or a ServeError."""
        from llava.conversation import SeparatorStyle, conv_templates

        if not isinstance(body, dict):
            raise ServeError(BAD_REQUEST, "the request must be a JSON object")
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ServeError(BAD_REQUEST, "empty question: type a question first")
        model = body.get("model")
        models, _ = self.models()
        if model not in models:
            models, _ = self.models(refresh=True)
        if model not in models:
            raise ServeError(NO_WORKER, f"unknown model {model!r}; models served now: {', '.join(models) or 'none'}")
        mode = body.get("image_process_mode") or "Default"
        if mode not in IMAGE_MODES:
            raise ServeError(BAD_REQUEST, f"image_process_mode must be one of {', '.join(IMAGE_MODES)}")
        image = body.get("image")
        image = decode_data_url(image, self.args.max_image_bytes) if image else None
        try:
            temperature = float(body.get("temperature", 0.2))
            top_p = float(body.get("top_p", 0.7))
            max_new_tokens = min(int(body.get("max_new_tokens", 512)), 1536)
        except (TypeError, ValueError):
            raise ServeError(BAD_REQUEST, "temperature and top_p must be numbers, max_new_tokens an integer") from None
        history = body.get("history") or []
        if not isinstance(history, list) or not all(isinstance(t, list) and len(t) == 2 for t in history):
            raise ServeError(BAD_REQUEST, "history must be a list of [question, answer] pairs")
        conv = conv_templates[template_for(model, self.worker_details(model).get("conv_mode"))].copy()
        turns = [[str(q), str(a)] for q, a in history] + [[text, None]]
        for i, (question, answer) in enumerate(turns):
            if i == 0 and image is not None:
                question = question[:MAX_TEXT_WITH_IMAGE]
                if "<image>" not in question:
                    question = question + "\n<image>"
                question = (question, image, mode)
            else:
                question = question[:MAX_TEXT].replace("<image>", "")
            conv.append_message(conv.roles[0], question)
            conv.append_message(conv.roles[1], answer)
        prompt = conv.get_prompt()
        stop = conv.sep if conv.sep_style in (SeparatorStyle.SINGLE, SeparatorStyle.MPT) else conv.sep2
        payload = {"model": model, "prompt": prompt, "temperature": temperature, "top_p": top_p,
                   "max_new_tokens": max_new_tokens, "stop": stop, "images": conv.get_images(),
                   "pruning_details": True}
        return model, prompt, payload

    def answer(self, prompt, payload):
        """NDJSON lines for the browser: {"text": the answer so far, "error_code", ...the worker's extras}."""
        if not self.slots.acquire(timeout=self.args.queue_timeout):
            yield line({"text": "the server is busy: please try again in a moment", "error_code": OVERLOADED})
            return
        try:
            response = open_stream(self.controller + "/worker_generate_stream", payload, timeout=120)
            with response:
                for data in iter_chunks(response):
                    if data.get("error_code", OK) != OK:
                        yield line(data)
                        return
                    data["text"] = data.get("text", "")[len(prompt):].strip()
                    yield line(data)
        except ConnectionError as e:
            yield line({"text": f"the answer was cut off ({e}); please ask again", "error_code": WORKER_FAILED})
        except OSError as e:
            yield line({"text": f"the controller at {self.controller} cannot be reached ({getattr(e, 'reason', e)})",
                        "error_code": WORKER_FAILED})
        finally:
            self.slots.release()


def line(obj):
    return json.dumps(obj).encode() + b"\n"


def build_app(server):
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def index(request):
        return FileResponse(os.path.join(STATIC, "index.html"), media_type="text/html")

    async def config(request):
        return JSONResponse({"embed": server.args.embed, "image_modes": list(IMAGE_MODES)})

    async def models(request):
        names, workers = await run_in_threadpool(server.models, server.args.model_list_mode == "reload")
        return JSONResponse({"models": names, "workers": [
            {k: w.get(k) for k in ("model_names", "pruning", "conv_mode", "queue_length")} for w in workers]})

    async def chat(request):
        length = int(request.headers.get("content-length") or 0)
        if length > server.args.max_image_bytes * 2 + 2**20:  # far over: not even read (the image check is exact)
            code = BAD_REQUEST
            return Response(line({"text": f"the request is too large (over {server.args.max_image_bytes // 2**20} "
                                          f"MiB of image)", "error_code": code}), status_code=HTTP_STATUS[code],
                            media_type="application/x-ndjson")
        try:
            body = await request.json()
        except ValueError:
            body = None
        try:
            _, prompt, payload = await run_in_threadpool(server.prepare, body)
        except ServeError as e:
            return Response(line({"text": str(e), "error_code": e.code}), status_code=HTTP_STATUS[e.code],
                            media_type="application/x-ndjson")
        return StreamingResponse(server.answer(prompt, payload), media_type="application/x-ndjson")

    return Starlette(routes=[
        Route("/", index), Route("/api/config", config), Route("/api/models", models),
        Route("/api/chat", chat, methods=["POST"]),
    ])


def build_parser():
    parser = entry_parser(MODULE, __doc__)
    parser.add_argument("--host", type=str, default="0.0.0.0", help="address to listen on")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    parser.add_argument("--controller-url", type=str, default="http://localhost:21001", help="the controller's URL")
    parser.add_argument("--concurrency-count", type=int, default=16, help="answers relayed at the same time")
    parser.add_argument("--model-list-mode", type=str, default="once", choices=["once", "reload"],
                        help="read the model list once (at start, until there is one), or at every page load")
    parser.add_argument("--share", action="store_true",
                        help="upstream's public Gradio link: refused (no tunnel here; use your own reverse proxy)")
    parser.add_argument("--moderate", action="store_true",
                        help="upstream's OpenAI moderation of questions: refused (no moderation service here)")
    parser.add_argument("--embed", action="store_true", help="page without the title and notes, for embedding")
    parser.add_argument("--queue-timeout", type=float, default=120.0,
                        help="seconds a question may wait for one of the --concurrency-count slots")
    parser.add_argument("--max-image-bytes", type=int, default=16 * 2**20, help="largest image accepted, in bytes")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.share:
        print("error: --share needs Gradio's tunnel to the internet, which this server does not use; serve it "
              "behind your own reverse proxy (or an SSH tunnel) instead", file=sys.stderr)
        return 2
    if args.moderate:
        print("error: --moderate calls OpenAI's moderation API, which this server does not use; put your own "
              "moderation in front of it", file=sys.stderr)
        return 2
    if args.concurrency_count < 1 or not args.queue_timeout > 0:
        print("error: --concurrency-count must be at least 1 and --queue-timeout > 0", file=sys.stderr)
        return 2
    missing_server_deps(MODULE)
    server = WebServer(args)
    models, _ = server.models()
    say(MODULE, f"models: {', '.join(models) or 'none yet'}; open http://{args.host}:{args.port}")
    run_server(build_app(server), args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
