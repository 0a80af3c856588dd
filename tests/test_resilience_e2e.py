"""A night's worth of trouble, end to end: flaky and noisy evaluators, hostile candidates,
crashes, a second search, budgets. Real subprocesses, a real Prefect API, loopback only."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evolveflow.breakers import SearchStopped
from evolveflow.records import Status
from evolveflow.scaffold import scaffold_experiment
from evolveflow.search_lock import SearchAlreadyRunning
from flows.reeval import reevaluate
from flows.search import evolve_search
from storage.memory import MemoryStore
from storage.tree import TreeStore
from tests.support.openai_server import FakeOpenAIServer

pytestmark = pytest.mark.usefixtures("prefect_server")

FAST_RETRIES = """
tasks:
  evaluate: {retries: 2, delay_s: 0.01}
  generate: {retries: 1, delay_s: 0.01}
api: {retry_backoff_s: 0.01}
cognition: {embeddings: false}
"""

EVALUATOR_HEAD = '''
import importlib.util, math, os, sys

def load(program_path):
    spec = importlib.util.spec_from_file_location("candidate", program_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

def mse(module):
    xs = [math.pi * i / 99 for i in range(100)]
    return sum((module.approximate(x) - math.sin(x)) ** 2 for x in xs) / len(xs)
'''


def experiment(tmp_path: Path, evaluator_body: str, config: str = "") -> Path:
    exp = scaffold_experiment("demo", tmp_path / "experiments")
    (exp / "evaluator.py").write_text(EVALUATOR_HEAD + evaluator_body)
    (exp / "config.yaml").write_text("evaluation:\n  evaluator: evaluator.py\n  timeout_s: 5\n" + FAST_RETRIES + config)
    return exp


def tree_of(tmp_path: Path) -> TreeStore:
    return TreeStore(tmp_path / "runs" / "demo" / "tree.duckdb", read_only=True)


def test_infra_failures_are_retried_then_kept_out_of_the_tree_statistics(tmp_path):
    # The initial program evaluates; every other candidate hits a broken evaluator ("retry").
    exp = experiment(tmp_path, '''
INITIAL = open(os.path.join(os.path.dirname(__file__), "initial_program.py")).read()

def evaluate(program_path):
    if open(program_path).read() != INITIAL and not os.path.exists(os.path.join(os.path.dirname(__file__), "FIXED")):
        return {"retry": True, "error": "GPU node unavailable"}
    return {"score": -mse(load(program_path))}
''')
    summary = evolve_search(experiment="demo", rounds=4, root=str(tmp_path))
    assert summary["by_status"].get("infra_failed", 0) + summary["by_status"].get("rejected", 0) == 4
    with tree_of(tmp_path) as tree:
        failed = tree.ids_with_status(Status.INFRA_FAILED)
        assert failed
        for node_id in failed:
            node = tree.node(node_id)
            assert node.score is None  # never a 0
            assert "GPU node unavailable" in node.error
            outcomes = [a["outcome"] for a in tree.attempts(node_id)]
            assert outcomes == ["infra_error"] * 3  # 1 try + 2 Prefect retries, all kept
        # infra_failed nodes are never parents
        assert all(tree.node(i).parent_id == 1 for i in tree.node_ids() if i != 1)
    (exp / "FIXED").write_text("")
    results = reevaluate(experiment="demo", root=str(tmp_path))
    assert set(results) == set(failed) and set(results.values()) == {"ok"}
    with tree_of(tmp_path) as tree:
        attempts = [a["outcome"] for a in tree.attempts(failed[0])]
        assert attempts[:3] == ["infra_error"] * 3 and set(attempts[3:]) == {"ok"}  # old ones kept
        assert tree.node(failed[0]).score is not None


def test_noisy_spikes_are_rerun_and_never_become_the_reported_best(tmp_path):
    # One evaluation in four returns a wildly lucky score; re-runs must expose it.
    experiment(tmp_path, '''
def evaluate(program_path, seed=None):
    lucky = (seed or 0) % 4 == 0
    return {"score": -mse(load(program_path)) + (100.0 if lucky else 0.0), "metrics": {"lucky": lucky}}
''', "evaluation:\n  evaluator: evaluator.py\n  outlier: {reruns: 2}\n")
    summary = evolve_search(experiment="demo", rounds=8, root=str(tmp_path))
    with tree_of(tmp_path) as tree:
        best = tree.best()
        rerun = [tree.node(i) for i in tree.node_ids() if tree.node(i).notes.startswith("re-run before acceptance")]
        assert rerun, "some new best must have been re-run"
        for node in rerun:
            assert len(tree.attempts(node.id)) >= 3
        lucky_attempts = sum(a["metrics"] and json.loads(a["metrics"]).get("lucky", False)
                             for i in tree.node_ids() for a in tree.attempts(i))
        assert lucky_attempts > 0  # the noise really happened
    assert summary["best_score"] < 50, "a lucky spike was accepted as the best"
    assert best.score < 50


def test_hostile_candidates_end_as_candidate_errors_and_the_search_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-secret")
    experiment(tmp_path, '''
def evaluate(program_path):
    return {"score": -mse(load(program_path))}
''', "evaluation:\n  evaluator: evaluator.py\n  timeout_s: 3\n  memory_mb: 512\n")
    programs = {
        "loop": "def approximate(x):\n    while True:\n        pass",
        "memory": "def approximate(x):\n    block = bytearray(50 * 1024 ** 3)\n    return 0.0",
        "secrets": "import os\ndef approximate(x):\n    assert 'OPENAI_API_KEY' not in os.environ, 'key leaked'\n    raise RuntimeError('no key visible')",
        "output": "import sys\ndef approximate(x):\n    while True:\n        sys.stdout.write('x' * 65536)",
    }

    def reply(request):
        prompt = request["messages"][-1]["content"]
        if "## Facts" in prompt:
            return "lesson"
        kind = list(programs)[len(reply.calls) % len(programs)]
        reply.calls.append(kind)
        return ("MOTIVATION: hostile " + kind + "\n\n<<<<<<< SEARCH\ndef approximate(x):\n"
                "    return C0 + C1 * x + C2 * x * x + C3 * x * x * x\n=======\n"
                + programs[kind] + "\n>>>>>>> REPLACE\n")
    reply.calls = []
    with FakeOpenAIServer(responder=reply) as server:
        summary = evolve_search(experiment="demo", rounds=4, root=str(tmp_path),
                                overrides={"api.model": "openai/hostile", "api.api_base": server.base_url})
    assert summary["rounds_done"] == 4
    with tree_of(tmp_path) as tree:
        errors = {tree.node(i).motivation.split()[-1]: tree.node(i).error for i in tree.node_ids() if i != 1}
    assert "timed out" in errors["loop"]
    assert "MemoryError" in errors["memory"] or "memory" in errors["memory"].lower()
    assert "no key visible" in errors["secrets"]
    assert "printed more than" in errors["output"]


def test_budgets_stop_the_search_with_a_reason(tmp_path):
    experiment(tmp_path, '''
def evaluate(program_path):
    return {"score": -mse(load(program_path))}
''', "stop:\n  target_score: -1000\n")
    summary = evolve_search(experiment="demo", rounds=10, root=str(tmp_path))
    assert summary["rounds_done"] == 0 and summary["stop_reason"].startswith("target score -1000")
    summary = evolve_search(experiment="demo", rounds=10, root=str(tmp_path),
                            overrides={"stop.target_score": None, "stop.patience": 1, "evaluation.outlier.enabled": False})
    assert summary["stop_reason"].startswith("no improvement for 1 rounds")
    assert summary["rounds_done"] < 10


def _api_url() -> str:
    from prefect.settings import PREFECT_API_URL
    return PREFECT_API_URL.value()


def test_kill_9_mid_evaluation_then_rerun_resumes_consistently_and_one_search_at_a_time(tmp_path):
    # Once HOLD exists, the evaluator writes the code it got to EVALUATING and sleeps: the kill
    # then provably lands while a round is in flight (process sandbox: bwrap would make the
    # experiment folder read-only).
    exp = experiment(tmp_path, '''
import time

def evaluate(program_path):
    here = os.path.dirname(__file__)
    if os.path.exists(os.path.join(here, "HOLD")):
        with open(os.path.join(here, "EVALUATING.tmp"), "w") as marker:
            marker.write(open(program_path).read())
        os.replace(os.path.join(here, "EVALUATING.tmp"), os.path.join(here, "EVALUATING"))
        time.sleep(30)
    time.sleep(0.4)
    return {"score": -mse(load(program_path))}
''', "cognition: {embeddings: false, compact_every: 2}\n"
       "evaluation: {evaluator: evaluator.py, timeout_s: 60, sandbox: process}\n")
    env = {**os.environ, "PREFECT_API_URL": _api_url()}
    cli = [sys.executable, "-m", "evolveflow.cli"]
    proc = subprocess.Popen(cli + ["run", "demo", "--rounds", "200"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        report_path = tmp_path / "runs" / "demo" / "report.json"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if report_path.exists() and json.loads(report_path.read_text()).get("rounds", 0) >= 3:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the search made no progress: " + proc.stdout.read1().decode(errors="replace"))
        # While it runs: a second search is refused by name, and status still works.
        with pytest.raises(SearchAlreadyRunning, match=f"pid {proc.pid}"):
            evolve_search(experiment="demo", rounds=1, root=str(tmp_path))
        status = subprocess.run(cli + ["status", "demo"], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=120)
        assert status.returncode == 0 and f"running: pid {proc.pid}" in status.stdout, status.stderr
        (exp / "HOLD").write_text("")
        deadline = time.monotonic() + 60
        while not (exp / "EVALUATING").exists():
            assert time.monotonic() < deadline and proc.poll() is None, "no candidate reached the evaluator"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # mid-evaluation, without warning
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    (exp / "HOLD").unlink()
    in_flight_code = (exp / "EVALUATING").read_text()
    with tree_of(tmp_path) as tree:
        before = tree.node_ids()
        pending_before = tree.ids_with_status(Status.PENDING)
        assert len(pending_before) == 1, "exactly the round in flight is pending after the kill"
        assert tree.node(pending_before[0]).code == in_flight_code
    summary = evolve_search(experiment="demo", rounds=2, root=str(tmp_path))
    assert summary["rounds_done"] == 2
    with tree_of(tmp_path) as tree:
        assert tree.ids_with_status(Status.PENDING) == []
        assert tree.ids_with_status(Status.ABANDONED) == pending_before
        assert "in flight" in tree.node(pending_before[0]).error
        after = tree.node_ids()
        assert before < after and len(after) == len(before) + 2
        rounds = [tree.node(i).round for i in after]
        assert len(rounds) == len(set(rounds))  # no round duplicated
    lessons = MemoryStore(tmp_path / "runs" / "demo" / "memory.lance", None).lesson_node_ids()
    assert lessons <= after  # a lesson never points at a node that does not exist


@pytest.mark.parametrize("sig", [signal.SIGTERM])  # SIGINT to the whole group: test_abort_e2e (terminal)
def test_ctrl_c_or_sigterm_stops_after_rounds_in_flight(tmp_path, sig):
    experiment(tmp_path, '''
import time

def evaluate(program_path):
    time.sleep(0.3)
    return {"score": -mse(load(program_path))}
''')
    env = {**os.environ, "PREFECT_API_URL": _api_url()}
    proc = subprocess.Popen([sys.executable, "-m", "evolveflow.cli", "run", "demo", "--rounds", "200"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    report_path = tmp_path / "runs" / "demo" / "report.json"
    deadline = time.monotonic() + 120
    while not (report_path.exists() and json.loads(report_path.read_text()).get("rounds", 0) >= 2):
        assert time.monotonic() < deadline and proc.poll() is None, "no progress"
        time.sleep(0.2)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "stopped (interrupted)" in out
    with tree_of(tmp_path) as tree:
        assert tree.ids_with_status(Status.PENDING) == [] and tree.ids_with_status(Status.ABANDONED) == []
        done = len(tree.node_ids()) - 1
    assert f"after {done} rounds" in out


def test_an_initial_program_whose_evaluator_was_down_is_evaluated_again_next_time(tmp_path):
    exp = experiment(tmp_path, '''
def evaluate(program_path):
    if not os.path.exists(os.path.join(os.path.dirname(__file__), "UP")):
        return {"retry": True, "error": "cluster down"}
    return {"score": -mse(load(program_path))}
''')
    with pytest.raises(SearchStopped, match=r"infrastructure failures on the initial program.*cluster down"):
        evolve_search(experiment="demo", rounds=2, root=str(tmp_path))
    (exp / "UP").write_text("")
    summary = evolve_search(experiment="demo", rounds=2, root=str(tmp_path))
    assert summary["rounds_done"] == 2 and summary["initial_score"] is not None
    with tree_of(tmp_path) as tree:
        outcomes = [a["outcome"] for a in tree.attempts(1)]
        assert outcomes[:3] == ["infra_error"] * 3 and outcomes[3] == "ok"  # history kept


def test_confirming_reruns_have_their_own_infra_retries(tmp_path):
    # Every second attempt of a node fails for infrastructure reasons (seeds alternate parity).
    experiment(tmp_path, '''
def evaluate(program_path, seed=None):
    if seed % 2 == 1:
        return {"retry": True, "error": "flaky node"}
    return {"score": -mse(load(program_path))}
''', "tasks:\n  evaluate: {retries: 1, delay_s: 0.01}\n")
    summary = evolve_search(experiment="demo", rounds=4, root=str(tmp_path))
    assert "infra_failed" not in summary["by_status"]
    with tree_of(tmp_path) as tree:
        root_attempts = [a["outcome"] for a in tree.attempts(1)]
        assert root_attempts.count("ok") == 3 and "infra_error" in root_attempts
        assert tree.node(1).notes.startswith("re-run before acceptance: first score")
