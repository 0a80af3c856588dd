"""The tasks/ layer called directly: plain functions and Prefect tasks via .fn, on a real Runtime.

Real parts only: a scaffolded experiment in tmp_path, its DuckDB tree and LanceDB memory, the
evaluator in a real subprocess, the offline model (or the loopback OpenAI server).
"""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
from prefect.logging import disable_run_logger

from evolveflow.edits import code_hash
from evolveflow.experiment import load_experiment
from evolveflow.records import Candidate, EvalResult, LLMCall, LLMReply, Node, Outcome, Scored, Status
from evolveflow.runtime import Runtime, close_runtime, open_runtime
from evolveflow.scaffold import scaffold_experiment
from tasks.analyze import analyze, facts, fallback_lesson, write_lesson
from tasks.evaluate import DETERMINISTIC_AFTER, _learn_noise, aggregate, evaluate, infra_failed, score_candidate
from tasks.generate import generate, propose, register
from tasks.persist import final_node, persist, save
from tasks.retrieve import find_relevant, query_for, retrieve
from tasks.sample import choose, sample

BASE_CONFIG = """
evaluation: {evaluator: evaluator.py, timeout_s: 20}
cognition: {embeddings: false}
tasks:
  evaluate: {retries: 1, delay_s: 0.01}
api: {retry_backoff_s: 0.01, num_retries: 0}
"""
ROOT_SCORE = -0.015478182519810526  # the scaffold's initial program: -mse against sin on [0, pi]


def new_runtime(tmp_path: Path, config: str = "", evaluator: str | None = None, **overrides) -> Runtime:
    """Returns a runtime opened on the scaffolded demo experiment under tmp_path."""
    exp = tmp_path / "experiments" / "demo"
    if not exp.exists():
        scaffold_experiment("demo", tmp_path / "experiments")
    (exp / "config.yaml").write_text(BASE_CONFIG + config)
    if evaluator is not None:
        (exp / "evaluator.py").write_text(evaluator)
    return open_runtime(load_experiment("demo", tmp_path, overrides=overrides))


def add_root(rt: Runtime, score: float | None = ROOT_SCORE) -> Node:
    """Writes the initial program as an evaluated root node (as if scored earlier)."""
    code = rt.experiment.initial_code
    root = Node(id=rt.next_node_id(), parent_id=None, round=0, code=code, code_hash=code_hash(code),
                motivation="initial program", status=Status.OK, score=score)
    rt.tree.finish_node(root)
    return root


def with_c1(rt: Runtime, value: str) -> str:
    """Returns the initial program with C1 set to value."""
    return rt.experiment.initial_code.replace("C1 = 0.8", f"C1 = {value}")


def pending(rt: Runtime, code: str, parent: Node, round_no: int = 1) -> Candidate:
    """Returns a registered (pending, unless a duplicate) candidate for code."""
    node = Node(id=rt.next_node_id(), parent_id=parent.id, round=round_no, code=code,
                code_hash=code_hash(code), motivation=f"try {round_no}", status=Status.PENDING)
    return register(rt, Candidate(node=node))


@pytest.fixture
def runtimes(tmp_path):
    """Opens runtimes on tmp_path (see new_runtime) and closes them after the test."""
    opened: list[Runtime] = []

    def make(config: str = "", evaluator: str | None = None, **overrides) -> Runtime:
        opened.append(new_runtime(tmp_path, config, evaluator, **overrides))
        return opened[-1]
    yield make
    for rt in opened:
        close_runtime(rt)


@pytest.fixture
def rt(runtimes):
    return runtimes()


# ---- sample / retrieve ----------------------------------------------------------------------------

def test_choose_counts_the_visit_and_allocates_the_next_id(rt):
    root = add_root(rt)
    sampled = choose(rt, round_no=1)
    assert sampled.parent.id == root.id and sampled.node_id == root.id + 1 and sampled.round == 1
    assert rt.tree.node(root.id).visits == 1
    assert sample.fn(rt.search_id, 2).node_id == root.id + 2
    assert rt.tree.node(root.id).visits == 2


def test_retrieval_queries_the_parent_and_finds_the_lesson(rt):
    add_root(rt)
    sampled = choose(rt, 1)
    assert query_for(sampled, "Approximate sin") == "initial program"
    rt.memory.add_lessons([(1, "initial program", "initial program: raising C1 lowered the error")])
    found = find_relevant(rt, sampled)
    assert any("raising C1" in r.content for r in found)
    assert retrieve.fn(rt.search_id, sampled) == found


