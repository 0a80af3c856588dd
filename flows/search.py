"""The search flow: open the experiment, run rounds concurrently, publish a summary."""
from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Cancelled, Failed

from evolveflow.abort import SearchAborted
from evolveflow.breakers import SearchStopped
from evolveflow.edits import code_hash
from evolveflow.evaluation import check_evaluator, isolation_for, make_undumpable
from evolveflow.experiment import load_experiment
from evolveflow.morning_report import write_report_at_end
from evolveflow.config import ConfigError
from evolveflow.progress import print_round, print_summary
from evolveflow.records import Candidate, Node, Status
from evolveflow.runtime import Runtime, close_runtime, open_runtime
from evolveflow.search_lock import SearchAlreadyRunning, SearchLock
from evolveflow.user_errors import is_user_error, without_traceback
from flows.artifacts import (ArtifactPublisher, cancel_own_round_runs, crash_dead_flow_runs, experiment_tag, pid_tag,
                             search_summary_line, tag_current_flow_run)
from flows.round import round_tasks
from flows.rounds import RoundLoop, first_round, publish
from storage.knowledge_files import load_knowledge_dir
from tasks.evaluate import InfraError, infra_failed
from tasks.persist import final_node, record_abandoned, save


class InitialProgramFailed(Exception):
    """The initial program did not evaluate: the search has nothing to start from."""


class MissingApiKey(Exception):
    """api.api_key_env names an environment variable that is not set."""


def check_api_key(api) -> None:
    """Fails before round 1, not after a night of rejected rounds, when the key is missing."""
    problem = api.missing_key()
    if problem:
        raise MissingApiKey(problem)


def search_run_name() -> str:
    """Names a search run for its experiment and start time, e.g. circle_packing-2026-12-01T04-30-00Z."""
    experiment = Path(str(flow_run.parameters.get("experiment") or "search")).name
    return f"{experiment}-{datetime.now(timezone.utc):%Y-%m-%dT%H-%M-%SZ}"


# ---- alerts: a search that fails or crashes POSTs JSON to alerts.webhook_url -------------------

_ALERT_TARGETS: dict[str, tuple[str, float]] = {}  # flow run id -> (webhook url, timeout), once loaded
_NOTHING_FAILED: set[str] = set()  # flow runs refused by the lock: Failed in Prefect, but no alert


