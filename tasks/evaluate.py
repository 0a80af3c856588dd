"""evaluate: run the user's evaluator on a candidate, with repeats, in a sandboxed subprocess."""
from __future__ import annotations

import statistics

from prefect import task
from prefect.cache_policies import NO_CACHE

from evolveflow.evaluation import run_evaluation
from evolveflow.records import Candidate, EvalResult, Outcome, Scored, Status
from evolveflow.runtime import Runtime, get_runtime


class InfraError(Exception):
    """The evaluator failed for reasons outside the candidate; Prefect retries the task."""


def aggregate(attempts: list[EvalResult]) -> Scored:
    """Returns the node's status and median score from its successful attempts."""
    ok = [a for a in attempts if a.outcome == Outcome.OK]
    scores = sorted(a.score for a in ok)
    median = statistics.median(scores)
    closest = min(ok, key=lambda a: abs(a.score - median))
    return Scored(
        status=Status.OK, score=median, score_spread=scores[-1] - scores[0],
        metrics=closest.metrics, attempts=tuple(attempts),
    )


def score_candidate(rt: Runtime, candidate: Candidate) -> Scored:
    """Returns the evaluation of a pending candidate; raises InfraError to be retried."""
    node = candidate.node
    # The log outlives a retry of this task, so attempts before an infra failure are kept.
    log = rt.attempt_log.setdefault(node.id, [])
    repeats = rt.config.evaluation.repeats
    while sum(a.outcome == Outcome.OK for a in log) < repeats:
        seed = rt.config.pipeline.seed * 1_000_003 + node.id * 1_000 + len(log)
        result = run_evaluation(
            node.code, rt.evaluator, seed=seed, filename=rt.config.evaluation.program_file
        )
        log.append(result)
        if result.outcome == Outcome.INFRA_ERROR:
            raise InfraError(f"evaluator infrastructure failure on node {node.id}: {result.error}")
        if result.outcome == Outcome.CANDIDATE_ERROR:
            return Scored(
                status=Status.CANDIDATE_ERROR, error=result.error, metrics=result.metrics,
                attempts=tuple(log),
            )
    return aggregate(log)


def infra_failed(rt: Runtime, candidate: Candidate, error: BaseException) -> Scored:
    """Returns the outcome of a candidate whose evaluator kept failing: kept, never a score."""
    return Scored(
        status=Status.INFRA_FAILED, error=str(error),
        attempts=tuple(rt.attempt_log.get(candidate.node.id, ())),
    )


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(search_id: str, candidate: Candidate) -> Scored:
    """Runs the evaluator on the candidate (repeats times)."""
    return score_candidate(get_runtime(search_id), candidate)
