"""The second Ctrl-C / SIGTERM aborts the rounds in flight at once, end to end: evaluator process
trees killed, rounds in flight recorded as abandoned (with what they cost), Prefect round runs
Cancelled, not left RUNNING. Real CLI subprocess, a real Prefect API, a loopback LLM server."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evolveflow.records import Status
from tests.support.openai_server import FakeOpenAIServer
from tests.test_resilience_e2e import _api_url, experiment, tree_of

pytestmark = pytest.mark.usefixtures("prefect_server")

# Every candidate but the initial program starts a grandchild and hangs for 10 minutes; each
# evaluator writes its pid and the grandchild's to PIDS (the process level: the folder is writable).
HANGING_EVALUATOR = '''
import subprocess, time

INITIAL = open(os.path.join(os.path.dirname(__file__), "initial_program.py")).read()

def evaluate(program_path):
    if open(program_path).read() != INITIAL:
        child = subprocess.Popen(["sleep", "600"])
        with open(os.path.join(os.path.dirname(__file__), "PIDS"), "a") as pids:
            pids.write(f"{os.getpid()} {child.pid}\\n")
        time.sleep(600)
    return {"score": -mse(load(program_path))}
'''


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _start(tmp_path: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_API_URL": _api_url(), **(extra_env or {})}
    return subprocess.Popen([sys.executable, "-m", "evolveflow.cli", "run", "demo", "--rounds", "50"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the search ended before {what}: {proc.communicate()[0]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _two_signals(proc: subprocess.Popen, sig: signal.Signals) -> tuple[str, float]:
    proc.send_signal(sig)
    time.sleep(1.0)
    assert proc.poll() is None, "the first signal must let the rounds in flight finish, not abort"
    proc.send_signal(sig)
    sent = time.monotonic()
    # The evaluators would hang 600 s and the LLM 600 s: an exit well before proves the abort.
    out, _ = proc.communicate(timeout=90)
    return out, time.monotonic() - sent


def _round_runs_left_running() -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowFilter, FlowFilterName, FlowRunFilter,
                                                FlowRunFilterState, FlowRunFilterStateType,
                                                FlowRunFilterTags)
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["evolve-search", "evolve-round"])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])),
                tags=FlowRunFilterTags(all_=["experiment:demo"])))
        return [r.name for r in runs]


def two_evaluations_in_flight(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """Starts `evolveflow run` on an experiment whose candidates hang; returns once two evaluate."""
    exp = experiment(tmp_path, HANGING_EVALUATOR,
                     "evaluation: {evaluator: evaluator.py, timeout_s: 900, sandbox: process}\n"
                     "pipeline: {parallel: {num_workers: 2}}\n")
    proc = _start(tmp_path)
    pids_file = exp / "PIDS"
    _wait_for(lambda: pids_file.exists() and len(pids_file.read_text().splitlines()) >= 2, proc,
              "two evaluations in flight")
    return proc, pids_file


# SIGTERM here; the second SIGINT is the LLM test's below (flows/signals.py treats both alike,
# tests/test_signals.py checks that with real signals).
@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_second_signal_kills_hanging_evaluators_and_records_their_rounds_abandoned(tmp_path, sig):
    proc, pids_file = two_evaluations_in_flight(tmp_path)
    out, seconds = _two_signals(proc, sig)
    assert proc.returncode == 130, out
    assert "aborting the rounds in flight" in out, out
    assert "Traceback" not in out and "nanobind" not in out, out
    pids = [int(p) for line in pids_file.read_text().splitlines() for p in line.split()]
    assert not [p for p in pids if _alive(p)], "evaluators or their children outlived the abort"
    with tree_of(tmp_path) as tree:
        assert tree.ids_with_status(Status.PENDING) == []
        abandoned = [tree.node(i) for i in tree.ids_with_status(Status.ABANDONED)]
        assert len(abandoned) >= 2  # both hanging evaluations, and any round still proposing
        assert all("aborted" in n.error for n in abandoned)
        # Nothing of the abort is counted against a candidate or as a score.
        assert all(n.score is None for n in abandoned)
        assert tree.ids_with_status(Status.CANDIDATE_ERROR) == []
        runs = tree._fetch("SELECT stop_reason FROM runs")
    assert any(r[0] and r[0].startswith(f"aborted by a second {sig.name}") for r in runs), runs
    assert _round_runs_left_running() == []
    print(f"exit {seconds:.1f} s after the second {sig.name}")


def test_second_ctrl_c_does_not_wait_for_a_hanging_llm_and_keeps_what_was_paid(tmp_path):
    # The first proposal call of each round is answered; every later call hangs for 10 minutes.
    answered: list[int] = []

    def fault(_body: dict) -> str | None:
        answered.append(1)
        return "hang" if len(answered) > 1 else None

    with FakeOpenAIServer(responder=["no edit here"], faults=fault, hang_s=600) as srv:
        experiment(tmp_path, 'def evaluate(program_path):\n    return {"score": -mse(load(program_path))}\n',
                   f"api: {{model: openai/stub, api_base: '{srv.base_url}', timeout_s: 900, num_retries: 0, retry_backoff_s: 0.01}}\n"
                   "pipeline: {parallel: {num_workers: 2}}\n")
        proc = _start(tmp_path, {"OPENAI_API_KEY": "x"})
        _wait_for(lambda: len(answered) >= 3, proc, "LLM calls in flight")
        out, seconds = _two_signals(proc, signal.SIGINT)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "nanobind" not in out, out  # threads left waiting on the LLM
    with tree_of(tmp_path) as tree:
        assert tree.ids_with_status(Status.PENDING) == []
        abandoned = tree.ids_with_status(Status.ABANDONED)
        assert abandoned, "rounds waiting on the LLM must be recorded, not vanish"
        paid = [c for i in abandoned for c in tree.llm_calls(i) if c["prompt_tokens"]]
        assert paid, "the reply answered before the abort was paid for: it must be on record"
        rounds = sorted(n.round for n in tree.nodes(list(tree.node_ids())) if n.round > 0)
        assert rounds == list(range(1, len(rounds) + 1)), rounds  # no gap in the round numbers
    assert _round_runs_left_running() == []
    print(f"exit {seconds:.1f} s after the second SIGINT")


def test_a_terminal_ctrl_c_to_the_whole_group_spares_prefects_temporary_server(tmp_path):
    # No PREFECT_API_URL: `evolveflow run` starts Prefect's temporary server; a terminal's Ctrl-C
    # reaches the whole foreground process group. The server must survive it (own session).
    experiment(tmp_path, 'import time\ndef evaluate(program_path):\n    time.sleep(0.3)\n'
                         '    return {"score": -mse(load(program_path))}\n')
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    proc = subprocess.Popen([sys.executable, "-m", "evolveflow.cli", "run", "demo", "--rounds", "200"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    report = tmp_path / "runs" / "demo" / "report.json"
    _wait_for(lambda: report.exists() and '"rounds": 0' not in report.read_text(), proc, "a round", 180)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    assert "stopped (interrupted)" in out and "Traceback" not in out, out[-3000:]
