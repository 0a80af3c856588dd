"""What the Prefect UI shows of a search, read back through the Prefect API: logs, names, results,
artifacts, crash hygiene, bad parameters. Plus the pure builders of flows/artifacts.py."""
from __future__ import annotations

import logging
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from evolveflow.records import Node, Status
from evolveflow.scaffold import scaffold_experiment
from flows.search import evolve_search  # imported before any test changes logging (imports reset it)
from flows.artifacts import (artifact_keys, best_markdown, dead_process, leaderboard_rows, pid_tag,
                             round_line, slug, summary_markdown)
from storage.tree import TreeStore


# ---- pure builders --------------------------------------------------------------------------

def _node(i: int, score: float | None, parent: int | None = None, **kw) -> Node:
    return Node(id=i, parent_id=parent, round=i, code="x = 1\n", code_hash=str(i), score=score,
                status=kw.pop("status", Status.OK), **kw)


def test_slug_makes_artifact_keys_of_any_experiment_name():
    assert slug("circle_packing") == "circle-packing"
    assert slug("My Problem (v2)!") == "my-problem-v2"
    assert slug("___") == "experiment"
    assert artifact_keys("circle_packing") == {
        "leaderboard": "circle-packing-leaderboard", "best": "circle-packing-best",
        "progress": "circle-packing-progress", "summary": "circle-packing-summary"}


def test_round_line_names_round_node_parent_status_score_and_change():
    ok = {"round": 12, "node": 13, "parent": 9, "status": "ok", "score": 1.5, "parent_score": 1.25, "error": None}
    assert round_line(ok) == "round 12 node 13 parent 9 ok score 1.500000 (+0.250000 vs parent)"
    bad = {**ok, "status": "candidate_error", "score": None, "error": "ZeroDivisionError:\n  division by zero"}
    assert round_line(bad) == "round 12 node 13 parent 9 candidate_error score -: ZeroDivisionError: division by zero"


def test_leaderboard_is_best_first_top_20_with_one_line_motivations():
    nodes = [_node(i, float(i % 7), parent=max(i - 1, 1), motivation=f"try {i}\nsecond line") for i in range(1, 31)]
    rows = leaderboard_rows(nodes)
    assert len(rows) == 20
    assert rows[0] == {"rank": 1, "node": 6, "score": 6.0, "parent": 5, "round": 6, "status": "ok",
                       "motivation": "try 6"}
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)


def test_leaderboard_motivation_is_its_first_line_cut_to_80_chars():
    long = "ROW_2_RIGHT: 0.87285 -> 0.90133 (x1.033); " * 4 + "\nwhy: the second line"
    rows = leaderboard_rows([_node(1, 1.0, motivation="\n  " + long), _node(2, 0.5, motivation="short")])
    assert rows[0]["motivation"] == long.split("\n")[0][:79] + "…" and len(rows[0]["motivation"]) == 80
    assert rows[1]["motivation"] == "short"


def test_best_page_has_score_lineage_diff_and_lesson():
    root, best = _node(1, 1.0, motivation="initial program"), _node(
        2, 1.25, parent=1, motivation="raise C1", edit="--- a\n+++ b\n-C1 = 1\n+C1 = 2\n",
        analysis="Raising C1 helped.")
    page = best_markdown("demo", best, [root, best])
    assert "**Score 1.250000** — node 2, round 2, parent 1" in page
    assert "1 (1.000000) → 2 (1.250000)" in page
    assert "```diff\n--- a\n+++ b\n-C1 = 1\n+C1 = 2\n```" in page
    assert page.rstrip().endswith("Raising C1 helped.")


def test_summary_page_has_stop_reason_outcomes_cost_and_where_the_report_is():
    summary = {"experiment": "demo", "stop_reason": "rounds", "rounds_done": 3, "by_status": {"ok": 2, "rejected": 1},
               "initial_score": 1.0, "best_score": 1.5, "best_node": 3, "seconds": 2.0, "storage": "/s",
               "usage": {"llm_calls": 6, "prompt_tokens": 10, "completion_tokens": 2, "cost_usd": None}}
    page = summary_markdown(summary, "/s/report.html")
    assert "stopped (rounds)" in page and "| outcomes | ok 2, rejected 1 |" in page
    assert "| cost | unknown |" in page and "`/s/report.html`" in page
    header = next(line for line in page.splitlines() if line.startswith("|"))
    assert header == "| item | value |"  # an empty header is a blank band in the UI


