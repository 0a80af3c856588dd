"""Bugs a user trial of issue 7 found: cancel from Prefect, lock refusals, export onto a file,
serve.py's messages, the run header, result artifacts, progress while rounds run, an undumpable
search process. Real Prefect API, real subprocesses."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from evolveflow.progress import RoundDisplay
from evolveflow.records import Status
from evolveflow.scaffold import scaffold_experiment
from evolveflow.search_lock import SearchLock
from flows.rounds import RoundLoop, waiting_line
from flows.artifacts import pid_tag
from flows.search import evolve_search
from tests.test_abort_e2e import _round_runs_left_running, two_evaluations_in_flight
from tests.test_prefect_ui import Webhook, with_webhook
from tests.test_resilience_e2e import _api_url, tree_of

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "evolveflow.cli"]


def _search_run(pid: int):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["evolve-search"])),
                                     flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[pid_tag(pid)])))
    return runs[0] if runs else None


# ---- 1. cancel from the Prefect UI/API: the runner's SIGTERM aborts ---------------------------

@pytest.mark.usefixtures("prefect_server")
def test_cancel_in_prefect_then_sigterm_aborts_like_a_second_signal(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    proc, pids_file = two_evaluations_in_flight(tmp_path)
    run = _search_run(proc.pid)
    assert run is not None
    with get_client(sync_client=True) as client:  # what `prefect flow-run cancel` does first
        client.set_flow_run_state(run.id, Cancelling(), force=True)
    proc.send_signal(signal.SIGTERM)  # what the runner then does
    try:
        out, _ = proc.communicate(timeout=45)  # the evaluators hang 600 s: only an abort ends it now
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("a SIGTERM on a run cancelled in Prefect waited for the rounds in flight: "
                    + proc.communicate()[0][-2000:])
    assert proc.returncode == 130, out
    assert "cancelled in Prefect: aborting the rounds in flight" in out, out
    assert "search demo stopped (aborted: the flow run was cancelled in Prefect" in out, out  # the summary
    # 5. a server is set: no word of Prefect starting one; 8. the sandbox line
    assert "starts a local server" not in out and "evolveflow: sandbox: " in out, out
    with tree_of(tmp_path) as tree:
        assert tree.ids_with_status(Status.PENDING) == []
        assert len(tree.ids_with_status(Status.ABANDONED)) >= 2
    assert _round_runs_left_running() == []
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run.id).state.is_cancelled()


# ---- 2. a lock refusal: no alert, one line -----------------------------------------------------

@pytest.mark.usefixtures("prefect_server")
def test_a_run_refused_by_the_lock_sends_no_alert_and_says_it_once(tmp_path, capfd):
    hook = Webhook()
    try:
        with_webhook(scaffold_experiment("demo", tmp_path / "experiments"), hook)
        from evolveflow.experiment import load_experiment

        lock = SearchLock(load_experiment("demo", tmp_path).lock_path)
        with lock:
            capfd.readouterr()
            state = evolve_search(experiment="demo", rounds=1, root=str(tmp_path), progress=True,
                                  return_state=True)
            assert state.is_failed() and "already running" in state.message
            printed = capfd.readouterr()
            # the CLI prints `evolveflow: error: ...`: the flow itself says nothing on the console
            assert "already running" not in printed.out + printed.err.replace(state.message, "", 0), printed
            state = evolve_search(experiment="demo", rounds=1, root=str(tmp_path), return_state=True)
            assert state.is_failed()
            cli = subprocess.run(CLI + ["run", "demo", "--rounds", "1"], cwd=tmp_path, capture_output=True,
                                 text=True, timeout=120, env={**os.environ, "PREFECT_API_URL": _api_url()})
        time.sleep(0.5)
        assert hook.received == [], "nothing failed: the other search goes on"
        assert cli.returncode == 2, cli
        assert (cli.stdout + cli.stderr).count("already running") == 1, cli
    finally:
        hook.server.shutdown()


# ---- 3. export onto a file -----------------------------------------------------------------------

@pytest.mark.usefixtures("prefect_server")
def test_export_onto_an_existing_file_is_one_line_and_exit_2(tmp_path):
    scaffold_experiment("demo", tmp_path / "experiments")
    evolve_search(experiment="demo", rounds=1, root=str(tmp_path))
    target = tmp_path / "out.parquet"
    target.write_text("x")
    done = subprocess.run(CLI + ["export", "demo", "--parquet", str(target)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("evolveflow: error: --parquet ") and "is a file" in done.stderr


# ---- 4. serve.py -----------------------------------------------------------------------------------

def test_serve_names_the_port_of_the_unreachable_url():
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:4999/api"}
    done = subprocess.run([sys.executable, str(REPO / "deployments" / "serve.py"), "circle_packing"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done
    assert "--port 4999" in done.stderr and "4200" not in done.stderr, done.stderr


@pytest.mark.usefixtures("prefect_server")
def test_serve_of_an_experiment_that_does_not_exist_exits_2(tmp_path):
    env = {**os.environ, "PREFECT_API_URL": _api_url()}
    try:
        done = subprocess.run([sys.executable, str(REPO / "deployments" / "serve.py"), "nosuch_exp"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("serve.py served an experiment that does not exist")
    assert done.returncode == 2, done
    assert done.stderr.startswith("serve.py: error: no experiment 'nosuch_exp'"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# ---- 5. the run header ---------------------------------------------------------------------------

def test_run_header_mentions_the_local_server_only_without_prefect_api_url(tmp_path):
    scaffold_experiment("demo", tmp_path / "experiments")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    for api_url, expected in ((None, True), ("http://127.0.0.1:4999/api", False)):
        run_env = {**env, **({"PREFECT_API_URL": api_url} if api_url else {})}
        proc = subprocess.Popen(CLI + ["run", "demo", "--rounds", "1"], cwd=tmp_path, env=run_env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            lines = []
            while not any(" rounds of demo (" in line for line in lines):
                line = proc.stdout.readline()
                assert line, "".join(lines)
                lines.append(line)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        header = lines[-1]
        assert ("Prefect starts a local server" in header) is expected, header
        # 8. the sandbox it got, on the line before
        assert lines[-2].startswith("evolveflow: sandbox: "), lines


# ---- 6. no result artifacts per round ------------------------------------------------------------

@pytest.mark.usefixtures("prefect_server")
def test_rounds_add_no_result_artifacts_and_the_summary_result_stays(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    scaffold_experiment("demo", tmp_path / "experiments")
    state = evolve_search(experiment="demo", rounds=3, root=str(tmp_path), return_state=True)
    assert state.result()["rounds_done"] == 3
    search_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        rounds = client.read_flow_runs(flow_run_filter=None)
        round_ids = [r.id for r in rounds if r.parent_task_run_id and r.name.startswith("demo-round-")
                     and r.start_time and r.start_time >= client.read_flow_run(search_id).start_time]
        assert len(round_ids) >= 3
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[search_id, *round_ids])))
    results = [a for a in artifacts if a.key is None and a.type is None]  # what the server makes of results
    on_search = [a for a in results if a.flow_run_id == search_id]
    assert [a for a in results if a.flow_run_id in round_ids] == []
    # only the summary, the search run's own result (the API returns it: see test_prefect_ui.py)
    assert [a.task_run_id for a in on_search] == [None], [(a.task_run_id, a.data) for a in on_search]


# ---- 7. progress while rounds run and while stopping ---------------------------------------------

def test_live_bar_shows_rounds_in_flight_before_the_first_round_ends():
    out = io.StringIO()
    display = RoundDisplay(rounds=10, console=Console(file=out, force_terminal=True, width=120))
    display.in_flight(2)
    display.waiting(waiting_line({6: 0.0, 7: 50.0}, 95.0, stopping=True))
    display.close()
    text = out.getvalue()
    assert "2 in flight" in text and "0:00:0" in text  # elapsed time from the start
    assert "stopping: waiting for rounds 6 (running 95 s), 7 (running 45 s)" in text


def test_plain_lines_say_which_rounds_are_still_running():
    out = io.StringIO()
    sys_stdout, sys.stdout = sys.stdout, out
    try:
        display = RoundDisplay(rounds=10, console=Console(file=io.StringIO(), force_terminal=False))
        display.in_flight(2)
        display.waiting(waiting_line({6: 0.0}, 31.0, stopping=False))
    finally:
        sys.stdout = sys_stdout
    assert out.getvalue() == "waiting for round 6 (running 31 s)\n"


def test_first_stop_request_names_the_rounds_in_flight(capsys):
    loop = RoundLoop.__new__(RoundLoop)
    loop.running = {6: 0.0, 7: 1.0}
    loop.request_stop("SIGINT")
    assert "SIGINT: stopping after the 2 round(s) in flight (6, 7) (send it again to abort them)" in capsys.readouterr().out
    assert loop.check_cancelled is False
    loop.request_stop("SIGTERM")
    assert loop.check_cancelled is True  # the loop asks Prefect once whether the run was cancelled


# ---- 8. the search process is undumpable ---------------------------------------------------------

@pytest.mark.usefixtures("prefect_server")
def test_the_search_process_makes_itself_undumpable(tmp_path):
    # Undumpable: a process of the same user (a candidate at the process level) cannot read its
    # /proc/PID/environ. Running the reader as another user needs a venv that user can reach, so
    # this reads the flag itself (PR_GET_DUMPABLE) in the process that ran the search.
    scaffold_experiment("demo", tmp_path / "experiments")
    code = ("import ctypes, sys\n"
            "from flows.search import evolve_search\n"
            "evolve_search(experiment='demo', rounds=1, root=sys.argv[1])\n"
            "print('dumpable', ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))\n")  # PR_GET_DUMPABLE
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=180, env={**os.environ, "PREFECT_API_URL": _api_url()})
    assert done.returncode == 0, done.stderr
    assert "dumpable 0" in done.stdout, done.stdout