def test_no_retrieval_when_top_k_is_zero(runtimes):
    rt = runtimes(**{"cognition.retrieval.top_k": 0})
    add_root(rt)
    assert find_relevant(rt, choose(rt, 1)) == []


# ---- generate -------------------------------------------------------------------------------------

def test_offline_proposal_is_registered_pending_with_its_calls(rt):
    root = add_root(rt)
    sampled = choose(rt, 1)
    candidate = propose(rt, sampled, [])
    node = candidate.node
    assert node.status == Status.PENDING and node.parent_id == root.id and node.code != root.code
    assert node.edit.startswith("---") and node.code_hash == code_hash(node.code)
    assert rt.tree.node(node.id).status == Status.PENDING  # visible to the other workers
    assert [c.purpose for c in candidate.llm_calls] == ["propose"]
    assert node.prompt_tokens == candidate.llm_calls[0].reply.prompt_tokens > 0
    assert node.cost_usd == 0.0 and node.model == "offline/mutator"


def test_generate_task_fn_proposes_for_the_sampled_round(rt):
    add_root(rt)
    candidate = generate.fn(rt.search_id, choose(rt, 1), [])
    assert candidate.node.status == Status.PENDING and candidate.node.round == 1


def test_an_exact_duplicate_is_rejected_and_counted(rt):
    root = add_root(rt)
    first = pending(rt, with_c1(rt, "0.81"), root)
    again = pending(rt, with_c1(rt, "0.81"), root, 2)
    assert first.node.status == Status.PENDING
    assert again.node.status == Status.REJECTED
    assert again.node.error == f"duplicate of node {first.node.id}: not evaluated again"
    assert rt.stats.duplicates == 1 and rt.tree.node(again.node.id) is None  # persist writes it


# ---- evaluate -------------------------------------------------------------------------------------

def test_aggregate_takes_the_median_and_the_closest_metrics():
    attempts = [EvalResult(outcome=Outcome.INFRA_ERROR, error="x"),
                *(EvalResult(outcome=Outcome.OK, score=s, metrics={"s": s}) for s in (3.0, 1.0, 2.0))]
    scored = aggregate(attempts, "why")
    assert (scored.score, scored.score_spread, scored.metrics, scored.notes) == (2.0, 2.0, {"s": 2.0}, "why")
    assert scored.attempts == tuple(attempts)


def test_a_plain_result_is_accepted_after_one_run(rt):
    root = add_root(rt)
    candidate = pending(rt, with_c1(rt, "0.7"), root)  # worse than the root: nothing to confirm
    with disable_run_logger():
        scored = evaluate.fn(rt.search_id, candidate)
    assert scored.status == Status.OK and len(scored.attempts) == 1 and not scored.notes
    assert scored.score == pytest.approx(-0.07185184160525841)
    assert rt.attempt_log[candidate.node.id] == list(scored.attempts)  # kept for a retry until persisted


def test_a_would_be_new_best_is_confirmed_by_reruns(rt):
    root = add_root(rt, score=-1.0)
    candidate = pending(rt, with_c1(rt, "0.7"), root)
    with disable_run_logger():
        scored = score_candidate(rt, candidate)
    assert len(scored.attempts) == 1 + rt.config.evaluation.outlier.reruns
    assert scored.notes.startswith("re-run before acceptance: would be a new best")
    assert rt.identical_confirmations == 1  # the scaffold's evaluator gives identical scores


def test_a_deterministic_evaluator_still_confirms_a_new_best_once(rt):
    # Item 4: once the evaluator proved deterministic, the new-best rule still re-runs (once).
    root = add_root(rt, score=-1.0)
    rt.identical_confirmations = DETERMINISTIC_AFTER
    candidate = pending(rt, with_c1(rt, "0.7"), root)
    with disable_run_logger():
        scored = score_candidate(rt, candidate)
    assert len(scored.attempts) == 2
    assert scored.notes.startswith("re-run before acceptance: would be a new best (-0.0718518 > confirmed best -1)")


def _lineage(rt: Runtime, scores: list[float]) -> Node:
    """Writes a chain root → ... of ok nodes with these scores; returns the last one."""
    parent = None
    for i, score in enumerate(scores):
        node = Node(id=rt.next_node_id(), parent_id=parent.id if parent else None, round=i,
                    code=f"x = {i}\n", code_hash=f"h{i}", status=Status.OK, score=score)
        rt.tree.finish_node(node)
        parent = node
    return parent