def test_dead_process_only_for_a_pid_of_this_host_that_exited():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert dead_process([pid_tag(child.pid)])
    assert not dead_process([pid_tag()])  # this process
    assert not dead_process(["evolveflow-pid:some-other-host:1"])
    assert not dead_process(["experiment:demo"])


# ---- through Prefect ---------------------------------------------------------------------------

def demo(tmp_path: Path) -> Path:
    return scaffold_experiment("demo", tmp_path / "experiments")


def run(tmp_path: Path, rounds, **kw):
    return evolve_search(experiment="demo", rounds=rounds, root=str(tmp_path), **kw)


@contextmanager
def logs_to_api():
    """Sends INFO logs of flow runs to the API (the quiet offline defaults keep them local)."""
    from prefect.settings import PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    logger = logging.getLogger("prefect.flow_runs")
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with temporary_settings(updates={PREFECT_LOGGING_TO_API_ENABLED: True}):
            yield
    finally:
        logger.setLevel(level)


def client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def runs_of(flow_name: str, tag: str = "experiment:demo") -> list:
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort

    with client() as c:
        return c.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])),
                                sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=200)


def latest_search_run():
    return runs_of("evolve-search")[0]


@pytest.mark.usefixtures("prefect_server")
def test_each_round_logs_its_outcome_and_the_search_its_summary(tmp_path):
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    demo(tmp_path)
    with logs_to_api():
        summary = run(tmp_path, 3)
        APILogWorker.drain_all(timeout=10)
    search_run = latest_search_run()
    rounds = [r for r in runs_of("evolve-round") if r.parent_task_run_id and
              r.created >= search_run.created]
    assert len(rounds) == 3
    with client() as c:
        for r in rounds:
            lines = [log.message for log in c.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id])))
                     if log.message.startswith("round ")]
            assert len(lines) == 1, lines
            assert lines[0].startswith(f"round {r.parameters['round_no']} node ") and " parent " in lines[0]
        search_logs = [log.message for log in c.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[search_run.id])))]
    assert any(m.startswith("search demo stopped (rounds) after 3 rounds") and
               f"best {summary['best_score']:.6f}" in m for m in search_logs), search_logs


@pytest.mark.usefixtures("prefect_server")
def test_runs_are_named_for_experiment_and_round_and_rounds_show_their_experiment(tmp_path):
    demo(tmp_path)
    run(tmp_path, 2)
    search_run = latest_search_run()
    assert search_run.name.startswith("demo-20")  # demo-2026-12-01T04-30-00Z
    rounds = sorted((r for r in runs_of("evolve-round") if r.created >= search_run.created),
                    key=lambda r: r.parameters["round_no"])
    assert [r.name for r in rounds] == ["demo-round-1", "demo-round-2"]
    assert rounds[0].parameters["experiment"] == "demo"
    assert {"experiment:demo", pid_tag()} <= set(rounds[0].tags) and "experiment:demo" in search_run.tags


@pytest.mark.usefixtures("prefect_server")
def test_round_numbers_handed_out_before_a_crash_are_never_reused(tmp_path):
    demo(tmp_path)
    run(tmp_path, 1)
    storage = tmp_path / "runs" / "demo"
    # A search killed while round 2 and 3 sampled or waited on the LLM: no node, numbers given out.
    (storage / "last_round").write_text("3\n")
    run(tmp_path, 1)
    with TreeStore(storage / "tree.duckdb", read_only=True) as tree:
        assert tree.max_round() == 4


@pytest.mark.usefixtures("prefect_server")
def test_the_search_summary_is_the_persisted_result_of_its_flow_run(tmp_path):
    demo(tmp_path)
    summary = run(tmp_path, 1)
    with client() as c:
        state = c.read_flow_run(latest_search_run().id).state
    assert state.is_completed()
    assert state.result() == summary  # read back from result storage, not from memory


