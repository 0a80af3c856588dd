"""scripts/prefect-postgres.sh end to end: a private PostgreSQL cluster and a Prefect server on free
loopback ports, a 2-round search through the CLI against it, its flow runs read back through the API,
then --stop. Needs PostgreSQL's initdb (Debian: apt-get install postgresql); ~40 s on 2 cores."""
from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "prefect-postgres.sh"
sys.path.insert(0, str(REPO))


def _initdb() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return found[-1] if found else shutil.which("initdb")


pytestmark = pytest.mark.skipif(
    _initdb() is None, reason="PostgreSQL's initdb is not installed (Debian: apt-get install postgresql)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, path: str, body: dict) -> list | dict:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def test_search_runs_against_the_postgres_backed_server():
    from bench.round_overhead import write_experiment

    # Not pytest's tmp_path: its parents are mode 700 and, as root, the cluster belongs to `postgres`.
    base = Path(tempfile.mkdtemp(prefix="evolveflow-pg-"))
    base.chmod(0o755)
    pg_dir, root = base / "pg", base / "root"
    pg_dir.mkdir(mode=0o755)
    root.mkdir()
    write_experiment(root, "process")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    port = _free_port()
    script = subprocess.Popen([str(SCRIPT), "--dir", str(pg_dir), "--port", str(port), "--pg-port", str(_free_port())],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not (pg_dir / "prefect.url").exists():
            assert script.poll() is None, f"the script exited {script.returncode}: {script.stdout.read()}"
            assert time.monotonic() < deadline, "the Prefect server was not healthy within 90 s"
            time.sleep(0.3)
        url = (pg_dir / "prefect.url").read_text().strip()
        assert url == f"http://127.0.0.1:{port}/api"
        assert "postgresql+asyncpg://prefect:" not in (pg_dir / "prefect.log").read_text()  # no password in logs
        assert (pg_dir / "prefect.password").stat().st_mode & 0o077 == 0

        search = subprocess.run(
            [sys.executable, "-m", "evolveflow.cli", "run", "bench", "--rounds", "2"], cwd=root, text=True,
            env={**env, "PREFECT_API_URL": url, "PREFECT_HOME": str(base / "home")},
            capture_output=True, timeout=120)
        assert search.returncode == 0, search.stdout[-3000:] + search.stderr[-3000:]

        runs = _api(url, "/flow_runs/filter", {"sort": "START_TIME_ASC"})
        flows = {f["id"]: f["name"] for f in _api(url, "/flows/filter", {})}
        rounds = [r for r in runs if flows[r["flow_id"]] == "evolve-round"]
        searches = [r for r in runs if flows[r["flow_id"]] == "evolve-search"]
        assert len(rounds) == 2 and len(searches) == 1, [(flows[r["flow_id"]], r["name"]) for r in runs]
        assert {r["state_type"] for r in rounds + searches} == {"COMPLETED"}
        # The database behind it is PostgreSQL: the runs are in the cluster's `prefect` database.
        assert (pg_dir / "pgdata" / "PG_VERSION").exists()
    finally:
        stopped = subprocess.run([str(SCRIPT), "--dir", str(pg_dir), "--stop"], env=env, capture_output=True,
                                 text=True, timeout=60)
        try:
            script.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(script.pid, signal.SIGKILL)
            script.wait()
        left = [name for name in ("prefect.pid", "script.pid", "pgdata/postmaster.pid") if (pg_dir / name).exists()]
        shutil.rmtree(base, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert script.returncode == 0
    assert left == [], f"still running after --stop: {left}"
