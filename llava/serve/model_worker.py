"""A model worker: loads one model (with the pruning flags), registers with the controller and streams
answers: `python -m llava.serve.model_worker --model-path PATH [--pruning-method agile --visual-token-num 64]`.

Upstream's HTTP protocol: POST /worker_generate_stream with `{prompt, images: [base64, ...], temperature,
top_p, max_new_tokens, stop}` streams NUL-separated JSON chunks `{"text": prompt + answer so far,
"error_code": 0}`; /worker_get_status, /model_details and /count_token answer JSON. The model name carries
the pruning (`llava-testbed@agile64`), and the status reports it. Chunks also carry the time to first token
(`ttft_s`); with `"pruning_details": true` the last chunk adds the visual tokens fed to the LLM and a
picture of the kept patches. Up to --limit-model-concurrency answers run at once, up to --max-queue-length
more wait (at most --queue-timeout seconds), and the rest are refused at once with a clear message.
"""
import base64
import dataclasses
import io
import sys
import threading
import time
import uuid
import warnings

from llava.constants import (DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN,
                             WORKER_HEART_BEAT_INTERVAL)
from llava.serve.http import (BAD_REQUEST, HTTP_STATUS, OK, OVERLOADED, SERVER_ERROR, ServeError, chunk, error_chunk,
                              missing_server_deps, post_json, run_server, say)
from llava.utils import entry_parser

MODULE = "llava.serve.model_worker"
MAX_NEW_TOKENS_CAP = 1024  # upstream's ceiling


# ---- names -----------------------------------------------------------------------------------------------
def pruning_suffix(config):
    """'' when unpruned, else '@<method><K>' (e.g. '@agile64')."""
    if not config.is_active:
        return ""
    return f"@{config.method}" + (str(config.visual_token_num) if config.visual_token_num is not None else "")


def worker_model_name(model_path, model_name, config):
    """The name clients ask for: --model-name (else the checkpoint folder's name) plus the pruning suffix,
    unless the given name already says it (holds an '@')."""
    from llava.mm_utils import get_model_name_from_path

    name = model_name or get_model_name_from_path(model_path)
    return name if "@" in name else name + pruning_suffix(config)


# ---- the kept-token picture ---------------------------------------------------------------------------
def model_view(image, image_processor, config, side=336):
    """The image as the vision tower sees it (padded to a square for LLaVA-1.5, else squashed), RGB."""
    from PIL import Image

    image = image.convert("RGB")
    if getattr(config, "image_aspect_ratio", None) == "pad":
        from llava.mm_utils import expand2square

        mean = getattr(image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
        image = expand2square(image, tuple(int(x * 255) for x in mean))
    return image.resize((side, side), Image.BICUBIC)


def kept_picture(view, kept, grid, dim=0.25):
    """PNG data URL of `view` with the patches not in `kept` (raster indices over grid x grid) dimmed."""
    from PIL import Image, ImageDraw

    side = view.size[0]
    cell = side / grid
    mask = Image.new("L", view.size, 0)
    draw = ImageDraw.Draw(mask)
    for i in kept:
        r, c = divmod(int(i), grid)
        draw.rectangle((round(c * cell), round(r * cell), round((c + 1) * cell) - 1, round((r + 1) * cell) - 1),
                       fill=255)
    picture = Image.composite(view, Image.eval(view, lambda v: int(v * dim)), mask)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


# ---- requests --------------------------------------------------------------------------------------------
def decode_image(data, index, max_bytes, max_pixels):
    """A PIL image (RGB) from a base64 string (a data URL is accepted too), or a ServeError saying why not."""
    from PIL import Image, UnidentifiedImageError

    where = f"image {index + 1}"
    if not isinstance(data, str) or not data:
        raise ServeError(BAD_REQUEST, f"{where}: expected a base64-encoded image")
    if data.startswith("data:") and "," in data:
        data = data.split(",", 1)[1]
    if len(data) * 3 // 4 > max_bytes:
        raise ServeError(BAD_REQUEST, f"{where} is too large: over {max_bytes // 2**20} MiB (--max-image-bytes)")
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raise ServeError(BAD_REQUEST, f"{where} is not valid base64") from None
    try:
        image = Image.open(io.BytesIO(raw))
        width, height = image.size
        if width * height > max_pixels:
            raise ServeError(BAD_REQUEST, f"{where} is too large: {width}x{height} pixels, over {max_pixels} "
                                          f"(--max-image-pixels)")
        return image.convert("RGB")
    except ServeError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        raise ServeError(BAD_REQUEST, f"{where} cannot be read as an image: {e}") from None


class _FirstTokenStreamer:
    """TextIteratorStreamer that notes when the first new token arrives, and can slow generation down."""

    def __new__(cls, tokenizer, timeout, token_delay):
        from transformers import TextIteratorStreamer

        class Streamer(TextIteratorStreamer):
            def put(self, value):
                prompt = self.skip_prompt and self.next_tokens_are_prompt
                super().put(value)
                if not prompt:
                    if self.first_token_time is None:
                        self.first_token_time = time.perf_counter()
                        self.first_token.set()
                    if token_delay:
                        time.sleep(token_delay)

            def end(self):
                super().end()
                self.first_token.set()

        streamer = Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=timeout)
        streamer.first_token_time = None
        streamer.first_token = threading.Event()
        return streamer