def test_the_lineage_rule_reruns_unless_the_evaluator_is_deterministic(rt):
    # The lineage scores about -1 with little spread; the child (-0.07) is far better than it,
    # but well below the best (a node with score 10): only the MAD rule can ask for re-runs.
    parent = _lineage(rt, [-1.0, -1.02, -0.98, -1.01, -0.99, -1.0])
    rt.tree.finish_node(Node(id=rt.next_node_id(), parent_id=None, round=0, code="best\n", code_hash="hb",
                             status=Status.OK, score=10.0))
    noisy, quiet = (pending(rt, with_c1(rt, v), parent) for v in ("0.7", "0.71"))
    with disable_run_logger():
        scored = score_candidate(rt, noisy)
        assert len(scored.attempts) == 3 and scored.notes.startswith("re-run before acceptance: outlier")
        rt.identical_confirmations = DETERMINISTIC_AFTER
        scored = score_candidate(rt, quiet)
    assert len(scored.attempts) == 1 and not scored.notes


def test_a_noisy_confirmation_turns_the_deterministic_shortcut_off(rt):
    with disable_run_logger():
        for _ in range(DETERMINISTIC_AFTER):
            _learn_noise(rt, Scored(status=Status.OK, score=1.0, score_spread=0.0))
        assert rt.identical_confirmations == DETERMINISTIC_AFTER
        _learn_noise(rt, Scored(status=Status.OK, score=1.0, score_spread=0.1))
    assert rt.identical_confirmations < 0


def test_a_candidate_error_is_data_and_infra_failures_keep_their_attempts(runtimes):
    rt = runtimes(evaluator="def evaluate(path):\n    if 'C1 = 0.5' in open(path).read():\n"
                            "        return {'retry': True, 'error': 'node down'}\n    raise ValueError('bad program')\n")
    root = add_root(rt)
    broken = pending(rt, with_c1(rt, "0.7"), root)
    with disable_run_logger():
        scored = score_candidate(rt, broken)
    assert scored.status == Status.CANDIDATE_ERROR and "bad program" in scored.error
    down = pending(rt, with_c1(rt, "0.5"), root, 2)
    with pytest.raises(Exception, match="evaluator infrastructure failure on node .*node down"):
        score_candidate(rt, down)
    failed = infra_failed(rt, down, RuntimeError("node down"))
    assert failed.status == Status.INFRA_FAILED and failed.score is None
    assert [a.outcome for a in failed.attempts] == [Outcome.INFRA_ERROR]


# ---- analyze ----------------------------------------------------------------------------------------

def test_the_offline_analyst_writes_a_lesson_from_the_facts(rt):
    root = add_root(rt)
    sampled = choose(rt, 1)
    candidate = pending(rt, with_c1(rt, "0.7"), root)
    scored = Scored(status=Status.OK, score=-0.07, metrics={"mse": 0.07})
    found = facts(sampled, candidate, scored)
    assert found["delta"] == f"{-0.07 - ROOT_SCORE:+.6g}" and found["metrics"] == "mse=0.07"
    lesson, call = analyze.fn(rt.search_id, sampled, candidate, scored)
    assert lesson and call.purpose == "analyze" and call.reply.model == "offline/analyst"
    assert write_lesson(rt, sampled, candidate, Scored(status=Status.REJECTED)) == (None, None)
    text, failed = fallback_lesson(sampled, candidate, scored, RuntimeError("analyst down"))
    assert text and failed == LLMCall(purpose="analyze", error="analyst down")


# ---- persist ----------------------------------------------------------------------------------------

def test_final_node_and_save_write_node_attempts_calls_and_lesson(rt):
    root = add_root(rt)
    candidate = pending(rt, with_c1(rt, "0.7"), root)
    with disable_run_logger():
        scored = score_candidate(rt, candidate)
    node = final_node(candidate, scored, "C1 lower: worse.", {"evaluate": 0.5})
    assert (node.status, node.score, node.analysis, node.timings) == (Status.OK, scored.score, "C1 lower: worse.",
                                                                      {"evaluate": 0.5})
    reply = LLMReply(text="r", model="m", prompt_tokens=3, completion_tokens=2, cost_usd=0.5)
    saved = persist.fn(rt.search_id, node, scored, [LLMCall(purpose="propose", reply=reply)])
    stored = rt.tree.node(saved.id)
    assert stored.status == Status.OK and stored.score == scored.score
    assert len(rt.tree.attempts(node.id)) == 1 and len(rt.tree.llm_calls(node.id)) == 1
    assert rt.memory.lesson_node_ids() == {node.id} and rt.stats.lessons == 1
    assert node.id not in rt.attempt_log  # per-node state is cleared once persisted