@pytest.mark.usefixtures("prefect_server")
def test_artifacts_leaderboard_best_progress_and_summary_are_keyed_per_experiment(tmp_path):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    demo(tmp_path)
    summary = run(tmp_path, 3)
    search_run = latest_search_run()
    keys = artifact_keys("demo")
    with client() as c:
        def latest(kind: str):
            found = c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[keys[kind]])))
            mine = [a for a in found if a.flow_run_id == search_run.id]
            assert mine, kind
            return max(mine, key=lambda a: a.created)
        board = latest("leaderboard")
        best, progress, final = latest("best"), latest("progress"), latest("summary")
    import json

    rows = json.loads(board.data) if isinstance(board.data, str) else board.data
    assert rows[0]["node"] == summary["best_node"] and rows[0]["score"] == round(summary["best_score"], 6)
    assert f"**Score {summary['best_score']:.6f}** — node {summary['best_node']}" in best.data
    assert progress.data == 100.0
    assert "stopped (rounds)" in final.data and str(tmp_path / "runs" / "demo" / "report.html") in final.data


@pytest.mark.usefixtures("prefect_server")
def test_runs_a_dead_search_left_running_are_set_to_crashed(tmp_path, webhook):
    from prefect.states import Running

    with_webhook(demo(tmp_path), webhook)
    run(tmp_path, 1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with client() as c:  # what a kill -9 leaves: round runs RUNNING, tagged with the dead pid
        left = c.create_flow_run(flow=_flow("evolve-round"), name="demo-round-2",
                                 tags=["experiment:demo", pid_tag(dead.pid)], state=Running())
        alive = c.create_flow_run(flow=_flow("evolve-round"), name="demo-round-99",
                                  tags=["experiment:demo", pid_tag()], state=Running())
    with TreeStore(tmp_path / "runs" / "demo" / "tree.duckdb") as tree:
        tree.start_run("deadbeef", 5, dead.pid)  # the dead search's open run
    run(tmp_path, 1)
    with client() as c:
        assert c.read_flow_run(left.id).state.is_crashed()
        assert c.read_flow_run(alive.id).state.is_running()  # its process lives: not ours to end
        for stand_in in (left, alive):  # other tests count round runs: leave none of these behind
            c.delete_flow_run(stand_in.id)
    # a kill -9 runs no hook: the alert is sent when the next search finds what it left
    assert [(a["event"], a["flow_run_names"]) for a in webhook.received] == [("evolveflow.search.crashed", ["demo-round-2"])]


def _flow(name: str):
    from prefect import flow

    @flow(name=name)
    def stand_in() -> None:
        """A flow object with the round flow's name, to create runs of it."""

    return stand_in


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("rounds", [0, -1, "3"])
def test_rounds_below_one_is_a_failed_run_with_one_line(tmp_path, rounds):
    demo(tmp_path)
    state = evolve_search(experiment="demo", rounds=rounds, root=str(tmp_path), return_state=True)
    assert state.is_failed()
    assert state.message == f"rounds must be a whole number of at least 1, got {rounds!r}"
    assert not (tmp_path / "runs" / "demo" / "tree.duckdb").exists()


# ---- alerts ------------------------------------------------------------------------------------

class Webhook:
    """A loopback HTTP server that records the JSON bodies POSTed to it."""

    def __init__(self):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, HTTPServer

        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.server.shutdown()


def with_webhook(exp: Path, hook: Webhook) -> Path:
    (exp / "config.yaml").write_text((exp / "config.yaml").read_text() + f"\nalerts:\n  webhook_url: {hook.url}\n")
    return exp


@pytest.mark.usefixtures("prefect_server")
def test_a_failed_search_posts_its_stop_reason_to_the_webhook(tmp_path, webhook):
    exp = with_webhook(demo(tmp_path), webhook)
    (exp / "initial_program.py").write_text("def approximate(x):\n    return 1 / 0\n")
    state = run(tmp_path, 2, return_state=True)
    assert state.is_failed()
    [alert] = webhook.received
    assert alert["event"] == "evolveflow.search.failed" and alert["experiment"] == "demo"
    assert alert["state"] == "Failed" and "did not evaluate (candidate_error)" in alert["stop_reason"]
    assert alert["flow_run_name"].startswith("demo-20")


@pytest.mark.usefixtures("prefect_server")
def test_a_completed_search_sends_no_alert(tmp_path, webhook):
    with_webhook(demo(tmp_path), webhook)
    run(tmp_path, 1)
    assert webhook.received == []
