"""A real loopback OpenAI-compatible chat server with scripted and seeded random fault injection.

Usage::

    with FakeOpenAIServer(responder=["first reply", "second"], faults=["429", None]) as srv:
        litellm.completion(model="openai/m", api_base=srv.base_url, api_key="x", messages=[...])

Each request to ``POST /v1/chat/completions`` is assigned one fault (or none), in arrival order:

* ``faults`` as a list: entry *i* is the fault of request *i* (``None`` = healthy); once the
  script is used up, the random mode below decides.
* ``faults`` as a callable ``(request_json) -> kind | None``: decides per request (e.g. by model).
* ``fault_rate`` / ``fault_kinds`` / ``seed``: each unscripted request fails with probability
  ``fault_rate`` with a kind drawn from ``fault_kinds``; the same seed gives the same sequence.

Fault kinds (see ``FAULT_KINDS``):

* ``"429"``, ``"500"``, ``"503"``: an OpenAI-style JSON error with that status.  Every error carries
  ``Retry-After: 0`` and ``retry-after-ms`` (``retry_after_ms``, default 1) because the OpenAI SDK
  ignores a zero ``Retry-After`` and would otherwise back off for 0.5 s and more.
* ``"hang"``: wait ``hang_s`` seconds, then answer normally (for client timeouts); shutdown cuts it short.
* ``"reset"``: close the socket without answering, with SO_LINGER 0 so the client sees a TCP RST.
* ``"empty"``: a well-formed completion whose content is ``""``.
* ``"truncated"``: a 200 whose JSON body is cut half-way (invalid JSON, consistent Content-Length).
* ``"prose"``: a well-formed completion whose content is plain prose, not an edit.

The reply content of a healthy (or hung) request comes from ``responder``: a callable
``(request_json) -> str`` or a list of strings consumed one per healthy reply (the last repeats).

``srv.requests`` holds every chat request body, ``srv.fault_log`` the fault given to each,
``srv.stats`` the counts, and ``srv.errors`` any exception raised while handling (the client then
sees its connection closed), e.g. by a responder: check it when a test behaves oddly.
"""
from __future__ import annotations

import itertools
import json
import random
import socket
import struct
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Sequence

FAULT_KINDS = ("429", "500", "503", "hang", "reset", "empty", "truncated", "prose")
DEFAULT_REPLY = "Hello from the fake OpenAI server."
PROSE_REPLY = (
    "I looked at the program and I think the loop could be faster if it cached its results. "
    "Let me know if you want me to write the change."
)
ERROR_TYPES = {"429": "rate_limit_exceeded", "500": "server_error", "503": "service_unavailable"}

Responder = Callable[[dict], str] | Sequence[str]
FaultScript = Sequence[str | None] | Callable[[dict], str | None] | None


class FakeServerError(Exception):
    """The fake server was configured wrongly or used outside its lifetime."""


def rough_token_count(text: str) -> int:
    """Approximate a token count as one token per four characters, at least one."""
    return len(text) // 4 + 1


@dataclass
class ServerStats:
    """Counts of what the server did: healthy completions served and faults injected by kind."""

    served: int = 0
    faults: Counter = field(default_factory=Counter)


class FakeOpenAIServer:
    """An OpenAI-compatible chat server on 127.0.0.1 that injects faults on demand."""

    def __init__(
        self,
        responder: Responder | None = None,
        faults: FaultScript = None,
        *,
        fault_rate: float = 0.0,
        fault_kinds: Sequence[str] = FAULT_KINDS,
        seed: int = 0,
        hang_s: float = 5.0,
        retry_after_ms: int = 1,
        models: Sequence[str] = ("fake-model",),
    ) -> None:
        if not 0.0 <= fault_rate <= 1.0:
            raise FakeServerError(f"fault_rate must be within [0, 1], got {fault_rate}")
        scripted = [] if faults is None or callable(faults) else list(faults)
        unknown = sorted({k for k in [*scripted, *fault_kinds] if k is not None and k not in FAULT_KINDS})
        if unknown:
            raise FakeServerError(f"unknown fault kinds {unknown}; choose from {list(FAULT_KINDS)}")
        if fault_rate > 0 and not fault_kinds:
            raise FakeServerError("fault_rate > 0 needs at least one entry in fault_kinds")
        if isinstance(responder, str):
            raise FakeServerError("responder must be a callable or a list of strings, not a single string")
        if responder is not None and not callable(responder) and not list(responder):
            raise FakeServerError("responder list is empty; give at least one reply")
        self._responder = responder
        self._fault_rule = faults if callable(faults) else None
        self._fault_script = scripted
        self._fault_rate = fault_rate
        self._fault_kinds = tuple(fault_kinds)
        self._rng = random.Random(seed)
        self.hang_s = hang_s
        self.retry_after_ms = retry_after_ms
        self.models = tuple(models)
        self.requests: list[dict] = []
        self.fault_log: list[str | None] = []  # the fault given to each chat request, in order
        self.stats = ServerStats()
        self.errors: list[BaseException] = []  # exceptions raised while handling (e.g. by a responder)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._replies_given = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifetime -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        if self._httpd is None:
            raise FakeServerError("server is not running; use it inside `with FakeOpenAIServer(...)` or call start()")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "FakeOpenAIServer":
        """Bind an ephemeral port on 127.0.0.1 and serve in a daemon thread."""
        if self._httpd is not None:
            raise FakeServerError("server already started")
        handler = type("BoundHandler", (_Handler,), {"fake": self})
        self._httpd = _QuietHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.errors = self.errors
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Wake any hung request, stop serving and close the listening socket."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- decisions (called from handler threads) --------------------------------------------

    def _admit(self, body: dict) -> str | None:
        """Record a chat request and choose its fault, under the lock so the order is arrival order."""
        with self._lock:
            index = len(self.fault_log)
            self.requests.append(body)
            if self._fault_rule is not None:
                kind = self._fault_rule(body)
            elif index < len(self._fault_script):
                kind = self._fault_script[index]
            elif self._fault_rate > 0 and self._rng.random() < self._fault_rate:
                kind = self._rng.choice(self._fault_kinds)
            else:
                kind = None
            if kind is not None and kind not in FAULT_KINDS:
                raise FakeServerError(f"fault rule returned unknown kind {kind!r}; choose from {list(FAULT_KINDS)}")
            self.fault_log.append(kind)
            if kind is None:
                self.stats.served += 1
            else:
                self.stats.faults[kind] += 1
            return kind

    def _reply_text(self, body: dict) -> str:
        """The content of a healthy reply, from the responder."""
        if self._responder is None:
            return DEFAULT_REPLY
        if callable(self._responder):
            return self._responder(body)
        with self._lock:
            scripted = list(self._responder)
            text = scripted[min(self._replies_given, len(scripted) - 1)]
            self._replies_given += 1
        return text


