"""One round of the search: sample → retrieve → generate → evaluate → analyze → persist."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from prefect import State, Task, flow, get_run_logger
from prefect.states import Cancelled, Failed
from prefect.utilities.annotations import quote

from evolveflow.abort import Aborted
from evolveflow.breakers import SearchStopped
from evolveflow.llm.client import LLMError
from evolveflow.records import Candidate, LLMCall, Node, Scored, Status
from evolveflow.runtime import Runtime, get_runtime
from flows.artifacts import round_line
from storage.failures import storage_failure
from tasks.analyze import analyze, fallback_lesson
from tasks.evaluate import InfraError, evaluate, infra_failed
from tasks.generate import generate, unavailable
from tasks.options import with_retries
from tasks.persist import final_node, persist, persist_lesson
from tasks.retrieve import retrieve
from tasks.sample import sample


@dataclass(frozen=True)
class RoundTasks:
    """The round's tasks with the retries the search's config asks for.

    Records are passed to them inside `quote()`: Prefect then hands them over as they are instead
    of walking every field for futures to resolve (measured: 3.6 -> 1.3 ms of CPU per task call).
    """

    sample: Task
    retrieve: Task
    generate: Task
    evaluate: Task
    analyze: Task
    persist: Task
    persist_lesson: Task


_TASKS: dict[str, RoundTasks] = {}


def round_tasks(rt: Runtime) -> RoundTasks:
    """Returns the search's configured tasks (built once per search)."""
    if rt.search_id not in _TASKS:
        cfg = rt.config.tasks
        _TASKS[rt.search_id] = RoundTasks(
            sample=with_retries(sample, cfg.sample),
            retrieve=with_retries(retrieve, cfg.retrieve),
            generate=with_retries(generate, cfg.generate, only_for=(LLMError,)),
            evaluate=with_retries(evaluate, cfg.evaluate, only_for=(InfraError,)),
            analyze=with_retries(analyze, cfg.analyze, only_for=(LLMError,)),
            persist=with_retries(persist, cfg.persist),
            persist_lesson=with_retries(persist_lesson, cfg.persist),
        )
    return _TASKS[rt.search_id]


class Stopwatch:
    """Wall time per stage of a round; before_stage() runs as each stage starts."""

    def __init__(self, before_stage: Callable[[], None] = lambda: None) -> None:
        self.seconds: dict[str, float] = {}
        self.before_stage = before_stage

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self.before_stage()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = round(time.perf_counter() - start, 6)


# persist_result=False: a persisted result becomes an unkeyed "result" artifact on the round run
# and on the search run (its subflow task); the search's own summary result stays persisted.
@flow(name="evolve-round", flow_run_name="{experiment}-round-{round_no}", validate_parameters=False,
      persist_result=False)
def evolve_round(search_id: str, round_no: int, experiment: str = "") -> dict | State:
    """Runs one round and returns what it produced (`experiment` names the run; the runtime is the search's).

    A round of an aborted search ends Cancelled (the search records it as abandoned).
    """
    try:
        return run_round(search_id, round_no)
    except Aborted as exc:
        return Cancelled(message=str(exc), data=exc)
    except SearchStopped as exc:  # the search stops: one line, not a traceback per round
        return Failed(message=str(exc), data=exc)
    except Exception as exc:
        if not storage_failure(exc):
            raise
        stopped = PersistFailed(f"could not write to {get_runtime(search_id).experiment.storage_dir} "
                                f"in round {round_no}: {type(exc).__name__}: {exc}")
        return Failed(message=str(stopped), data=stopped)