class ModelWorker:
    """One loaded model, its admission control and its generation; independent of HTTP."""

    def __init__(self, tokenizer, model, image_processor, context_len, model_name, pruning, conv_mode, args):
        self.tokenizer, self.model, self.image_processor = tokenizer, model, image_processor
        self.context_len = context_len
        self.model_name = model_name
        self.pruning = pruning  # llava.settings.Pruning (what the user asked for, with sources)
        self.conv_mode = conv_mode
        self.args = args
        self.worker_id = uuid.uuid4().hex[:6]
        self.slots = threading.BoundedSemaphore(args.limit_model_concurrency)
        self.counts_lock = threading.Lock()
        self.running = self.waiting = 0
        self.prefill_lock = threading.Lock()  # prefills one at a time: pruning records are per prefill
        cfg = pruning.config
        self.details_config = dataclasses.replace(cfg, pruning_stats=True) if cfg.is_active else cfg
        # FastV keeps the prompt's image span in the model while it decodes: one answer at a time
        self.serial = cfg.is_active and prunes_in_decoder(cfg)
        self._prefill_len = None
        original = model.prepare_inputs_labels_for_multimodal

        def prepare(*a, **kw):  # notes how many embeddings the prompt became (text + visual tokens)
            out = original(*a, **kw)
            self._prefill_len = out[4].shape[1] if out[4] is not None else None
            return out

        model.prepare_inputs_labels_for_multimodal = prepare

    # ---- status ----------------------------------------------------------------------------------------
    @property
    def queue_length(self):
        with self.counts_lock:
            return self.running + self.waiting

    def status(self):
        cfg = self.pruning.config
        return {
            "model_names": [self.model_name], "speed": 1, "queue_length": self.queue_length,
            "pruning": {"method": cfg.method, "visual_token_num": cfg.visual_token_num,
                        "describe": self.pruning.describe(), "config": cfg.to_dict()},
            "conv_mode": self.conv_mode, "model_path": self.args.model_path,
            "limit_model_concurrency": self.args.limit_model_concurrency,
            "max_queue_length": self.args.max_queue_length,
            "visual_tokens_per_image": self.model.get_vision_tower().num_patches if self._multimodal else 0,
        }

    @property
    def _multimodal(self):
        return hasattr(self.model, "get_vision_tower") and self.model.get_vision_tower() is not None

    def count_token(self, prompt):
        from llava.mm_utils import tokenizer_image_token

        return len(tokenizer_image_token(str(prompt), self.tokenizer))

    # ---- admission ---------------------------------------------------------------------------------------
    def check_capacity(self, reserve=False):
        """Refuse at once when every slot is busy and the queue is full; with `reserve`, take a place in the
        queue in the same step (the request's stream then owns it: `Admitted`)."""
        with self.counts_lock:
            busy = self.running >= self.args.limit_model_concurrency and self.waiting >= self.args.max_queue_length
            running, waiting = self.running, self.waiting
            if reserve and not busy:
                self.waiting += 1
        if busy:
            raise ServeError(OVERLOADED, f"the worker serving {self.model_name} is busy ({running} answers running, "
                                         f"{waiting} waiting, the most it takes): please try again in a moment")

    def release_place(self):
        with self.counts_lock:
            self.waiting -= 1

    # ---- one request ---------------------------------------------------------------------------------------
    def prepare(self, params):
        """Check a request and decode its images before any answer streams: a ServeError otherwise."""
        from llava.mm_utils import tokenizer_image_token

        if not isinstance(params, dict):
            raise ServeError(BAD_REQUEST, "the request must be a JSON object")
        prompt = params.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ServeError(BAD_REQUEST, "empty prompt: ask a question")
        images = params.get("images") or []
        if not isinstance(images, list):
            raise ServeError(BAD_REQUEST, "images must be a list of base64-encoded images")
        n_tokens = prompt.count(DEFAULT_IMAGE_TOKEN)
        if images and not self._multimodal:
            raise ServeError(BAD_REQUEST, f"{self.model_name} takes no images")
        if len(images) != n_tokens:
            raise ServeError(BAD_REQUEST, f"the prompt has {n_tokens} {DEFAULT_IMAGE_TOKEN} token(s) but "
                                          f"{len(images)} image(s) came with it: they must match")
        try:
            temperature = float(params.get("temperature", 1.0))
            top_p = float(params.get("top_p", 1.0))
            max_new_tokens = int(params.get("max_new_tokens", 256))
        except (TypeError, ValueError):
            raise ServeError(BAD_REQUEST, "temperature and top_p must be numbers, max_new_tokens an integer") from None
        if not temperature >= 0 or not 0 < top_p <= 1 or max_new_tokens < 1:
            raise ServeError(BAD_REQUEST, f"need temperature >= 0, 0 < top_p <= 1 and max_new_tokens >= 1; got "
                                          f"{temperature}, {top_p}, {max_new_tokens}")
        stop = params.get("stop")
        if stop is not None and not isinstance(stop, str):
            raise ServeError(BAD_REQUEST, "stop must be a string")
        pil = [decode_image(d, i, self.args.max_image_bytes, self.args.max_image_pixels) for i, d in enumerate(images)]
        model_prompt = prompt  # the answer's "text" repeats the prompt as sent; the model may need more
        if pil and getattr(self.model.config, "mm_use_im_start_end", False):
            model_prompt = prompt.replace(DEFAULT_IMAGE_TOKEN,
                                          DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN)
        input_ids = tokenizer_image_token(model_prompt, self.tokenizer, return_tensors="pt")
        room = self.context_len - input_ids.shape[0] - (self.status()["visual_tokens_per_image"] * len(pil))
        max_new_tokens = min(max_new_tokens, MAX_NEW_TOKENS_CAP, room)
        if max_new_tokens < 1:
            raise ServeError(BAD_REQUEST, f"the prompt is too long for the model's context ({self.context_len} "
                                          f"tokens): shorten it")
        return {"prompt": prompt, "images": pil, "input_ids": input_ids, "temperature": temperature,
                "top_p": top_p, "max_new_tokens": max_new_tokens, "stop": stop or None,
                "details": bool(params.get("pruning_details"))}

    def generate_stream(self, request):
        """Chunks (bytes) of one prepared and admitted request (its place in the queue taken by
        check_capacity(reserve=True)): waits for a slot, then streams the answer."""
        arrived = time.perf_counter()
        try:
            got = self.slots.acquire(timeout=self.args.queue_timeout)
        finally:
            self.release_place()
        if not got:
            yield error_chunk(OVERLOADED, f"the worker serving {self.model_name} is busy: no answer slot freed within "
                                          f"{self.args.queue_timeout:g} s; please try again")
            return
        with self.counts_lock:
            self.running += 1
        try:
            yield from self._generate(request, time.perf_counter() - arrived)
        finally:
            with self.counts_lock:
                self.running -= 1
            self.slots.release()

    def _generate(self, request, queue_s):
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        from llava.mm_utils import process_images

        model, tokenizer = self.model, self.tokenizer
        param = model.get_input_embeddings().weight
        stop_event = threading.Event()

        class Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), stop_event.is_set(), dtype=torch.bool, device=input_ids.device)

        streamer = _FirstTokenStreamer(tokenizer, timeout=self.args.stream_timeout, token_delay=self.args.token_delay)
        kwargs = dict(max_new_tokens=request["max_new_tokens"], streamer=streamer, use_cache=True,
                      stopping_criteria=StoppingCriteriaList([Stop()]), pad_token_id=tokenizer.pad_token_id)
        if request["temperature"] > 0:
            kwargs.update(do_sample=True, temperature=request["temperature"], top_p=request["top_p"])
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None)
        images = request["images"]
        if images:
            pixels = process_images(images, self.image_processor, model.config)
            pixels = [p.to(param.device, dtype=param.dtype) for p in pixels] if isinstance(pixels, list) \
                else pixels.to(param.device, dtype=param.dtype)
            kwargs.update(images=pixels, image_sizes=[im.size for im in images])
        input_ids = request["input_ids"].unsqueeze(0).to(param.device)
        failure = []

        def run():
            try:
                with torch.inference_mode():
                    model.generate(input_ids, **kwargs)
            except Exception as e:  # noqa: BLE001 (reported in the stream; the worker keeps serving)
                failure.append(e)
                streamer.end()

        start = time.perf_counter()
        records, prefill_len = [], None
        self.prefill_lock.acquire()
        held = True
        try:
            # statistics (the kept indices of the picture) only for a request that asks for them
            wanted = self.details_config if request["details"] else self.pruning.config
            if model.pruning_config != wanted:
                model.set_pruning(wanted)
            store = getattr(model, "pruning_records", None)
            if store is not None:
                store.clear()
            self._prefill_len = None
            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            streamer.first_token.wait(self.args.stream_timeout)
            if store is not None:
                records = list(store)
                store.clear()
            prefill_len = self._prefill_len
        finally:
            if not self.serial:
                self.prefill_lock.release()
                held = False
        try:
            yield from self._stream(request, streamer, thread, stop_event, failure, start, queue_s, records,
                                    prefill_len)
        finally:
            if held:
                self.prefill_lock.release()

    def _stream(self, request, streamer, thread, stop_event, failure, start, queue_s, records, prefill_len):
        ttft = (streamer.first_token_time or time.perf_counter()) - start
        prompt, generated, sent_first = request["prompt"], "", False
        try:
            for piece in streamer:
                if not piece:
                    continue
                generated += piece
                text = generated
                if request["stop"] and request["stop"] in text:
                    text = text[:text.index(request["stop"])]
                    stop_event.set()
                out = {"text": prompt + text, "error_code": OK}
                if not sent_first:
                    out.update(ttft_s=round(ttft, 4), queue_s=round(queue_s, 4))
                    sent_first = True
                yield chunk(out)
                if stop_event.is_set():
                    break
        except Exception as e:  # noqa: BLE001 (the streamer timed out: say so instead of hanging)
            stop_event.set()
            yield error_chunk(SERVER_ERROR, f"generation stalled: no token within {self.args.stream_timeout:g} s "
                                            f"({e!r})")
            return
        finally:
            stop_event.set()  # a client that went away stops the generation too
        thread.join()
        if failure:
            say(MODULE, f"generation failed: {failure[0]!r}")
            yield error_chunk(SERVER_ERROR, f"generation failed on the worker: {failure[0]}")
            return
        text = generated
        if request["stop"] and request["stop"] in text:
            text = text[:text.index(request["stop"])]
        final = {"text": prompt + text, "error_code": OK, "ttft_s": round(ttft, 4), "queue_s": round(queue_s, 4),
                 "total_s": round(time.perf_counter() - start, 4), "model": self.model_name, "finished": True}
        if request["details"]:
            final["pruning"] = self._details(request, records, prefill_len)
        yield chunk(final)

    def _details(self, request, records, prefill_len):
        """What pruning did to this request: visual tokens fed to the LLM, kept indices, the picture."""
        cfg = self.pruning.config
        images = request["images"]
        n_text = request["input_ids"].shape[0] - len(images)
        visual = None if prefill_len is None else max(prefill_len - n_text, 0)
        tower = self.model.get_vision_tower() if self._multimodal else None
        details = {"method": cfg.method, "visual_token_num": cfg.visual_token_num, "describe": self.pruning.describe(),
                   "visual_tokens": visual, "visual_tokens_unpruned": tower.num_patches * len(images) if tower else 0}
        if cfg.is_active and visual is not None and prunes_in_decoder(cfg) and cfg.visual_token_num is not None:
            details["visual_tokens"] = min(visual, cfg.visual_token_num * len(images))
            details["note"] = f"counted after the decoder layer where {cfg.method} prunes"
        kept = records[0].get("kept_indices") if records else None
        if images and tower is not None and kept is not None:
            grid = tower.num_patches_per_side
            details["kept_indices"] = kept
            details["grid"] = grid
            details["kept_picture"] = kept_picture(model_view(images[0], self.image_processor, self.model.config),
                                                   kept, grid)
        return details


