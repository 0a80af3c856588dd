"""Shared fixtures: an isolated, offline Prefect test server for the whole session."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before Prefect is imported anywhere: its home, and quiet offline settings.
_HOME = tempfile.mkdtemp(prefix="evolveflow-prefect-")
os.environ["PREFECT_HOME"] = _HOME
os.environ.pop("PREFECT_API_URL", None)
for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
    os.environ.pop(key, None)

import evolveflow  # noqa: E402,F401  (applies the offline defaults)
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def prefect_server():
    """A real Prefect API (SQLite) for flow tests; started once, ~10-25 s on 2 cores."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def repo_root() -> Path:
    return REPO
