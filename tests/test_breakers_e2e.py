"""Circuit breakers end to end: an LLM that is down, an evaluator that is down, a disk that is full.
The search stops with the cause, a non-zero exit, and nothing further spent. Real Prefect API,
a loopback LLM server, real subprocesses, a real (tmpfs) full disk."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evolveflow.breakers import SearchStopped
from evolveflow.records import Status
from flows.search import evolve_search
from tests.support.openai_server import FakeOpenAIServer
from tests.test_resilience_e2e import _api_url, experiment, tree_of

pytestmark = pytest.mark.usefixtures("prefect_server")

SCORE = 'def evaluate(program_path):\n    return {"score": -mse(load(program_path))}\n'


@pytest.mark.parametrize("fault, says", [("503", "the LLM failed every call for 3 rounds in a row"),
                                         ("prose", "the LLM gave no usable reply for 3 rounds in a row")])
def test_a_down_or_babbling_llm_stops_the_search_after_n_rounds(tmp_path, fault, says):
    with FakeOpenAIServer(responder=["x"], faults=lambda body: fault) as srv:
        experiment(tmp_path, SCORE, f"api: {{model: openai/stub, api_base: '{srv.base_url}', num_retries: 0, "
                                    f"max_reply_attempts: 1, retry_backoff_s: 0.01}}\n"
                                    "tasks: {generate: {retries: 0}}\nstop: {llm_down_rounds: 3}\n")
        os.environ["OPENAI_API_KEY"] = "x"
        try:
            with pytest.raises(SearchStopped, match=says):
                evolve_search(experiment="demo", rounds=50, root=str(tmp_path))
        finally:
            del os.environ["OPENAI_API_KEY"]
        spent = len(srv.requests)
        time.sleep(1.0)
        assert len(srv.requests) == spent  # nothing further is spent once stopped
    assert spent == 3  # three failed rounds of one call each, not fifty
    with tree_of(tmp_path) as tree:
        assert tree.ids_with_status(Status.PENDING) == []
        assert len(tree.ids_with_status(Status.REJECTED)) == 3
        stop = tree._fetch("SELECT stop_reason FROM runs")[0][0]
    assert stop.startswith("stopped: ") and says in stop


def test_an_evaluator_with_only_infrastructure_failures_stops_the_search(tmp_path):
    experiment(tmp_path, '''
INITIAL = open(os.path.join(os.path.dirname(__file__), "initial_program.py")).read()

def evaluate(program_path):
    if open(program_path).read() != INITIAL:
        return {"retry": True, "error": "GPU node unavailable"}
    return {"score": -mse(load(program_path))}
''', "tasks: {evaluate: {retries: 0}}\nstop: {evaluator_down_rounds: 2}\n")
    with pytest.raises(SearchStopped, match="only infrastructure failures for 2 rounds.*GPU node unavailable"):
        evolve_search(experiment="demo", rounds=50, root=str(tmp_path))
    with tree_of(tmp_path) as tree:
        assert len(tree.ids_with_status(Status.INFRA_FAILED)) == 2
        assert tree.ids_with_status(Status.PENDING) == []


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_a_full_disk_stops_the_search_naming_the_path_and_no_space(tmp_path):
    runs = tmp_path / "runs"
    if not _mount_tmpfs(runs, "64m"):
        pytest.skip("needs root and mount to put the storage on a small tmpfs")
    try:
        experiment(tmp_path, 'import time\n' + SCORE.replace("    return", "    time.sleep(0.1)\n    return"),
                   "evaluation: {evaluator: evaluator.py, timeout_s: 20, sandbox: process}\n")
        env = {**os.environ, "PREFECT_API_URL": _api_url()}
        proc = subprocess.Popen([sys.executable, "-m", "evolveflow.cli", "run", "demo", "--rounds", "500"],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        report = runs / "demo" / "report.json"
        deadline = time.monotonic() + 120
        while not (report.exists() and (json.loads(report.read_text() or "{}").get("rounds", 0) >= 3)):
            assert proc.poll() is None and time.monotonic() < deadline, "no progress"
            time.sleep(0.2)
        filler = runs / "filler"
        with open(filler, "wb") as handle:  # fill the disk to the last byte
            try:
                while True:
                    handle.write(b"\0" * (1 << 20))
                    handle.flush()
            except OSError:
                pass
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 3, out
        assert "No space left on device" in out and str(runs / "demo") in out, out
        assert "Traceback" not in out, out
        assert "cannot rollback" not in out
        filler.unlink()  # space freed: the data is intact and the search resumes
        with tree_of(tmp_path) as tree:
            done = len(tree.node_ids())
        again = subprocess.run([sys.executable, "-m", "evolveflow.cli", "run", "demo", "--rounds", "2"],
                               cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
        assert again.returncode == 0, again.stdout + again.stderr
        with tree_of(tmp_path) as tree:
            assert tree.ids_with_status(Status.PENDING) == []
            assert len(tree.node_ids()) >= done + 2 and tree.best() is not None
    finally:
        subprocess.run(["umount", "-l", str(runs)], capture_output=True)


def test_an_evaluator_down_on_the_initial_program_is_a_breaker_not_bad_input(tmp_path):
    experiment(tmp_path, 'def evaluate(program_path):\n    return {"retry": True, "error": "GPU node unavailable"}\n',
               "tasks: {evaluate: {retries: 0}}\n")
    with pytest.raises(SearchStopped, match="infrastructure failures on the initial program.*GPU node unavailable"):
        evolve_search(experiment="demo", rounds=5, root=str(tmp_path))
    with tree_of(tmp_path) as tree:
        assert tree._fetch("SELECT stop_reason FROM runs")[0][0].startswith("stopped: ")