def prunes_in_decoder(cfg):
    """The method prunes inside the LLM's decoder (FastV-style), not before it."""
    return cfg.stage == "decoder"


# ---- HTTP ------------------------------------------------------------------------------------------------
class Admitted:
    """The stream of an admitted request; gives its place in the queue back if it is dropped unstarted
    (a client gone before the answer began)."""

    def __init__(self, worker, request):
        self.worker, self.stream, self.started = worker, worker.generate_stream(request), False

    def __iter__(self):
        return self

    def __next__(self):
        self.started = True
        return next(self.stream)

    def __del__(self):
        if not self.started:
            self.worker.release_place()


def build_app(worker):
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def read(request):
        try:
            return await request.json()
        except ValueError:
            return None

    async def worker_generate_stream(request):
        params = await read(request)
        try:
            worker.check_capacity()  # cheap refusal before the images are decoded
            prepared = await run_in_threadpool(worker.prepare, params)
            worker.check_capacity(reserve=True)
        except ServeError as e:
            return Response(error_chunk(e.code, str(e)), status_code=HTTP_STATUS[e.code],
                            media_type="application/octet-stream")
        return StreamingResponse(Admitted(worker, prepared), media_type="application/octet-stream")

    async def worker_get_status(request):
        return JSONResponse(worker.status())

    async def model_details(request):
        return JSONResponse({"context_length": worker.context_len})

    async def count_token(request):
        params = await read(request) or {}
        try:
            return JSONResponse({"count": worker.count_token(params.get("prompt", "")), "error_code": 0})
        except Exception as e:  # noqa: BLE001
            return JSONResponse({"count": 0, "error_code": SERVER_ERROR, "text": str(e)})

    routes = [Route(f"/{fn.__name__}", fn, methods=["POST"])
              for fn in (worker_generate_stream, worker_get_status, model_details, count_token)]
    return Starlette(routes=routes)


