"""The DuckDB tree: round trips, lineage, dedup lookups, crash repair, locking."""
import math
import subprocess
import sys

import pytest

from evolveflow.records import EvalResult, LLMReply, Node, Outcome, Status
from storage.tree import TreeStore


def node(i, parent=None, score=None, status=Status.OK, code=None, **kw):
    code = code or f"x = {i}\n"
    return Node(id=i, parent_id=parent, round=i, code=code, code_hash=f"h{code}", score=score, status=status, **kw)


@pytest.fixture
def tree(tmp_path):
    with TreeStore(tmp_path / "tree.duckdb") as store:
        yield store


def test_node_round_trip_with_attempts_and_calls(tree):
    n = node(1, score=1.5, metrics={"a": 1, "bad": math.nan}, timings={"sample": 0.1}, motivation="m",
             model="offline/mutator", prompt_tokens=10, completion_tokens=5, cost_usd=None)
    tree.insert_node(n.model_copy(update={"status": Status.PENDING, "score": None}))
    attempts = [EvalResult(outcome=Outcome.INFRA_ERROR, error="flaky"),
                EvalResult(outcome=Outcome.OK, score=1.5, metrics={"a": 1}, duration_s=0.2)]
    reply = LLMReply(text="t", model="offline/mutator", prompt_tokens=10, completion_tokens=5, cost_usd=None)
    tree.finish_node(n, attempts, [("propose", reply, None), ("analyze", None, "boom")])
    back = tree.node(1)
    assert back.status == Status.OK and back.score == 1.5
    assert back.metrics == {"a": 1, "bad": "nan"}  # NaN is made JSON-safe, never stored as a number
    assert back.timings == {"sample": 0.1}
    assert [a["outcome"] for a in tree.attempts(1)] == ["infra_error", "ok"]
    usage = tree.usage_totals()
    assert usage["llm_calls"] == 2 and usage["prompt_tokens"] == 10
    assert usage["cost_usd"] is None and usage["calls_with_unknown_cost"] == 1


def test_lineage_best_and_failed_children(tree):
    tree.insert_node(node(1, score=1.0))
    tree.insert_node(node(2, parent=1, score=2.0))
    tree.insert_node(node(3, parent=2, score=3.0))
    tree.insert_node(node(4, parent=2, status=Status.CANDIDATE_ERROR, error="crash"))
    tree.insert_node(node(5, parent=2, status=Status.INFRA_FAILED, score=None))
    assert [n.id for n in tree.lineage(3)] == [1, 2, 3]
    assert tree.best().id == 3
    assert [n.id for n in tree.failed_children(2)] == [4]
    assert tree.status_counts() == {"ok": 3, "candidate_error": 1, "infra_failed": 1}


def test_infra_failed_is_never_best_even_with_a_score(tree):
    tree.insert_node(node(1, score=1.0))
    tree.insert_node(node(2, parent=1, score=99.0, status=Status.INFRA_FAILED))
    assert tree.best().id == 1


def test_find_hash_ignores_rejected(tree):
    tree.insert_node(node(1, score=1.0, code="a\n"))
    tree.insert_node(node(2, parent=1, code="b\n", status=Status.REJECTED))
    assert tree.find_hash("ha\n") == 1
    assert tree.find_hash("hb\n") is None


def test_visits_and_summaries(tree):
    tree.insert_node(node(1, score=1.0, metrics={"m": 0.5}, island=2))
    tree.add_visit(1)
    tree.add_visit(1)
    (summary,) = tree.summaries()
    assert (summary.visits, summary.island, summary.metrics) == (2, 2, {"m": 0.5})
    # finishing a node again must not reset its visit count
    tree.finish_node(node(1, score=1.0, metrics={"m": 0.5}, island=2))
    assert tree.summaries()[0].visits == 2


def test_abandon_pending(tree):
    tree.insert_node(node(1, score=1.0))
    tree.insert_node(node(2, parent=1, status=Status.PENDING))
    assert tree.abandon_pending() == [2]
    assert tree.node(2).status == Status.ABANDONED
    assert tree.abandon_pending() == []


