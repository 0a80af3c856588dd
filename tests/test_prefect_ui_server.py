"""The night's search as a user runs it: a real `prefect server` on 127.0.0.1, a process work pool,
a worker, `prefect deploy --all`, `prefect deployment run`; then what the UI would show, read back
through the API. Loopback only, bounded (~2 min on 2 cores); runs in a copy of the repository so
the search's storage stays out of the working tree."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PREFECT = [sys.executable, "-m", "prefect"]
DEPLOYMENT = "evolve-search/circle-packing-nightly"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(condition, timeout_s: float, what: str, every_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """A server, a pool, the deployments and a worker, in a copy of the repository."""
    base = tmp_path_factory.mktemp("night")
    work = base / "repo"
    shutil.copytree(REPO, work, ignore=shutil.ignore_patterns(
        ".venv", ".git", "runs", "build", "__pycache__", "*.egg-info", ".pytest_cache", "node_modules"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(base / "prefect-home"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PREFECT_CLI_PROMPT": "false",
        # No logging settings: evolveflow's own defaults must send the round lines to the server.
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PWD": str(work),  # prefect.yaml pulls into {{ $PWD }}: the copy, not the working tree
    })
    logs = base / "logs"
    logs.mkdir()
    server = subprocess.Popen(PREFECT + ["server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, cwd=work, stdout=open(logs / "server.log", "w"), stderr=subprocess.STDOUT)
    worker = None
    try:
        import urllib.request

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
                    return True
            except OSError:
                return False
        _wait(healthy, 120, "the Prefect server")
        run = lambda *args, **kw: subprocess.run(PREFECT + list(args), env=env, cwd=work, capture_output=True,  # noqa: E731
                                                 text=True, timeout=kw.pop("timeout", 240), **kw)
        assert run("work-pool", "create", "evolveflow-local", "--type", "process", "--overwrite").returncode == 0
        deployed = run("--no-prompt", "deploy", "--all")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        worker = subprocess.Popen(PREFECT + ["worker", "start", "--pool", "evolveflow-local"], env=env, cwd=work,
                                  stdout=open(logs / "worker.log", "w"), stderr=subprocess.STDOUT)
        yield {"env": env, "work": work, "run": run, "logs": logs}
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGINT)  # SIGTERM may not stop it
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def _api(night, code: str) -> str:
    """Runs a snippet against the night's server in a fresh process (its own settings) and returns stdout."""
    done = subprocess.run([sys.executable, "-c", code], env=night["env"], cwd=night["work"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


READ_RUNS = """
import json
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as c:
    runs = c.read_flow_runs(limit=200)
    print(json.dumps([{"id": str(r.id), "name": r.name, "state": r.state.type.value, "msg": r.state.message,
                       "tags": r.tags, "params": r.parameters, "created": r.created.isoformat()} for r in runs]))
"""


def _runs(night) -> list[dict]:
    import json

    return json.loads(_api(night, READ_RUNS))


def test_a_deployment_run_shows_names_logs_result_and_artifacts(night):
    done = night["run"]("deployment", "run", DEPLOYMENT, "--param", "rounds=3", "--watch", timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = _runs(night)
    search = [r for r in runs if r["name"].startswith("circle_packing-20")]
    rounds = [r for r in runs if r["name"].startswith("circle_packing-round-")]
    assert len(search) == 1 and search[0]["state"] == "COMPLETED"
    assert sorted(r["name"] for r in rounds) == [f"circle_packing-round-{i}" for i in (1, 2, 3)]
    assert all(r["state"] == "COMPLETED" and r["params"]["experiment"] == "circle_packing" for r in rounds)
    out = _api(night, f"""
import json
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
with get_client(sync_client=True) as c:
    result = c.read_flow_run("{search[0]['id']}").state.result()
    arts = {{a.key: a.data for a in c.read_latest_artifacts(limit=50)}}
    round_logs = [l.message for l in c.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_={[r['id'] for r in rounds]!r})))]
    print(json.dumps({{"result": result, "arts": arts, "round_logs": round_logs}}, default=str))
""")
    import json

    seen = json.loads(out)
    result, arts = seen["result"], seen["arts"]
    assert result["rounds_done"] == 3 and result["stop_reason"] == "rounds"
    assert set(arts) >= {"circle-packing-leaderboard", "circle-packing-best", "circle-packing-progress",
                         "circle-packing-summary"}
    board = json.loads(arts["circle-packing-leaderboard"]) if isinstance(arts["circle-packing-leaderboard"], str) \
        else arts["circle-packing-leaderboard"]
    from storage.tree import TreeStore

    with TreeStore(night["work"] / "runs" / "circle_packing" / "tree.duckdb", read_only=True) as tree:
        best = tree.best()
    assert board[0]["node"] == best.id and board[0]["score"] == round(best.score, 6) == round(result["best_score"], 6)
    assert sum(m.startswith("round ") for m in seen["round_logs"]) == 3


def test_an_overlapping_run_is_cancelled_and_a_killed_search_leaves_nothing_running(night):
    started = night["run"]("deployment", "run", DEPLOYMENT, "--param", "rounds=300")
    assert started.returncode == 0

    def running_search():
        return next((r for r in _runs(night) if r["name"].startswith("circle_packing-20")
                     and r["state"] == "RUNNING" and any(t.startswith("evolveflow-pid:") for t in r["tags"])), None)
    long_run = _wait(running_search, 120, "the long search to run", every_s=2)
    _wait(lambda: sum(r["name"].startswith("circle_packing-round-") for r in _runs(night)) >= 6, 60,
          "rounds of the long search", every_s=1)
    overlap = night["run"]("deployment", "run", DEPLOYMENT, "--param", "rounds=1", "--watch", timeout=120)
    import re

    name = re.search(r"Created flow run '([^']+)'", overlap.stdout)[1]
    [second] = [r for r in _runs(night) if r["name"] == name]
    assert second["state"] == "CANCELLED", (second, overlap.stdout[-1000:])  # not FAILED with a traceback
    assert "concurrency" in (second["msg"] or "").lower()

    pid = int(next(t for t in long_run["tags"] if t.startswith("evolveflow-pid:")).rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: any(r["id"] == long_run["id"] and r["state"] != "RUNNING" for r in _runs(night)), 60,
          "the worker to see the search die", every_s=1)
    after = night["run"]("deployment", "run", DEPLOYMENT, "--param", "rounds=1", "--watch", timeout=240)
    assert after.returncode == 0, after.stdout[-2000:]
    runs = _runs(night)
    assert [r["name"] for r in runs if r["state"] == "RUNNING"] == []
    round_names = [r["name"] for r in runs if r["name"].startswith("circle_packing-round-")]
    assert len(round_names) == len(set(round_names))  # no round number used twice
