"""`status` and `best` tell the truth: a search that is starting says so, and the round count is
the rounds that produced a node, with the numbers a kill lost reported, not hidden in the count.
Real CLI subprocesses, a real lock, real DuckDB trees."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evolveflow.experiment import load_experiment
from evolveflow.records import EvalResult, Node, Outcome, Status
from evolveflow.search_lock import SearchAlreadyRunning, SearchLock, is_locked
from storage.report import build_report, write_report
from storage.tree import TreeStore
from tests.test_cli_tables import build_experiment
from tests.test_resilience_e2e import _api_url, experiment

CLI = [sys.executable, "-m", "evolveflow.cli"]


def cli(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), cwd=root, capture_output=True, text=True, timeout=120, env=env)


def scaffold(root: Path) -> Path:
    subprocess.run(CLI + ["init", "demo"], cwd=root, capture_output=True, text=True, check=True)
    return root / "experiments" / "demo"


def test_status_and_best_of_a_new_experiment_whose_search_is_starting(tmp_path):
    scaffold(tmp_path)
    exp = load_experiment("demo", tmp_path)
    lock = SearchLock.hold_while_starting(exp.lock_path)  # what `evolveflow run` does before Prefect
    try:
        status = cli(tmp_path, "status", "demo")
        best = cli(tmp_path, "best", "demo")
        as_json = json.loads(cli(tmp_path, "status", "demo", "--json").stdout)
    finally:
        lock.release()
    since = json.loads(exp.lock_path.read_text())["started"].split(" ")[1]
    assert status.returncode == 0, status.stderr
    assert f"starting: a search on demo is starting (pid {os.getpid()}, since {since})" in status.stdout
    assert "has not been run yet" not in status.stdout + status.stderr
    assert status.stdout.startswith("demo: rounds 0, nodes 0 (nothing has run yet")
    assert best.returncode == 2
    assert best.stderr.strip() == (f"evolveflow: error: demo has no evaluated node yet: a search on it is "
                                   f"starting (pid {os.getpid()}, since {since})")
    assert as_json["running"] == {"phase": "starting", "pid": os.getpid(), "since": since, "rounds_done": 0}
    assert not is_locked(exp.lock_path)


def test_a_previous_report_is_shown_as_such_until_the_starting_search_publishes(tmp_path):
    build_experiment(tmp_path)
    exp = load_experiment("demo", tmp_path)
    with TreeStore(exp.tree_path, read_only=True) as tree:  # what the previous search published at its end
        write_report(exp.report_path, build_report(tree, "demo", {"pid": 4242, "search_id": "s", "rounds_done": 3}))
    old = time.time() - 60
    os.utime(exp.report_path, (old, old))
    lock = SearchLock.hold_while_starting(exp.lock_path)
    try:
        starting = cli(tmp_path, "status", "demo")
        best = cli(tmp_path, "best", "demo")
        with TreeStore(exp.tree_path, read_only=True) as tree:  # the new search's first report
            write_report(exp.report_path, build_report(tree, "demo", {"pid": os.getpid(), "search_id": "t",
                                                                      "rounds_done": 1}))
        running = cli(tmp_path, "status", "demo")
    finally:
        lock.release()
    assert starting.returncode == 0, starting.stderr
    assert "last report of the previous search" in starting.stdout
    assert f"is starting (pid {os.getpid()}, since " in starting.stdout
    assert "running: pid 4242" not in starting.stdout  # the previous search is not running
    assert best.returncode == 0 and "last report of the previous search" in best.stdout
    assert "live snapshot from the running search" in running.stdout
    assert f"running: pid {os.getpid()}, 1 rounds done in this run" in running.stdout


def test_the_search_flow_inherits_the_starting_lock_and_a_second_search_is_refused(tmp_path):
    path = tmp_path / "search.lock"
    early = SearchLock.hold_while_starting(path)
    flow_lock = SearchLock(path)
    flow_lock.acquire()  # the flow, in the same process: inherits, does not deadlock or refuse
    with pytest.raises(SearchAlreadyRunning, match=f"pid {os.getpid()}"):
        SearchLock(path).acquire()  # anyone else, even in this process, is refused
    early.release()  # the run's own release is a no-op once inherited
    assert is_locked(path)
    flow_lock.release()
    assert not is_locked(path)


def _finished(tree: TreeStore, node_id: int, rnd: int) -> None:
    tree.finish_node(Node(id=node_id, parent_id=1 if node_id > 1 else None, round=rnd, code=f"x = {node_id}\n",
                          code_hash=f"h{node_id}", motivation="m", status=Status.OK, score=float(node_id)),
                     [EvalResult(outcome=Outcome.OK, score=float(node_id), duration_s=0.1)])


def test_status_counts_rounds_that_produced_a_node_and_reports_the_numbers_a_kill_lost(tmp_path):
    scaffold(tmp_path)
    exp = load_experiment("demo", tmp_path)
    with TreeStore(exp.tree_path) as tree:
        for node_id, rnd in ((1, 0), (2, 1), (3, 2), (4, 4), (5, 7)):  # 3, 5, 6 killed before their node
            _finished(tree, node_id, rnd)
    (exp.storage_dir / "last_round").write_text("8\n")  # 8 too: handed out, then kill -9
    status = cli(tmp_path, "status", "demo")
    as_json = json.loads(cli(tmp_path, "status", "demo", "--json").stdout)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("demo: rounds 4 (4 more round number(s) ended with no node: killed or "
                                    "failed before it was written), nodes 5 (from ")
    assert (as_json["rounds"], as_json["round_numbers_lost"]) == (4, 4)


def test_a_running_searchs_rounds_in_flight_are_not_counted_lost(tmp_path):
    scaffold(tmp_path)
    exp = load_experiment("demo", tmp_path)
    with TreeStore(exp.tree_path) as tree:
        for node_id, rnd in ((1, 0), (2, 1), (3, 3), (4, 5)):  # 2 lost to an earlier kill; run began at 4
            _finished(tree, node_id, rnd)
        (exp.storage_dir / "last_round").write_text("8\n")  # 4, 6, 7, 8 in flight
        (exp.storage_dir / "run_first_round").write_text("4\n")
        live = build_report(tree, "demo", {"pid": 1, "search_id": "s", "rounds_done": 1})
        after = build_report(tree, "demo")  # once it has stopped: the numbers with no node are lost
    assert (live["rounds"], live["round_numbers_lost"]) == (3, 1)
    assert (after["rounds"], after["round_numbers_lost"]) == (3, 5)


@pytest.mark.usefixtures("prefect_server")
def test_evolveflow_run_says_starting_from_the_config_check_until_its_first_report(tmp_path):
    # While HOLD exists the initial evaluation waits: the search is starting all that time.
    exp_dir = experiment(tmp_path, '''
import time

def evaluate(program_path):
    while os.path.exists(os.path.join(os.path.dirname(__file__), "HOLD")):
        time.sleep(0.05)
    return {"score": -mse(load(program_path))}
''', "cognition: {embeddings: false}\nevaluation: {evaluator: evaluator.py, timeout_s: 60, sandbox: process}\n")
    (exp_dir / "HOLD").write_text("")
    env = {**os.environ, "PREFECT_API_URL": _api_url()}
    proc = subprocess.Popen(CLI + ["run", "demo", "--rounds", "2"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        lock_path = tmp_path / "runs" / "demo" / "search.lock"
        deadline = time.monotonic() + 60
        while not is_locked(lock_path):
            assert time.monotonic() < deadline and proc.poll() is None, "the run never took the lock"
            time.sleep(0.05)
        first = cli(tmp_path, "status", "demo", env=env)
        second = cli(tmp_path, "run", "demo", "--rounds", "1", env=env)  # refused at once, by pid
        time.sleep(3)  # the flow has taken over the lock by now, or is importing Prefect: still starting
        later = cli(tmp_path, "status", "demo", env=env)
        (exp_dir / "HOLD").unlink()
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
    for status in (first, later):
        assert status.returncode == 0, status.stderr
        assert f"a search on demo is starting (pid {proc.pid}, since " in status.stdout
    assert second.returncode == 2 and f"pid {proc.pid}" in second.stderr
    done = cli(tmp_path, "status", "demo", env=env)
    assert done.stdout.startswith("demo: rounds 2, nodes 3") and "not running" in done.stdout