def test_failed_transaction_leaves_nothing(tree):
    tree.insert_node(node(1, score=1.0))
    with pytest.raises(Exception):
        # the second attempt row repeats the first's primary key inside one transaction
        tree._transaction([
            ("INSERT INTO nodes (id, round, code, code_hash, status) VALUES (9, 0, 'c', 'h', 'ok')", []),
            ("INSERT INTO nodes (id, round, code, code_hash, status) VALUES (9, 0, 'c', 'h', 'ok')", []),
        ])
    assert tree.node(9) is None


def test_second_process_gets_a_clear_lock_error(tmp_path):
    path = tmp_path / "tree.duckdb"
    with TreeStore(path) as store:
        store.insert_node(node(1, score=1.0))
        code = (
            "import sys; sys.path.insert(0, sys.argv[2]);\n"
            "from storage.tree import TreeStore, TreeLocked\n"
            "try:\n    TreeStore(sys.argv[1], read_only=True, lock_wait_s=0.3)\n"
            "except TreeLocked as e:\n    print('LOCKED', e)\n"
        )
        import pathlib
        out = subprocess.run([sys.executable, "-c", code, str(path), str(pathlib.Path(__file__).parents[1])],
                             capture_output=True, text=True, timeout=60)
        assert "LOCKED" in out.stdout and "held by another process" in out.stdout
    with TreeStore(path, read_only=True) as reader:
        assert reader.node(1).score == 1.0


def test_runs_left_open_by_a_dead_process_are_closed(tree):
    tree.start_run("dead", 10, 1)
    tree.start_run("live", 10, 2)
    assert tree.close_dead_runs("live") == 1
    rows = dict(tree._fetch("SELECT run_id, stop_reason FROM runs"))
    assert rows["dead"].startswith("process died") and rows["live"] is None
    assert tree.close_dead_runs("live") == 0  # already closed


def test_best_score_and_lineage_scores_skip_failed_nodes(tree):
    tree.insert_node(node(1, score=1.0))
    tree.insert_node(node(2, parent=1, status=Status.CANDIDATE_ERROR))
    tree.insert_node(node(3, parent=2, score=3.0))
    tree.insert_node(node(4, parent=3, score=9.0, status=Status.INFRA_FAILED))
    assert tree.best_score() == 3.0
    assert sorted(tree.lineage_scores(3)) == [1.0, 3.0]


def test_abandoned_nodes_say_why_the_last_search_stopped(tree):
    from evolveflow.records import Node, Status

    tree.start_run("r1", 5, 1)
    tree.end_run("r1", 2, "stopped: could not record round 3 in /x: No space left on device")
    tree.insert_node(Node(id=9, parent_id=None, round=3, code="x", code_hash="h9", status=Status.PENDING))
    assert tree.abandon_pending(tree.last_stop_reason()) == [9]
    assert "No space left on device" in tree.node(9).error


def test_kept_summaries_follow_every_write_to_a_node(tree):
    """summaries() is kept in memory after its first read: each write must update it like a fresh read."""
    def fresh():
        return [s for _, s in sorted(tree._summaries_of(None).items())]

    tree.insert_node(node(0, score=1.0))
    assert tree.summaries() == fresh()  # the first read fills it
    tree.insert_node(node(2, parent=0, status=Status.PENDING))
    tree.insert_node(node(1, parent=0, status=Status.PENDING))
    tree.add_visit(0)
    tree.finish_node(node(1, parent=0, score=3.0, metrics={"combined_score": 3.0}))
    tree.abandon_pending("test")
    kept = tree.summaries()
    assert kept == fresh()
    assert [s.id for s in kept] == [0, 1, 2] and kept[0].visits == 1
    assert kept[1].score == 3.0 and kept[1].metrics == {"combined_score": 3.0}
    assert kept[2].status == Status.ABANDONED
