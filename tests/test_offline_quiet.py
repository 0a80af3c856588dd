"""The offline defaults: nothing leaves the machine (checked where strace is available)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import evolveflow  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


def test_offline_defaults_are_set_without_overriding_the_user(monkeypatch):
    from evolveflow.quiet import OFFLINE_DEFAULTS, apply_offline_defaults

    monkeypatch.setenv("LITELLM_LOG", "DEBUG")
    for key in ("ORT_DISABLE_TELEMETRY", "PREFECT_SERVER_ANALYTICS_ENABLED", "LITELLM_LOCAL_MODEL_COST_MAP"):
        monkeypatch.delenv(key, raising=False)
    apply_offline_defaults()
    assert os.environ["LITELLM_LOG"] == "DEBUG"
    assert os.environ["ORT_DISABLE_TELEMETRY"] == OFFLINE_DEFAULTS["ORT_DISABLE_TELEMETRY"]
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed (apt-get install strace)")
def test_embedding_model_and_litellm_open_no_outside_connection(tmp_path):
    # onnxruntime's telemetry thread fires seconds after import: wait long enough to see it.
    code = ("import evolveflow, time, litellm\n"
            "from storage.embeddings import load_embedder\n"
            "load_embedder(True).embed(['hello'])\ntime.sleep(15)\n")
    log = tmp_path / "strace.log"
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=connect,sendto", "-s", "200", "-o", str(log),
                    sys.executable, "-c", code], cwd=REPO, env=env, check=True, timeout=120, capture_output=True)
    outside = [line for line in log.read_text().splitlines()
               if "sin_addr" in line and 'inet_addr("127.' not in line or "events.data" in line]
    assert outside == [], outside[:5]


def test_with_a_real_server_round_logs_go_to_the_api_and_the_console_stays_quiet(monkeypatch):
    from evolveflow.quiet import apply_offline_defaults

    keys = ("PREFECT_LOGGING_TO_API_ENABLED", "PREFECT_LOGGING_LEVEL", "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL")
    for key in keys:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    apply_offline_defaults()
    assert os.environ["PREFECT_LOGGING_TO_API_ENABLED"] == "false"  # the temporary server dies with us
    for key in keys:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    apply_offline_defaults()
    assert [os.environ[k] for k in keys] == ["true", "INFO", "WARNING"]


def test_csrf_token_fetches_are_off_only_for_the_temporary_server(monkeypatch):
    """Prefect's temporary server has CSRF protection off: each round's token fetch would be wasted.
    A user's own server (PREFECT_API_URL) may have it on: the client then keeps fetching tokens."""
    from evolveflow.quiet import apply_offline_defaults

    key = "PREFECT_CLIENT_CSRF_SUPPORT_ENABLED"
    monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    apply_offline_defaults()
    assert os.environ[key] == "false"
    monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    apply_offline_defaults()
    assert key not in os.environ