def register(worker, controller_address, worker_address):
    """Register with the controller; True when it took the worker."""
    try:
        answer = post_json(controller_address.rstrip("/") + "/register_worker",
                           {"worker_name": worker_address, "check_heart_beat": True, "worker_status": worker.status()})
        return bool(answer.get("ok", True)) if isinstance(answer, dict) else True
    except (OSError, ValueError):
        return False


def heart_beat_loop(worker, controller_address, worker_address, interval, stop):
    """Heartbeats with the queue length; re-registers when the controller has forgotten the worker (or was
    restarted), and says once when the controller cannot be reached."""
    registered = register(worker, controller_address, worker_address)
    say(MODULE, f"registered with {controller_address}" if registered else
        f"controller {controller_address} unreachable; will keep trying")
    reachable = registered
    while not stop.wait(interval):
        try:
            exist = post_json(controller_address.rstrip("/") + "/receive_heart_beat",
                              {"worker_name": worker_address, "queue_length": worker.queue_length}).get("exist")
        except (OSError, ValueError, AttributeError):
            if reachable:
                say(MODULE, f"controller {controller_address} unreachable; will keep trying")
            reachable = False
            continue
        if not exist:
            reachable = register(worker, controller_address, worker_address)
            if reachable:
                say(MODULE, f"registered with {controller_address}")
        else:
            reachable = True