class _QuietHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    errors: list[BaseException]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out close their end, so a late write fails: expected, not news.
        # Anything else (a responder that raised, a bad fault rule) is kept for the test to see.
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError)) and error is not None:
            self.errors.append(error)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAIServer  # set on the per-server subclass
    protocol_version = "HTTP/1.0"  # one request per connection keeps shutdown and resets simple

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            self._send_error_json(404, "not_found", f"no route GET {self.path}; try /v1/models")
            return
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.fake.models]
        self._send_json(200, {"object": "list", "data": data})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_error_json(404, "not_found", f"no route POST {self.path}; try /v1/chat/completions")
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            self._send_error_json(400, "invalid_json", f"request body is not JSON: {exc}")
            return
        if body.get("stream"):
            self._send_error_json(400, "stream_unsupported", "streaming is not supported; send stream=false")
            return
        kind = self.fake._admit(body)
        if kind in ERROR_TYPES:
            self._send_error_json(int(kind), ERROR_TYPES[kind], f"injected fault: HTTP {kind}")
        elif kind == "reset":
            self._reset_connection()
        elif kind == "empty":
            self._send_completion(body, "")
        elif kind == "prose":
            self._send_completion(body, PROSE_REPLY)
        elif kind == "truncated":
            payload = json.dumps(self._completion_json(body, self.fake._reply_text(body))).encode()
            self._send_bytes(200, payload[: len(payload) // 2])
        else:
            if kind == "hang" and self.fake._stopping.wait(self.fake.hang_s):
                self._reset_connection()  # shutting down: do not keep the test waiting
                return
            self._send_completion(body, self.fake._reply_text(body))

    # -- responses ------------------------------------------------------------------------

    def _completion_json(self, body: dict, text: str) -> dict:
        prompt = "".join(str(m.get("content") or "") for m in body.get("messages", []))
        prompt_tokens, completion_tokens = rough_token_count(prompt), rough_token_count(text)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _send_completion(self, body: dict, text: str) -> None:
        self._send_json(200, self._completion_json(body, text))

    def _send_error_json(self, status: int, code: str, message: str) -> None:
        error = {"error": {"message": message, "type": code, "param": None, "code": code}}
        headers = {"Retry-After": "0", "retry-after-ms": str(self.fake.retry_after_ms)} if status >= 429 else {}
        self._send_json(status, error, headers)

    def _send_json(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), headers)

    def _send_bytes(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _reset_connection(self) -> None:
        # Linger on with timeout 0 makes close() send RST instead of a graceful FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True


def user_text(request: dict) -> str:
    """The user messages of a chat request, joined (what a responder decides on)."""
    return "\n".join(str(m.get("content") or "") for m in request.get("messages", []) if m.get("role") == "user")


def is_analysis(prompt: str) -> bool:
    """True for evolveflow's analyst prompt (it lists the round's facts), False for a proposal."""
    return "## Facts" in prompt


def offline_responder(seed: int = 0, delay_s: float = 0.0) -> Callable[[dict], str]:
    """A responder that answers like evolveflow's offline models: real edits to proposals, a
    factual lesson to analyses (after delay_s seconds, to stand for a slow model)."""
    from evolveflow.llm.offline import analyst_reply, mutator_reply

    counter = itertools.count()

    def respond(request: dict) -> str:
        if delay_s:
            time.sleep(delay_s)
        prompt = user_text(request)
        return analyst_reply(prompt) if is_analysis(prompt) else mutator_reply(prompt, f"{seed}:{next(counter)}")
    return respond
