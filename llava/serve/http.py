"""What the controller, the model workers, the web UI and test_message share: the stream format, the
error codes, a small HTTP client (the standard library's, so a client needs nothing installed) and the
ASGI server start-up.

The stream format is upstream's: each chunk is a JSON object `{"text": ..., "error_code": ...}` followed
by a NUL byte; `text` holds the prompt followed by the answer so far. Our extra keys (time to first
token, pruning) ride along in the same objects, where upstream's clients ignore them.
"""
import http.client
import json
import socket
import sys
import time
import urllib.error
import urllib.request

# error_code values in the stream (0, 1, 2 and 3 as upstream LLaVA / FastChat use them)
OK = 0
SERVER_ERROR = 1  # generation failed on the worker
NO_WORKER = 2  # the controller has no live worker for the model
WORKER_FAILED = 3  # the worker went away or timed out (controller)
BAD_REQUEST = 4  # the request cannot be served as it is: bad image, empty prompt, too long, ...
OVERLOADED = 5  # the worker's queue is full (try again later)

HTTP_STATUS = {OK: 200, SERVER_ERROR: 500, NO_WORKER: 404, WORKER_FAILED: 502, BAD_REQUEST: 400, OVERLOADED: 503}


class ServeError(Exception):
    """A request that gets a clear error chunk instead of an answer."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def chunk(obj):
    """One stream chunk: JSON then the NUL separator."""
    return json.dumps(obj).encode() + b"\0"


def error_chunk(code, message, **extra):
    return chunk({"text": message, "error_code": code, **extra})


def post_json(url, payload=None, timeout=5.0):
    """POST a JSON body, return the decoded JSON answer. Raises OSError (URLError, timeout) on failure."""
    data = json.dumps(payload if payload is not None else {}).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def open_stream(url, payload, timeout=30.0):
    """POST and return the open response (also for an HTTP error status, whose body is a stream too)."""
    data = json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:  # 4xx/5xx: the body still holds the error chunk
        return e


def iter_chunks(response, raw=False):
    """The chunks of an open stream response (dicts, or their raw bytes with raw=True). Ends when the
    server closes the stream; a stream cut mid-chunk raises ConnectionError."""
    buffer = b""
    while True:
        try:
            data = response.read1(65536)
        except (socket.timeout, TimeoutError):
            raise ConnectionError("no data from the server within the time limit") from None
        except (ConnectionError, OSError, ValueError, http.client.HTTPException) as e:  # IncompleteRead: cut off
            raise ConnectionError(f"the stream was cut: {e}") from None
        if not data:
            break
        buffer += data
        *done, buffer = buffer.split(b"\0")
        for part in done:
            if part:
                yield part if raw else json.loads(part)
    if buffer.strip():
        raise ConnectionError("the stream ended in the middle of a chunk")


def stream_json(url, payload, timeout=30.0):
    """POST to a streaming endpoint, yield its chunks as dicts."""
    response = open_stream(url, payload, timeout)
    with response:
        yield from iter_chunks(response)


def missing_server_deps(module):
    """Exit with one clear line when the `serve` extra is not installed."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        print(f"error: {module} needs the serving packages ({e.name} is missing): pip install -e '.[serve]'",
              file=sys.stderr)
        sys.exit(2)


def run_server(app, host, port, on_started=None):
    """Serve an ASGI app with uvicorn: warnings only, no access log (our own one-line messages stay).
    `on_started` runs in a thread once the server listens (a worker registers only then)."""
    import threading

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=2))
    if on_started is not None:
        def wait_then_call():
            while not server.started and not server.should_exit:
                time.sleep(0.05)
            if server.started:
                on_started()

        threading.Thread(target=wait_then_call, daemon=True).start()
    server.run()


def say(module, message):
    """One line of our own on stderr, flushed (servers run with their output piped to logs)."""
    print(f"[{module}] {message}", file=sys.stderr, flush=True)