def test_rejected_node_keeps_its_own_error(rt):
    root = add_root(rt)
    candidate = pending(rt, root.code, root)  # the root itself: an exact duplicate
    node = final_node(candidate, Scored(status=Status.REJECTED, error="other"), None, {})
    assert node.status == Status.REJECTED and node.error.startswith("duplicate of node")
    save(rt, node, Scored(status=Status.REJECTED), [])
    assert rt.tree.node(node.id).status == Status.REJECTED


# ---- shared counters change under the lock (item 7) -------------------------------------------------

def _blocks_on(lock: threading.Lock, action) -> None:
    """Asserts that action waits while lock is held, and completes once it is released."""
    done = threading.Event()
    with lock:
        worker = threading.Thread(target=lambda: (action(), done.set()))
        worker.start()
        assert not done.wait(0.3), "the update did not wait for the lock"
    assert done.wait(10)
    worker.join()


def test_duplicate_counters_change_under_the_stats_lock(rt):
    root = add_root(rt)
    first = pending(rt, with_c1(rt, "0.81"), root)
    _blocks_on(rt.stats_lock, lambda: pending(rt, first.node.code, root, 2))
    assert rt.stats.duplicates == 1


def test_confirmation_counter_changes_under_the_stats_lock(rt):
    with disable_run_logger():
        _blocks_on(rt.stats_lock, lambda: _learn_noise(rt, Scored(status=Status.OK, score=1.0, score_spread=0.0)))
    assert rt.identical_confirmations == 1


# ---- abort: a second Ctrl-C, recorded truthfully -----------------------------------------------------

def test_after_an_abort_no_round_samples_registers_or_persists(rt):
    from evolveflow.abort import Aborted

    root = add_root(rt)
    candidate = pending(rt, with_c1(rt, "0.7"), root)
    rt.abort("second SIGINT")
    with pytest.raises(Aborted):
        choose(rt, 2)
    with pytest.raises(Aborted):
        pending(rt, with_c1(rt, "0.6"), root)
    with pytest.raises(Aborted):
        save(rt, final_node(candidate, Scored(status=Status.OK, score=1.0), None, {}), Scored(status=Status.OK, score=1.0), [])
    assert rt.tree.node(candidate.node.id).status == Status.PENDING  # not written as a score
    assert rt.tree.node(root.id).visits == 0


def test_record_abandoned_keeps_the_cost_and_attempts_of_every_round_in_flight(rt):
    from tasks.persist import record_abandoned

    root = add_root(rt)
    proposing = choose(rt, 1)  # still waiting on the LLM: no node yet, one paid reply
    reply = LLMReply(text="r", model="m", prompt_tokens=30, completion_tokens=5, cost_usd=0.25)
    rt.call_log[proposing.node_id] = [LLMCall(purpose="propose", reply=reply)]
    evaluating = choose(rt, 2)
    candidate = register(rt, Candidate(node=Node(
        id=evaluating.node_id, parent_id=root.id, round=2, code=with_c1(rt, "0.7"),
        code_hash=code_hash(with_c1(rt, "0.7")), status=Status.PENDING)))
    rt.attempt_log[candidate.node.id] = [EvalResult(outcome=Outcome.OK, score=-0.1)]
    done = choose(rt, 3)  # finished before the abort: persisted, not in flight any more
    save(rt, Node(id=done.node_id, parent_id=root.id, round=3, code="x = 3", code_hash="h3",
                  status=Status.REJECTED, error="no edit"), Scored(status=Status.REJECTED), [])
    rt.abort("second SIGTERM")
    assert record_abandoned(rt, "aborted while in flight") == [proposing.node_id, evaluating.node_id]
    first, second = rt.tree.nodes([proposing.node_id, evaluating.node_id])
    assert (first.status, first.round, first.parent_id, first.score) == (Status.ABANDONED, 1, root.id, None)
    assert first.cost_usd == 0.25 and rt.tree.llm_calls(first.id)[0]["prompt_tokens"] == 30
    assert second.status == Status.ABANDONED and second.code == with_c1(rt, "0.7") and second.score is None
    assert [a["score"] for a in rt.tree.attempts(second.id)] == [-0.1]  # finished attempts are kept
    assert rt.tree.node(done.node_id).status == Status.REJECTED
    assert rt.tree.usage_totals()["cost_usd"] == 0.25
    assert rt.in_flight == {} and record_abandoned(rt, "again") == []