def build_parser():
    import torch

    from llava.pruning import add_pruning_args

    parser = entry_parser(MODULE, __doc__)
    parser.add_argument("--host", type=str, default="localhost", help="address to listen on")
    parser.add_argument("--port", type=int, default=21002, help="port to listen on")
    parser.add_argument("--worker-address", type=str, default=None,
                        help="the URL the controller reaches this worker at (default: http://HOST:PORT)")
    parser.add_argument("--controller-address", type=str, default="http://localhost:21001", help="the controller's URL")
    parser.add_argument("--model-path", type=str, default="facebook/opt-350m",
                        help="checkpoint folder, or a hub id already in the Hugging Face cache")
    parser.add_argument("--model-base", type=str, default=None,
                        help="the base LLM of a LoRA or projector-only checkpoint")
    parser.add_argument("--model-name", type=str, default=None,
                        help="the name clients ask for (default: the checkpoint folder's name); the pruning is "
                             "appended, e.g. llava-testbed@agile64, unless the name holds an '@'")
    parser.add_argument("--device", type=str, default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda, cpu, mps, ...")
    parser.add_argument("--conv-mode", type=str, default=None,
                        help="template the worker reports to the web UI (default: the checkpoint's, else from the "
                             "name)")
    parser.add_argument("--multi-modal", action="store_true",
                        help="deprecated and ignored (upstream's flag): a model with a vision tower takes images")
    parser.add_argument("--limit-model-concurrency", type=int, default=5, help="answers generated at the same time")
    parser.add_argument("--max-queue-length", type=int, default=16,
                        help="requests that may wait for a free slot; beyond it a request is refused at once")
    parser.add_argument("--queue-timeout", type=float, default=60.0,
                        help="seconds a request may wait for a free slot before it is refused")
    parser.add_argument("--stream-interval", type=int, default=1,
                        help="upstream's flag, unused: every token is streamed")
    parser.add_argument("--stream-timeout", type=float, default=120.0,
                        help="seconds without a new token after which an answer ends with an error")
    parser.add_argument("--no-register", action="store_true", help="do not register with the controller")
    parser.add_argument("--heart-beat-interval", type=float, default=WORKER_HEART_BEAT_INTERVAL,
                        help="seconds between heartbeats to the controller")
    parser.add_argument("--load-8bit", action="store_true", help="8-bit weights (bitsandbytes, CUDA)")
    parser.add_argument("--load-4bit", action="store_true", help="4-bit NF4 weights (bitsandbytes, CUDA)")
    parser.add_argument("--use-flash-attn", action="store_true", help="flash attention 2 (the flash extra)")
    parser.add_argument("--vision-tower", type=str, default=None,
                        help="local folder (or hub id in the HF cache) overriding the config's mm_vision_tower")
    parser.add_argument("--max-image-bytes", type=int, default=16 * 2**20, help="largest image accepted, in bytes")
    parser.add_argument("--max-image-pixels", type=int, default=40_000_000, help="largest image accepted, in pixels")
    parser.add_argument("--token-delay", type=float, default=0.0,
                        help="seconds to wait after each generated token: makes the tiny testbed as slow as a real "
                             "model (streaming demos, load and fault tests)")
    add_pruning_args(parser)
    return parser


def check_args(args):
    from llava.settings import SettingsError

    for name in ("limit_model_concurrency",):
        if getattr(args, name) < 1:
            raise SettingsError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("max_queue_length",):
        if getattr(args, name) < 0:
            raise SettingsError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    for name in ("queue_timeout", "stream_timeout", "heart_beat_interval"):
        if not getattr(args, name) > 0:
            raise SettingsError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if args.token_delay < 0:
        raise SettingsError(f"--token-delay must be >= 0, got {args.token_delay}")
    if args.max_image_bytes < 1 or args.max_image_pixels < 1:
        raise SettingsError("--max-image-bytes and --max-image-pixels must be positive")


def load_worker(args):
    """Check every setting (a clear error before any weights are read), then load the model."""
    from llava.mm_utils import get_model_name_from_path
    from llava.model.builder import load_pretrained_model
    from llava.settings import check_device, describe, note_nothing_pruned, resolve_pruning, resolve_template
    from llava.utils import disable_torch_init

    check_args(args)
    check_device(args.device)
    path_name = get_model_name_from_path(args.model_path)
    conv_mode, template_source = resolve_template(args.conv_mode, args.model_path, path_name)
    pruning = resolve_pruning(args, args.model_path)
    name = worker_model_name(args.model_path, args.model_name, pruning.config)
    say(MODULE, describe(args.model_path, conv_mode, template_source, pruning, model_name=name))
    if args.multi_modal:
        say(MODULE, "--multi-modal is deprecated and ignored: a model with a vision tower takes images")
    disable_torch_init()
    tokenizer, model, image_processor, context_len = load_pretrained_model(
        args.model_path, args.model_base, path_name, args.load_8bit, args.load_4bit, device=args.device,
        use_flash_attn=args.use_flash_attn, vision_tower=args.vision_tower, pruning=pruning.config)
    note_nothing_pruned(model, pruning.config)
    return ModelWorker(tokenizer, model, image_processor, context_len, name, pruning, conv_mode, args)


def main(argv=None):
    args = build_parser().parse_args(argv)
    missing_server_deps(MODULE)
    from PIL import Image

    from llava.settings import SettingsError

    warnings.simplefilter("error", Image.DecompressionBombWarning)  # a huge image is refused, not warned about
    args.worker_address = args.worker_address or f"http://{args.host}:{args.port}"
    try:
        worker = load_worker(args)
    except (SettingsError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def started():  # registers only once it listens: the controller may send a request at once
        say(MODULE, f"{worker.model_name} listening on {args.worker_address} "
                    f"(concurrency {args.limit_model_concurrency}, queue {args.max_queue_length})")
        if not args.no_register:
            heart_beat_loop(worker, args.controller_address, args.worker_address, args.heart_beat_interval, stop)

    try:
        run_server(build_app(worker), args.host, args.port, on_started=started)
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
