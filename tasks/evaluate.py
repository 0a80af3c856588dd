"""evaluate: run the user's evaluator on a candidate, with repeats and outlier re-runs."""
from __future__ import annotations

import statistics

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from evolveflow.outliers import rerun_reason
from evolveflow.records import Candidate, EvalResult, Node, Outcome, Scored, Status
from evolveflow.runtime import Runtime, get_runtime


class InfraError(Exception):
    """The evaluator failed for reasons outside the candidate; Prefect retries the task."""


def aggregate(attempts: list[EvalResult], notes: str = "") -> Scored:
    """Returns the node's status and median score from its successful attempts."""
    ok = [a for a in attempts if a.outcome == Outcome.OK]
    scores = sorted(a.score for a in ok)
    median = statistics.median(scores)
    closest = min(ok, key=lambda a: abs(a.score - median))
    return Scored(
        status=Status.OK, score=median, score_spread=scores[-1] - scores[0],
        metrics=closest.metrics, attempts=tuple(attempts), notes=notes,
        feedback=closest.feedback, private_metrics=closest.private_metrics,
    )


def _run_until(rt: Runtime, node: Node, log: list[EvalResult], target: int, infra_budget: int = 0) -> Scored | None:
    """Evaluates until `target` attempts succeeded; returns a failure outcome, or None when done.

    Infra failures raise InfraError (Prefect retries the task) once `infra_budget` in-loop
    retries, with the evaluate task's backoff, are used up.
    """
    retry = rt.config.tasks.evaluate
    while sum(a.outcome == Outcome.OK for a in log) < target:
        seed = rt.config.pipeline.seed * 1_000_003 + node.id * 1_000 + len(log)
        kept = rt.experiment.storage_dir / "files" / f"node_{node.id}" / f"attempt_{len(log) + 1}"
        with rt.slot(rt.eval_slots):  # evaluation.concurrency: evaluations at once, all rounds together
            result = rt.executor.run(node.code, rt.evaluator, seed=seed, filename=rt.experiment.program_file,
                                     step=node.id, keep_files_to=kept, cancel=rt.aborted)
        log.append(result)
        if result.outcome == Outcome.INFRA_ERROR:
            if infra_budget > 0:
                infra_budget -= 1
                rt.aborted.wait(retry.delay_s * 2 ** (retry.retries - infra_budget - 1))
                rt.check_abort()
                continue
            raise InfraError(f"evaluator infrastructure failure on node {node.id}: {result.error}")
        if result.outcome == Outcome.CANDIDATE_ERROR:
            return Scored(status=Status.CANDIDATE_ERROR, error=result.error, metrics=result.metrics,
                          attempts=tuple(log), notes=rt.eval_notes.get(node.id, ""),
                          feedback=result.feedback, private_metrics=result.private_metrics)
    return None


DETERMINISTIC_AFTER = 3  # identical confirmations in a row that show the evaluator has no noise


def score_candidate(rt: Runtime, candidate: Candidate) -> Scored:
    """Returns the evaluation of a pending candidate; raises InfraError to be retried."""
    node = candidate.node
    # Attempts and the re-run decision outlive a Prefect retry of this task.
    log = rt.attempt_log.setdefault(node.id, [])
    repeats = rt.config.evaluation.repeats
    failed = _run_until(rt, node, log, rt.eval_targets.get(node.id, repeats))
    if failed:
        return failed
    scored = aggregate(log, rt.eval_notes.get(node.id, ""))
    if node.id in rt.eval_targets:
        return _learn_noise(rt, scored)  # confirmed by re-runs
    outlier = rt.config.evaluation.outlier
    with rt.stats_lock:
        deterministic = rt.identical_confirmations >= DETERMINISTIC_AFTER
    # A deterministic evaluator needs no lineage check (a re-run only repeats the same number),
    # but a would-be new best is still re-run once: the reported best is always confirmed.
    lineage = rt.tree.lineage_scores(node.parent_id) if node.parent_id is not None and not deterministic else []
    reason = rerun_reason(scored.score, rt.tree.best_score(), lineage, outlier)
    if reason is None:
        return scored
    rt.eval_targets[node.id] = repeats + (1 if deterministic else outlier.reruns)
    rt.eval_notes[node.id] = f"re-run before acceptance: {reason}; first score {scored.score:.6g}"
    get_run_logger().info("node %s: %s", node.id, rt.eval_notes[node.id])
    # The confirming re-runs get their own infra retries: otherwise the likely new bests, which
    # need the most attempts, would be the nodes most often lost to a flaky evaluator.
    confirmed = _run_until(rt, node, log, rt.eval_targets[node.id], infra_budget=rt.config.tasks.evaluate.retries)
    return confirmed or _learn_noise(rt, aggregate(log, rt.eval_notes[node.id]))


def _learn_noise(rt: Runtime, scored: Scored) -> Scored:
    """Counts confirmations whose attempts were identical; any spread means the metric is noisy."""
    with rt.stats_lock:
        if scored.score_spread == 0:
            rt.identical_confirmations += 1
            just_learned = rt.identical_confirmations == DETERMINISTIC_AFTER
        else:
            rt.identical_confirmations = -(10**9)  # noisy: never stop confirming in this run
            just_learned = False
    if just_learned:
        get_run_logger().warning(
            "the evaluator gave identical scores on %d confirmations in a row: treating it as "
            "deterministic: no lineage re-runs for the rest of this run, and a would-be new best "
            "gets one confirming re-run", DETERMINISTIC_AFTER)
    return scored


def infra_failed(rt: Runtime, candidate: Candidate, error: BaseException) -> Scored:
    """Returns the outcome of a candidate whose evaluator kept failing: kept, never a score."""
    return Scored(
        status=Status.INFRA_FAILED, error=str(error),
        attempts=tuple(rt.attempt_log.get(candidate.node.id, ())),
        notes=rt.eval_notes.get(candidate.node.id, ""),
    )


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(search_id: str, candidate: Candidate) -> Scored:
    """Runs the evaluator on the candidate (repeats times, plus re-runs of suspicious results)."""
    return score_candidate(get_runtime(search_id), candidate)