def run_round(search_id: str, round_no: int) -> dict:
    """sample → retrieve → generate → evaluate → persist, then analyze → persist the lesson.

    The round's node is written (and announced to the loop through rt.on_persisted) before its
    analysis: the next round does not wait for the analyst; a later round retrieves the lesson
    once it exists.
    """
    rt = get_runtime(search_id)
    t = round_tasks(rt)
    clock = Stopwatch(rt.check_abort)  # an aborted search stops its rounds between stages
    with clock("sample"):
        sampled = t.sample(search_id, round_no)
    with clock("retrieve"):
        retrieved = t.retrieve(search_id, quote(sampled))
    with clock("generate"):
        candidate = _generate(t, search_id, sampled, retrieved)
    if rt.on_proposed:  # two pools: the next proposal may start while this one is evaluated
        rt.on_proposed(round_no)
    with clock("evaluate"):
        scored = _evaluate(t, rt, search_id, candidate)
    timings = {**clock.seconds, **_external_seconds(candidate, scored, None)}
    with clock("persist"):
        node = _persist(t, rt, search_id, final_node(candidate, scored, None, timings), scored,
                        list(candidate.llm_calls))
    summary = {**round_summary(node, sampled.parent, {**timings, "persist": clock.seconds["persist"]}),
               "llm": proposal_outcome(candidate), "evaluator": evaluator_outcome(scored)}
    get_run_logger().info("%s", round_line(summary))
    if rt.on_persisted:  # the next round may start now: the lesson is not on the critical path
        rt.on_persisted(summary)
    with clock("analyze"):
        lesson, analysis_call = _analyze(t, search_id, sampled, candidate, scored)
    if lesson or analysis_call:
        with clock("lesson"):
            t.persist_lesson(search_id, quote(node), lesson, quote(analysis_call))
    after_node = {k: v for k, v in clock.seconds.items() if k in ("analyze", "lesson")}
    return {**summary, "timings": {**summary["timings"], **after_node}}


def _persist(t: RoundTasks, rt: Runtime, search_id: str, node: Node, scored: Scored, calls: list[LLMCall]) -> Node:
    try:
        return t.persist(search_id, quote(node), quote(scored), quote(calls))
    except Aborted:
        raise
    except Exception as exc:  # through every retry: a full disk, read-only storage... stop the search
        raise PersistFailed(f"could not record round {node.round} in {rt.experiment.storage_dir}: "
                            f"{type(exc).__name__}: {exc}") from exc


class PersistFailed(SearchStopped):
    """A round's results could not be written: going on would spend money on results that are lost."""


def proposal_outcome(candidate: Candidate) -> str:
    """"ok" (a program came back, maybe a duplicate), "failed" (no call got a reply) or "unusable"."""
    node = candidate.node
    if node.status != Status.REJECTED or node.code_hash:  # duplicates carry their program's hash
        return "ok"
    return "unusable" if any(c.reply is not None for c in candidate.llm_calls) else "failed"


def evaluator_outcome(scored: Scored) -> str | None:
    """"infra" (only infrastructure failures), "ok" (the evaluator judged it), None (not evaluated)."""
    if scored.status == Status.INFRA_FAILED:
        return "infra"
    return "ok" if scored.status in (Status.OK, Status.CANDIDATE_ERROR) else None


def _generate(t: RoundTasks, search_id: str, sampled, retrieved) -> Candidate:
    try:
        return t.generate(search_id, quote(sampled), quote(retrieved))
    except LLMError as exc:  # the model stayed unreachable through every retry: record, go on
        return unavailable(get_runtime(search_id), sampled, exc)


def _evaluate(t: RoundTasks, rt: Runtime, search_id: str, candidate: Candidate) -> Scored:
    if candidate.node.status == Status.REJECTED:
        return Scored(status=Status.REJECTED, error=candidate.node.error)
    try:
        return t.evaluate(search_id, quote(candidate))
    except InfraError as exc:
        return infra_failed(rt, candidate, exc)


def _analyze(t: RoundTasks, search_id: str, sampled, candidate: Candidate, scored: Scored):
    try:
        return t.analyze(search_id, quote(sampled), quote(candidate), quote(scored))
    except LLMError as exc:
        return fallback_lesson(sampled, candidate, scored, exc)


def _external_seconds(candidate: Candidate, scored: Scored, analysis_call: LLMCall | None) -> dict[str, float]:
    """Returns the time spent waiting on LLMs and on the evaluator (not framework time)."""
    calls = list(candidate.llm_calls) + ([analysis_call] if analysis_call else [])
    seconds = {
        "llm": round(sum(c.reply.latency_s for c in calls if c.reply), 6),
        "evaluator": round(sum(a.duration_s for a in scored.attempts), 6),
    }
    rate_wait = sum(c.reply.rate_wait_s for c in calls if c.reply)
    if rate_wait:  # only with api rate limits set, and only when they held a call back
        seconds["llm_rate_wait"] = round(rate_wait, 6)
    return seconds


def round_summary(node: Node, parent: Node, timings: dict[str, float]) -> dict:
    """Returns a plain-dict summary of a finished round (for progress and reports)."""
    return {
        "round": node.round, "node": node.id, "parent": parent.id, "status": node.status.value,
        "score": node.score, "parent_score": parent.score, "error": node.error,
        "motivation": node.motivation, "timings": timings,
    }
