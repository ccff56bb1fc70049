"""The controller: a registry of model workers that tells clients which worker serves a model, and relays
streamed answers: `python -m llava.serve.controller --host localhost --port 21001`.

Upstream's HTTP protocol (all POST, JSON): /register_worker, /refresh_all_workers, /list_models,
/get_worker_address, /receive_heart_beat, /worker_generate_stream (relayed to a worker), /worker_get_status;
plus /list_workers (each worker's models, queue, pruning and template). A worker that misses heartbeats
for --heart-beat-expiration seconds, or that cannot be reached, is dropped, and the next request goes to
a live worker of the same model.
"""
import random
import sys
import threading
import time
from dataclasses import dataclass, field

from llava.constants import CONTROLLER_HEART_BEAT_EXPIRATION
from llava.serve.http import (HTTP_STATUS, NO_WORKER, WORKER_FAILED, error_chunk, iter_chunks, missing_server_deps,
                              open_stream, post_json, run_server, say)
from llava.utils import entry_parser

MODULE = "llava.serve.controller"
DISPATCH_METHODS = ("shortest_queue", "lottery")


@dataclass
class WorkerInfo:
    model_names: list
    speed: float
    queue_length: int
    check_heart_beat: bool
    last_heart_beat: float
    details: dict = field(default_factory=dict)  # pruning, conv_mode, ... as the worker reports them
    last_dispatch: float = 0.0


class Controller:
    """The registry itself, independent of HTTP (thread-safe)."""

    def __init__(self, dispatch_method="shortest_queue", expiration=CONTROLLER_HEART_BEAT_EXPIRATION):
        if dispatch_method not in DISPATCH_METHODS:
            raise ValueError(f"--dispatch-method must be one of {', '.join(DISPATCH_METHODS)}, got {dispatch_method!r}")
        self.dispatch_method = dispatch_method
        self.expiration = expiration
        self.workers = {}
        self.lock = threading.Lock()

    # ---- registration and status -----------------------------------------------------------------------
    def register_worker(self, worker_name, check_heart_beat=True, worker_status=None):
        if not worker_name:
            return False
        if worker_status is None:
            worker_status = self.get_worker_status(worker_name)
        if worker_status is None:
            return False
        details = {k: v for k, v in worker_status.items() if k not in ("model_names", "speed", "queue_length")}
        info = WorkerInfo(list(worker_status.get("model_names", [])), float(worker_status.get("speed", 1) or 1),
                          int(worker_status.get("queue_length", 0)), bool(check_heart_beat), time.time(), details)
        with self.lock:
            known = worker_name in self.workers
            self.workers[worker_name] = info
        if not known:
            say(MODULE, f"worker {worker_name} registered: {', '.join(info.model_names)}")
        return True

    @staticmethod
    def get_worker_status(worker_name):
        try:
            return post_json(worker_name.rstrip("/") + "/worker_get_status", timeout=5)
        except (OSError, ValueError):
            return None

    def remove_worker(self, worker_name, why):
        with self.lock:
            gone = self.workers.pop(worker_name, None)
        if gone is not None:
            say(MODULE, f"worker {worker_name} dropped ({why})")

    def refresh_all_workers(self):
        with self.lock:
            names = [(name, w.check_heart_beat) for name, w in self.workers.items()]
        for name, check in names:
            if not self.register_worker(name, check):
                self.remove_worker(name, "does not answer /worker_get_status")

    def list_models(self):
        with self.lock:
            return sorted({m for w in self.workers.values() for m in w.model_names})

    def list_workers(self):
        now = time.time()
        with self.lock:
            return [{"worker_name": name, "model_names": w.model_names, "speed": w.speed,
                     "queue_length": w.queue_length, "heart_beat_age_s": round(now - w.last_heart_beat, 1), **w.details}
                    for name, w in self.workers.items()]

    # ---- dispatch ----------------------------------------------------------------------------------------
    def get_worker_address(self, model_name, exclude=()):
        """The address of a live worker serving `model_name`, "" when there is none."""
        with self.lock:
            candidates = [(name, w) for name, w in self.workers.items()
                          if model_name in w.model_names and name not in exclude]
            if not candidates:
                return ""
            if self.dispatch_method == "lottery":
                speeds = [w.speed for _, w in candidates]
                name, chosen = random.choices(candidates, weights=speeds)[0]
            else:  # the shortest queue relative to speed; ties go to the one dispatched to longest ago
                name, chosen = min(candidates, key=lambda c: (c[1].queue_length / c[1].speed, c[1].last_dispatch))
                chosen.queue_length += 1
            chosen.last_dispatch = time.monotonic()
            return name

    def receive_heart_beat(self, worker_name, queue_length):
        with self.lock:
            worker = self.workers.get(worker_name)
            if worker is None:
                return False
            worker.queue_length = int(queue_length)
            worker.last_heart_beat = time.time()
            return True

    def remove_stale_workers(self):
        expire = time.time() - self.expiration
        with self.lock:
            stale = [name for name, w in self.workers.items() if w.check_heart_beat and w.last_heart_beat < expire]
        for name in stale:
            self.remove_worker(name, f"no heartbeat for {self.expiration:g} s")

    def heart_beat_loop(self, stop):
        while not stop.wait(min(self.expiration / 3, 5.0)):
            self.remove_stale_workers()

    # ---- relaying a generation ----------------------------------------------------------------------------
    def open_generation(self, params, tries=3):
        """(status, chunks iterator) for a /worker_generate_stream request: a worker that cannot be reached
        is dropped and the next live one tried; a worker that stops mid-answer ends the stream with an
        error chunk (and is dropped)."""
        model = params.get("model")
        tried = []
        for _ in range(tries):
            address = self.get_worker_address(model, exclude=tried)
            if not address:
                break
            tried.append(address)
            try:
                response = open_stream(address.rstrip("/") + "/worker_generate_stream", params, timeout=60)
            except OSError as e:
                self.remove_worker(address, f"unreachable: {getattr(e, 'reason', e)}")
                continue
            return getattr(response, "status", 200), self._relay(address, response)
        if model not in self.list_models():
            message = f"no worker serves the model {model!r}; models: {', '.join(self.list_models()) or 'none'}"
        else:
            message = f"no live worker for the model {model!r}"
        return HTTP_STATUS[NO_WORKER], iter([error_chunk(NO_WORKER, message)])

    def _relay(self, address, response):
        with response:
            try:
                for part in iter_chunks(response, raw=True):
                    yield part + b"\0"
            except ConnectionError as e:
                self.remove_worker(address, f"stopped mid-answer: {e}")
                yield error_chunk(WORKER_FAILED, f"the worker serving this model stopped while answering ({e}); "
                                                 f"please ask again")

    def worker_get_status(self):
        """The sum over workers of their status (upstream's aggregate form)."""
        model_names, speed, queue_length = set(), 0.0, 0
        with self.lock:
            names = list(self.workers)
        for name in names:
            status = self.get_worker_status(name)
            if status is None:
                self.remove_worker(name, "does not answer /worker_get_status")
                continue
            model_names.update(status.get("model_names", []))
            speed += float(status.get("speed", 1) or 1)
            queue_length += int(status.get("queue_length", 0))
        return {"model_names": sorted(model_names), "speed": speed, "queue_length": queue_length}


