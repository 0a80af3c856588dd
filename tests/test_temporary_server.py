"""evolveflow/temporary_server.py: Prefect's temporary server in its own session, 503s with Retry-After."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import httpx

from evolveflow import temporary_server
from evolveflow.temporary_server import OUR_FACTORY, PREFECT_FACTORY, RetrySoon


async def _app(scope, receive, send):
    """A plain ASGI app: /busy answers 503 (as Prefect does for a locked SQLite write), else 200."""
    status = 503 if scope["path"] == "/busy" else 200
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"x"})


def _get(app, path: str) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.get(path)
    return asyncio.run(go())


def test_a_503_carries_a_short_retry_after_and_other_answers_do_not():
    app = RetrySoon(_app, "0.2")
    busy, fine = _get(app, "/busy"), _get(app, "/ok")
    assert busy.status_code == 503 and busy.headers["retry-after"] == "0.2"
    assert fine.status_code == 200 and "retry-after" not in fine.headers
    assert _get(_app, "/busy").headers.get("retry-after") is None  # the bare app sends none


def test_prefect_client_waits_the_retry_after_not_its_two_second_backoff():
    """Prefect's own client code parses the header we send (seconds as a float)."""
    from prefect.client.base import _parse_retry_after

    assert _parse_retry_after(temporary_server.RETRY_AFTER_S) == 0.2


def test_the_launcher_swaps_in_our_factory_and_starts_a_new_session(tmp_path):
    script = "import json, os, sys; print(json.dumps([sys.argv[1:], os.getsid(0) == os.getpid()]))"
    proc = temporary_server._Launcher().Popen(
        [sys.executable, "-c", script, "--factory", PREFECT_FACTORY], stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=30)
    args, leads_its_session = json.loads(out)
    assert args == ["--factory", OUR_FACTORY] and leads_its_session


def test_install_patches_prefects_server_module_only_without_an_api_url(monkeypatch):
    from prefect.server.api import server

    monkeypatch.setattr(server, "subprocess", subprocess)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    temporary_server.install()
    assert server.subprocess is subprocess
    monkeypatch.delenv("PREFECT_API_URL")
    temporary_server.install()
    assert isinstance(server.subprocess, temporary_server._Launcher)


def test_our_factory_serves_prefects_api(tmp_path):
    """uvicorn --factory evolveflow.temporary_server:create_app, as Prefect launches it, answers /api/health."""
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PREFECT_HOME": str(tmp_path), "PREFECT__SERVER_EPHEMERAL": "1",
           "PREFECT__SERVER_FINAL": "1", "PREFECT_UI_ENABLED": "0"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", OUR_FACTORY, "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "error"], env=env, start_new_session=True)
    try:
        deadline, answer = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.3)
        assert answer is not None and answer.status_code == 200 and answer.json() is True
    finally:
        proc.terminate()
        proc.wait(timeout=30)
