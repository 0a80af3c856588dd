"""persist: write the node, its attempts and LLM calls to DuckDB, then its lesson to LanceDB."""
from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from evolveflow.records import Candidate, LLMCall, Node, Scored, Status
from evolveflow.runtime import Runtime, get_runtime
from storage.memory import MemoryStore
from tasks.generate import usage_of


def final_node(candidate: Candidate, scored: Scored, lesson: str | None, timings: dict[str, float]) -> Node:
    """Returns the candidate node with its outcome filled in."""
    node = candidate.node
    return node.model_copy(update={
        "status": scored.status, "score": scored.score, "score_spread": scored.score_spread,
        "metrics": scored.metrics, "error": scored.error if scored.status != Status.REJECTED else node.error,
        "analysis": lesson, "timings": timings, "notes": scored.notes,
        "feedback": scored.feedback, "private_metrics": scored.private_metrics,
    })


def save(rt: Runtime, node: Node, scored: Scored, calls: list[LLMCall], first_attempt: int = 1) -> Node:
    """Writes the node atomically, then its lesson (a lesson never points at a missing node).

    first_attempt numbers the attempts after ones stored earlier (re-evaluations). Safe to retry:
    the tree write is idempotent and the node's logs in the runtime are cleared only at the end.
    Only a node that was evaluated (ok or candidate_error) enters the near-duplicate index.
    """
    calls = [*calls, *rt.unused_analysis.get(node.id, ())]
    with rt.tree_lock:  # after an abort its rounds in flight are recorded abandoned: write no more
        rt.check_abort()
        rt.tree.finish_node(node, scored.attempts, [(c.purpose, c.reply, c.error) for c in calls],
                            first_attempt=first_attempt)
        rt.in_flight.pop(node.id, None)
    if rt.near_duplicates is not None and node.status in (Status.OK, Status.CANDIDATE_ERROR):
        rt.near_duplicates.add_many([(node.id, node.code)])
    if node.analysis:
        add_lesson(rt, node, node.analysis)
    for per_node in (rt.attempt_log, rt.eval_targets, rt.eval_notes, rt.call_log):
        per_node.pop(node.id, None)
    if node.analysis or node.status not in (Status.OK, Status.CANDIDATE_ERROR):
        rt.unused_analysis.pop(node.id, None)  # else its analysis, still to come, writes them
    return node


def add_lesson(rt: Runtime, node: Node, lesson: str) -> None:
    """Adds a node's lesson to the memory (after the node is in the tree: never an orphan)."""
    title = (node.motivation.strip().splitlines() or [f"node {node.id}"])[0][:120]
    with rt.memory_lock:
        rt.memory.add_lessons([(node.id, title, lesson)])
        rt.stats.lessons += 1
        if rt.stats.lessons % rt.config.cognition.compact_every == 0:
            rt.memory.compact()  # one LanceDB version per add: compact before reads slow down
            # A fresh handle drops LanceDB's native caches, which otherwise grow with every
            # version (measured: 10 MB per 100 rounds before, ~2 MB after).
            rt.memory = MemoryStore(rt.memory.path, rt.memory.embedder)


def save_lesson(rt: Runtime, node: Node, lesson: str | None, call: LLMCall | None) -> None:
    """Writes a persisted node's lesson and the analyst's calls (the billed empty replies too).

    Safe to retry: the calls replace those of an earlier try; the memory entry is added last.
    """
    calls = [*rt.unused_analysis.get(node.id, ()), *([call] if call else [])]
    with rt.tree_lock:
        rt.check_abort()
        rt.tree.record_analysis(node.id, lesson, [(c.purpose, c.reply, c.error) for c in calls])
    if lesson:
        add_lesson(rt, node, lesson)
    rt.unused_analysis.pop(node.id, None)


@task(name="persist-lesson", cache_policy=NO_CACHE)
def persist_lesson(search_id: str, node: Node, lesson: str | None, call: LLMCall | None) -> None:
    """Records the lesson written about a round's node, after the node itself."""
    save_lesson(get_runtime(search_id), node, lesson, call)


def record_abandoned(rt: Runtime, reason: str) -> list[int]:
    """Records every round in flight as an abandoned node, with the LLM calls it paid for and the
    evaluation attempts it finished; returns their ids. Call it after rt.abort(): no round writes
    after it. A round stopped before its proposal gets a node too (its parent's code, no hash),
    so rounds and cost are counted truthfully.
    """
    with rt.tree_lock:
        ids = sorted(rt.in_flight)
        for node_id in ids:
            sampled = rt.in_flight[node_id]
            calls = [*rt.call_log.get(node_id, ()), *rt.unused_analysis.get(node_id, ())]
            node = rt.tree.node(node_id) or Node(
                id=node_id, parent_id=sampled.parent.id, round=sampled.round, code=sampled.parent.code,
                code_hash="", island=sampled.island, motivation="(stopped before the proposal arrived)",
                **usage_of(rt.call_log.get(node_id, ())))
            node = node.model_copy(update={"status": Status.ABANDONED, "error": reason})
            rt.tree.finish_node(node, rt.attempt_log.get(node_id, ()), [(c.purpose, c.reply, c.error) for c in calls])
        rt.in_flight.clear()
    return ids


@task(name="persist", cache_policy=NO_CACHE)
def persist(search_id: str, node: Node, scored: Scored, calls: list[LLMCall]) -> Node:
    """Records the round's node, evaluation attempts, LLM calls and lesson."""
    return save(get_runtime(search_id), node, scored, calls)