def build_app(controller):
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    async def body(request: Request):
        try:
            data = await request.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    async def register_worker(request):
        data = await body(request)
        ok = await run_in_threadpool(controller.register_worker, data.get("worker_name"),
                                     data.get("check_heart_beat", True), data.get("worker_status"))
        return JSONResponse({"ok": ok})

    async def refresh_all_workers(request):
        await run_in_threadpool(controller.refresh_all_workers)
        return JSONResponse({})

    async def list_models(request):
        return JSONResponse({"models": controller.list_models()})

    async def list_workers(request):
        return JSONResponse({"workers": controller.list_workers()})

    async def get_worker_address(request):
        data = await body(request)
        return JSONResponse({"address": controller.get_worker_address(data.get("model"))})

    async def receive_heart_beat(request):
        data = await body(request)
        exist = controller.receive_heart_beat(data.get("worker_name"), data.get("queue_length", 0))
        return JSONResponse({"exist": exist})

    async def worker_generate_stream(request):
        params = await body(request)
        status, chunks = await run_in_threadpool(controller.open_generation, params)
        return StreamingResponse(chunks, status_code=status, media_type="application/octet-stream")

    async def worker_get_status(request):
        return JSONResponse(await run_in_threadpool(controller.worker_get_status))

    routes = [Route(f"/{fn.__name__}", fn, methods=["POST"]) for fn in (
        register_worker, refresh_all_workers, list_models, list_workers, get_worker_address, receive_heart_beat,
        worker_generate_stream, worker_get_status)]
    routes.append(Route("/list_workers", list_workers, methods=["GET"]))
    return Starlette(routes=routes)


def build_parser():
    parser = entry_parser(MODULE, __doc__)
    parser.add_argument("--host", type=str, default="localhost", help="address to listen on")
    parser.add_argument("--port", type=int, default=21001, help="port to listen on")
    parser.add_argument("--dispatch-method", type=str, choices=DISPATCH_METHODS, default="shortest_queue",
                        help="how a worker is chosen among those serving a model")
    parser.add_argument("--heart-beat-expiration", type=float, default=CONTROLLER_HEART_BEAT_EXPIRATION,
                        help="seconds without a heartbeat after which a worker is dropped")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not args.heart_beat_expiration > 0:
        print("error: --heart-beat-expiration must be > 0", file=sys.stderr)
        return 2
    missing_server_deps(MODULE)
    controller = Controller(args.dispatch_method, args.heart_beat_expiration)
    stop = threading.Event()
    threading.Thread(target=controller.heart_beat_loop, args=(stop,), daemon=True).start()
    say(MODULE, f"listening on http://{args.host}:{args.port} (dispatch {args.dispatch_method})")
    try:
        run_server(build_app(controller), args.host, args.port)
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
