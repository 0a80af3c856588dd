"""Prefect's temporary server (the one it starts when no PREFECT_API_URL is set), made fit for a search.

Two changes, both to how Prefect launches it (`prefect.server.api.server.SubprocessASGIServer`):

- it runs in a session of its own: a terminal's Ctrl-C goes to the whole foreground process
  group, and the server, started as a plain child, died of it while the search was finishing
  its rounds in flight (a flood of connection errors, then a traceback). The search still stops
  it at exit.
- a 503 it answers carries `Retry-After: 0.2`. The SQLite-backed server answers 503 when a write
  meets a concurrent one ("database is locked": a transaction that read before writing cannot
  wait for the lock); measured here on about a quarter of the subflow task-run creations, one
  per round, even at one worker. Without the header Prefect's client backs off 2, 4, 8... s, a
  stall of the whole round each time; with it, about 0.2 s, and the retry almost always passes.
"""
from __future__ import annotations

import functools
import os
import subprocess
from typing import Any

PREFECT_FACTORY = "prefect.server.api.server:create_app"
OUR_FACTORY = "evolveflow.temporary_server:create_app"
RETRY_AFTER_S = "0.2"


def install() -> None:
    """Makes Prefect start its temporary server our way (a no-op when PREFECT_API_URL names a server)."""
    if os.environ.get("PREFECT_API_URL"):
        return  # the user's server: nothing here to change, and importing Prefect's server costs ~2 s
    from prefect.server.api import server

    if not isinstance(server.subprocess, _Launcher):
        server.subprocess = _Launcher()


class _Launcher:
    """Stands in for the `subprocess` module inside Prefect's server module: Popen is ours."""

    def Popen(self, args: Any, *rest: Any, **kwargs: Any) -> subprocess.Popen:
        if isinstance(args, list) and PREFECT_FACTORY in args:
            args = [OUR_FACTORY if a == PREFECT_FACTORY else a for a in args]
        return subprocess.Popen(args, *rest, **{"start_new_session": True, **kwargs})

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)


def create_app() -> Any:
    """uvicorn's factory for the temporary server: Prefect's app behind RetrySoon."""
    from prefect.server.api.server import create_app as prefect_app

    return RetrySoon(prefect_app(), RETRY_AFTER_S)


class RetrySoon:
    """ASGI middleware: adds `Retry-After` to 503 responses (Prefect's client honours it)."""

    def __init__(self, app: Any, seconds: str) -> None:
        self.app, self.header = app, (b"retry-after", seconds.encode())

    def __getattr__(self, name: str) -> Any:  # uvicorn and Prefect look at the app's attributes
        return getattr(self.app, name)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        await self.app(scope, receive, functools.partial(self._send, send))

    async def _send(self, send: Any, message: dict) -> None:
        if message["type"] == "http.response.start" and message["status"] == 503:
            headers = [h for h in message.get("headers", []) if h[0].lower() != b"retry-after"]
            message = {**message, "headers": [*headers, self.header]}
        await send(message)
