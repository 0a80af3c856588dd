"""Re-evaluate nodes whose evaluator failed for infrastructure reasons (status infra_failed)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from prefect import flow

from evolveflow.evaluation import check_evaluator
from evolveflow.experiment import load_experiment
from evolveflow.records import Candidate, Sampled, Status
from evolveflow.runtime import Runtime, close_runtime, open_runtime
from evolveflow.search_lock import SearchLock
from flows.round import round_tasks
from flows.rounds import publish
from tasks.analyze import fallback_lesson
from tasks.evaluate import InfraError, infra_failed
from tasks.persist import final_node, save


@flow(name="evolve-reeval", flow_run_name="reeval-{experiment}", validate_parameters=False)
def reevaluate(experiment: str, node_ids: Sequence[int] | None = None, root: str | None = None) -> dict[str, Any]:
    """Evaluates infra_failed nodes again; returns {node id: new status}."""
    exp = load_experiment(experiment, Path(root) if root else None)
    with SearchLock(exp.lock_path):
        rt = open_runtime(exp)
        try:
            check_evaluator(rt.evaluator)
            wanted = rt.tree.ids_with_status(Status.INFRA_FAILED)
            if node_ids:
                wanted = [i for i in wanted if i in set(node_ids)]
            results = {node_id: reevaluate_node(rt, node_id) for node_id in wanted}
            publish(rt)
            return results
        finally:
            close_runtime(rt)


def reevaluate_node(rt: Runtime, node_id: int) -> str:
    """Runs one node through evaluate → analyze → persist again; returns its new status."""
    tasks = round_tasks(rt)
    node = rt.tree.node(node_id)
    earlier_attempts = len(rt.tree.attempts(node_id))
    candidate = Candidate(node=node.model_copy(update={"status": Status.PENDING, "error": None}))
    try:
        scored = tasks.evaluate(rt.search_id, candidate)
    except InfraError as exc:
        scored = infra_failed(rt, candidate, exc)
    parent = rt.tree.node(node.parent_id) if node.parent_id is not None else node
    sampled = Sampled(node_id=node.id, round=node.round, island=node.island, parent=parent)
    lesson, call = None, None
    if scored.status in (Status.OK, Status.CANDIDATE_ERROR) and node.parent_id is not None:
        try:
            lesson, call = tasks.analyze(rt.search_id, sampled, candidate, scored)
        except Exception as exc:  # the lesson is optional; the new score is what matters
            lesson, call = fallback_lesson(sampled, candidate, scored, exc)
    final = final_node(candidate, scored, lesson, node.timings)
    save(rt, final, scored, [call] if call else [], first_attempt=earlier_attempts + 1)
    return scored.status.value