def post_alert(url: str, payload: dict[str, Any], timeout_s: float) -> None:
    """POSTs the payload as JSON to the webhook."""
    request = urllib.request.Request(url, data=json.dumps(payload, default=str).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        response.read()


def remember_alert_target(config, flow_run_id: str | None) -> None:
    """Keeps the configured webhook for the hooks, which run after the flow's own code."""
    if config.alerts.webhook_url and flow_run_id:
        _ALERT_TARGETS[str(flow_run_id)] = (config.alerts.webhook_url, config.alerts.timeout_s)


def _alert_target(flow_run) -> tuple[str, float] | None:
    target = _ALERT_TARGETS.pop(str(flow_run.id), None)
    if target is not None:
        return target
    p = flow_run.parameters or {}
    try:  # the search failed before it read its config: read it now (a broken config: no alert)
        exp = load_experiment(p["experiment"], Path(p["root"]) if p.get("root") else None,
                              Path(p["config_file"]) if p.get("config_file") else None, p.get("overrides"))
    except Exception:  # noqa: BLE001
        return None
    alerts = exp.config.alerts
    return (alerts.webhook_url, alerts.timeout_s) if alerts.webhook_url else None


def send_alert(flow, flow_run, state) -> None:
    """Flow hook (on_failure, on_crashed): tells the webhook which search stopped and why.

    A run refused because another search holds the experiment sends nothing: that search goes on.
    """
    if str(flow_run.id) in _NOTHING_FAILED:
        _NOTHING_FAILED.discard(str(flow_run.id))
        _ALERT_TARGETS.pop(str(flow_run.id), None)
        return
    target = _alert_target(flow_run)
    if target is None:
        return
    payload = {
        "event": f"evolveflow.search.{state.type.value.lower()}",
        "experiment": (flow_run.parameters or {}).get("experiment"),
        "flow_run_id": str(flow_run.id), "flow_run_name": flow_run.name,
        "state": state.name, "stop_reason": state.message,
    }
    try:
        post_alert(target[0], payload, target[1])
    except Exception as exc:  # noqa: BLE001 - an alert that cannot be sent is logged, never raised
        from prefect.logging import get_logger

        get_logger("evolveflow").warning("could not send the alert to %s: %s: %s", target[0], type(exc).__name__, exc)


def forget_alert_target(flow, flow_run, state) -> None:
    """Flow hook (on_completion, on_cancellation): nothing to report."""
    _ALERT_TARGETS.pop(str(flow_run.id), None)


def check_rounds(rounds: Any) -> None:
    """A deployment parameter is not checked by argparse: rounds below 1 is a user error here too."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds must be a whole number of at least 1, got {rounds!r}")


@flow(name="evolve-search", flow_run_name=search_run_name, validate_parameters=False,
      persist_result=True, result_serializer="json",
      on_failure=[send_alert], on_crashed=[send_alert],
      on_completion=[forget_alert_target], on_cancellation=[forget_alert_target])
def evolve_search(
    experiment: str,
    rounds: int,
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    root: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Runs `rounds` more rounds of an experiment's search (continuing its tree) and summarises.

    A failure the user must fix (the initial program does not evaluate, another search holds the
    lock, ...) ends the flow run as Failed with its one-line message, not with a traceback;
    calling the flow raises it again.
    """
    try:
        check_rounds(rounds)
        summary = search(experiment, rounds, config_file, overrides, root, progress)
        if summary["stop_reason"].startswith("aborted"):  # a second Ctrl-C or SIGTERM
            return Cancelled(message=summary["stop_reason"], data=SearchAborted(summary["stop_reason"]))
        if summary["stop_reason"].startswith("stopped:"):  # a circuit breaker, or storage failing
            return Failed(message=summary["stop_reason"], data=SearchStopped(summary["stop_reason"]))
        return summary
    except SearchStopped as exc:
        if not progress:  # `evolveflow run` prints it once itself
            get_run_logger().error("%s", exc)
        return Failed(message=f"stopped: {exc}", data=SearchStopped(f"stopped: {exc}"))
    except Exception as exc:
        if not is_user_error(exc):
            raise
        if isinstance(exc, SearchAlreadyRunning):
            _NOTHING_FAILED.add(str(flow_run.get_id()))
        if not progress:  # `evolveflow run` prints it once itself (the state message has it for the UI)
            get_run_logger().error("%s", exc)
        return Failed(message=str(exc), data=without_traceback(exc))


def search(experiment: str, rounds: int, config_file: str | None, overrides: dict[str, Any] | None,
           root: str | None, progress: bool) -> dict[str, Any]:
    """Opens the experiment, runs the rounds under its lock, and returns the summary."""
    make_undumpable()  # a candidate running as this user cannot read our environment (API keys)
    exp = load_experiment(experiment, Path(root) if root else None,
                          Path(config_file) if config_file else None, overrides)
    if not progress:  # `evolveflow run` printed them before Prefect started
        for notice in exp.notices:
            get_run_logger().info(notice)
    started = time.monotonic()
    logger = get_run_logger()
    remember_alert_target(exp.config, flow_run.get_id())
    run_tags = (experiment_tag(exp.name), pid_tag())
    with SearchLock(exp.lock_path):
        rt = open_runtime(exp, on_round=print_round if progress else None)
        run_id = uuid.uuid4().hex[:12]
        rt.tree.start_run(run_id, rounds, os.getpid())
        if rt.tree.close_dead_runs(run_id):  # we hold the lock: whoever left a run open is dead
            crashed = crash_dead_flow_runs(exp.name, logger)
            if crashed and exp.config.alerts.webhook_url:  # a kill -9 runs no hook: say it now
                alert_found_crashed(exp, crashed)
        tag_current_flow_run(run_tags)
        artifacts = ArtifactPublisher(exp.name, rounds, logger)
        artifacts.start()
        stop_reason = "error"
        try:
            prepare(rt)
            stop_reason = RoundLoop(rt, first_round(rt), rounds, artifacts, run_tags,
                                    show_waiting=progress, flow_run_id=flow_run.get_id()).run()
        except SearchStopped as exc:  # before the rounds: the evaluator is down on the initial program
            stop_reason = f"stopped: {exc}"
            raise
        except KeyboardInterrupt:  # a third Ctrl-C, or one before the rounds started
            rt.abort("aborted by KeyboardInterrupt")
            stop_reason = rt.abort_reason
            raise
        finally:
            if rt.aborted.is_set():
                stop_reason = record_abort(rt, stop_reason, logger)
            try:
                rt.tree.end_run(run_id, rt.stats.rounds_done, stop_reason)
            except Exception as exc:  # noqa: BLE001 - e.g. the disk is full: say so, keep the reason
                logger.error("could not record the end of this run in %s: %s", exp.tree_path, exc)
            summary = summarise(rt, stop_reason, time.monotonic() - started)
            artifacts.finish(rt.tree, summary, str(exp.storage_dir / "report.html"))
            publish(rt)
            write_report_at_end(rt.tree, exp.name, exp.storage_dir / "report.html")
            close_runtime(rt)
    logger.info("%s", search_summary_line(summary))
    if progress:
        print_summary(summary)
    return summary


def record_abort(rt: Runtime, stop_reason: str, logger) -> str:
    """Records the rounds in flight of an aborted search as abandoned (in the tree and the UI)."""
    in_flight = len(rt.in_flight)
    try:
        abandoned = record_abandoned(rt, f"in flight when the search stopped: {rt.abort_reason}")
    except Exception as exc:  # noqa: BLE001 - e.g. the disk is full: the next start marks them abandoned
        logger.error("could not record the %d round(s) in flight as abandoned: %s", in_flight, exc)
        return f"{stop_reason}: {in_flight} round(s) in flight could not be recorded"
    if abandoned:
        logger.warning("recorded %d round(s) in flight as abandoned: nodes %s", len(abandoned), abandoned)
        rt.stats.by_status["abandoned"] = len(abandoned)
        cancel_own_round_runs(rt.experiment.name, f"the search stopped: {rt.abort_reason}", logger)
    return f"{stop_reason}: {len(abandoned)} round(s) in flight recorded as abandoned"


def alert_found_crashed(exp, crashed: list[str]) -> None:
    """Reports flow runs of a search that died without a word (kill -9, power loss), found at restart."""
    payload = {"event": "evolveflow.search.crashed", "experiment": exp.name, "flow_run_names": crashed,
               "stop_reason": "the search process died; found when the next search started"}
    try:
        post_alert(exp.config.alerts.webhook_url, payload, exp.config.alerts.timeout_s)
    except Exception as exc:  # noqa: BLE001
        get_run_logger().warning("could not send the alert: %s: %s", type(exc).__name__, exc)


def prepare(rt: Runtime) -> None:
    """Checks the evaluator, repairs what a crash left, seeds knowledge, scores the initial program."""
    logger = get_run_logger()
    check_api_key(rt.config.api)
    check_evaluator(rt.evaluator)
    logger.info("evolveflow: %s", isolation_for(rt.evaluator).describe())
    abandoned = rt.tree.abandon_pending(rt.tree.last_stop_reason())
    if abandoned:
        logger.warning("marked %d in-flight node(s) of a stopped search as abandoned: %s", len(abandoned), abandoned)
    orphans = rt.memory.lesson_node_ids() - rt.tree.node_ids()
    if orphans:
        rt.memory.delete_lessons_for(orphans)
    if rt.experiment.knowledge_dir.is_dir():
        rt.memory.add_knowledge(load_knowledge_dir(rt.experiment.knowledge_dir))
    rt.memory.add_knowledge(list(rt.experiment.knowledge_items))  # e.g. ASI-Evolve's init_cognition.py
    if not rt.tree.node_ids():
        evaluate_initial(rt)
    elif rt.tree.best() is None:
        root = rt.tree.node(min(rt.tree.node_ids()))
        if root.status not in (Status.ABANDONED, Status.INFRA_FAILED):
            raise InitialProgramFailed(
                f"no node of {rt.experiment.name} has a score: the initial program failed earlier "
                f"({root.status.value}: {root.error}); fix it (or the evaluator) and delete "
                f"{rt.experiment.storage_dir} to start over"
            )
        # The process died, or the evaluator was down, while the root was evaluated: try again.
        evaluate_initial(rt, root)


def evaluate_initial(rt: Runtime, root: Node | None = None) -> Node:
    """Evaluates the initial program as the root node (round 0), or an unfinished root again."""
    code = root.code if root else rt.experiment.initial_code
    node = Node(id=root.id if root else rt.next_node_id(), parent_id=None, round=0, code=code,
                code_hash=code_hash(code), motivation="initial program", status=Status.PENDING)
    earlier_attempts = len(rt.tree.attempts(node.id)) if root else 0
    rt.tree.finish_node(node) if root else rt.tree.insert_node(node)
    candidate = Candidate(node=node)
    try:
        scored = round_tasks(rt).evaluate(rt.search_id, candidate)
    except InfraError as exc:
        scored = infra_failed(rt, candidate, exc)
    node = save(rt, final_node(candidate, scored, None, {}), scored, [], first_attempt=earlier_attempts + 1)
    if scored.status == Status.INFRA_FAILED:  # the evaluator is down, not the program: a breaker
        raise SearchStopped(
            f"the evaluator had only infrastructure failures on the initial program {_initial_name(rt)}: "
            f"{scored.error}")
    if scored.status != Status.OK:
        raise InitialProgramFailed(
            f"the initial program {_initial_name(rt)} did not evaluate ({scored.status.value}): "
            f"{scored.error}"
        )
    return node


def _initial_name(rt: Runtime) -> str:
    path = rt.experiment.initial_path
    return path.name if path is not None else rt.config.initial_program


def summarise(rt: Runtime, stop_reason: str, seconds: float) -> dict[str, Any]:
    """Returns the final summary of this run."""
    best = rt.tree.best()
    roots = sorted(rt.tree.node_ids())
    initial = rt.tree.node(roots[0]) if roots else None
    return {
        "experiment": rt.experiment.name,
        "stop_reason": stop_reason,
        "rounds_done": rt.stats.rounds_done,
        "by_status": dict(rt.stats.by_status),
        "duplicates_rejected": rt.stats.duplicates,
        "near_duplicates_rejected": rt.stats.near_duplicates,
        "lessons_written": rt.stats.lessons,
        "initial_score": initial.score if initial else None,
        "best_score": best.score if best else None,
        "best_node": best.id if best else None,
        "usage": rt.tree.usage_totals(),
        "seconds": round(seconds, 1),
        "storage": str(rt.experiment.storage_dir),
    }
