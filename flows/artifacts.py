"""What the Prefect UI shows of a search: keyed artifacts, round log lines, run names.

The builders are plain functions (nodes and dicts in, markdown or rows out) that import nothing
from Prefect; `ArtifactPublisher` is the thin part that sends them, throttled so that a round
stays fast. Keys are per experiment, so the UI shows the latest of each and its history.
"""
from __future__ import annotations

import os
import re
import socket
import time
from typing import Any, Callable, Sequence

from evolveflow.records import Node

LEADERBOARD_SIZE = 20
LEADERBOARD_EVERY_S = 5.0  # the table costs a few API calls; readers need it fresh to the minute
PROGRESS_EVERY_S = 1.0  # one API call: at most once a second


def slug(name: str) -> str:
    """Returns an artifact-key-safe form of an experiment name (lowercase letters, digits, dashes)."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return text or "experiment"


def artifact_keys(experiment: str) -> dict[str, str]:
    """Returns the artifact keys of an experiment's search."""
    s = slug(experiment)
    return {kind: f"{s}-{kind}" for kind in ("leaderboard", "best", "progress", "summary")}


def experiment_tag(experiment: str) -> str:
    """Returns the tag every flow run of this experiment carries (queryable through the API)."""
    return f"experiment:{experiment}"


def pid_tag(pid: int | None = None) -> str:
    """Returns the tag naming the process that runs a flow run: host and pid."""
    return f"evolveflow-pid:{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def dead_process(tags: Sequence[str]) -> bool:
    """Returns True when a flow run's pid tag names a process of this host that no longer exists."""
    host = socket.gethostname()
    for tag in tags:
        if tag.startswith("evolveflow-pid:"):
            tag_host, _, pid = tag[len("evolveflow-pid:"):].rpartition(":")
            if tag_host != host or not pid.isdigit() or int(pid) == os.getpid():
                return False
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                return True
            except PermissionError:  # alive, someone else's
                return False
            return False
    return False


def _score(score: float | None) -> str:
    return "-" if score is None else f"{score:.6f}"


def _one_line(text: str | None, limit: int = 120) -> str:
    line = " ".join((text or "").split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _first_line(text: str | None, limit: int = 80) -> str:
    # A table cell the UI does not wrap: one short line, the rest is on the best page and in the report.
    line = next((ln for ln in (text or "").splitlines() if ln.strip()), "")
    return _one_line(line, limit)


def round_line(summary: dict[str, Any]) -> str:
    """Returns the one log line of a finished round: round, node, parent, status, score, change."""
    score, parent_score = summary.get("score"), summary.get("parent_score")
    line = (f"round {summary['round']} node {summary['node']} parent {summary['parent']} "
            f"{summary['status']} score {_score(score)}")
    if score is not None and parent_score is not None:
        line += f" ({score - parent_score:+.6f} vs parent)"
    elif summary.get("error"):
        line += f": {_one_line(summary['error'], 160)}"
    return line


def leaderboard_rows(nodes: Sequence[Node]) -> list[dict[str, Any]]:
    """Returns the table rows of the best nodes, best first (nodes: the top ones, any order)."""
    ranked = sorted((n for n in nodes if n.score is not None), key=lambda n: (-n.score, n.id))
    return [
        {"rank": i, "node": n.id, "score": round(n.score, 6), "parent": n.parent_id, "round": n.round,
         "status": n.status.value, "motivation": _first_line(n.motivation)}
        for i, n in enumerate(ranked[:LEADERBOARD_SIZE], start=1)
    ]


def best_markdown(experiment: str, best: Node, lineage: Sequence[Node]) -> str:
    """Returns the "best so far" page: score, lineage, the diff from its parent, the lesson."""
    path = " → ".join(f"{n.id} ({_score(n.score)})" for n in lineage) or str(best.id)
    lines = [
        f"# Best so far: {experiment}",
        "",
        f"**Score {_score(best.score)}** — node {best.id}, round {best.round}, parent {best.parent_id}",
        "",
        f"**Lineage** (root → best): {path}",
        "",
        f"**Motivation:** {_one_line(best.motivation, 400) or '-'}",
        "",
        "## Diff from its parent",
        "",
        "```diff",
        (best.edit or "(the initial program: no parent)").rstrip(),
        "```",
        "",
        "## Lesson",
        "",
        (best.analysis or "(none written)").strip(),
    ]
    return "\n".join(lines) + "\n"


def summary_markdown(summary: dict[str, Any], report_html: str) -> str:
    """Returns the final summary page of a search run."""
    usage = summary.get("usage") or {}
    cost = usage.get("cost_usd")
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(summary.get("by_status", {}).items())) or "none"
    lines = [
        f"# Search {summary['experiment']}: stopped ({summary['stop_reason']})",
        "",
        "| item | value |",
        "|---|---|",
        f"| rounds done | {summary['rounds_done']} |",
        f"| outcomes | {outcomes} |",
        f"| duplicates rejected | {summary.get('duplicates_rejected', 0)} exact, "
        f"{summary.get('near_duplicates_rejected', 0)} near |",
        f"| lessons written | {summary.get('lessons_written', 0)} |",
        f"| initial score | {_score(summary.get('initial_score'))} |",
        f"| best score | {_score(summary.get('best_score'))} (node {summary.get('best_node')}) |",
        f"| LLM calls | {usage.get('llm_calls', 0)} |",
        f"| tokens | {usage.get('prompt_tokens', 0)} prompt + {usage.get('completion_tokens', 0)} completion |",
        f"| cost | {'unknown' if cost is None else f'${cost:.4f}'} |",
        f"| seconds | {summary.get('seconds')} |",
        f"| storage | `{summary.get('storage')}` |",
        f"| report | `{report_html}` |",
    ]
    return "\n".join(lines) + "\n"


def search_summary_line(summary: dict[str, Any]) -> str:
    """Returns the search's summary as one log line."""
    usage = summary.get("usage") or {}
    cost = usage.get("cost_usd")
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(summary.get("by_status", {}).items())) or "none"
    return (f"search {summary['experiment']} stopped ({summary['stop_reason']}) after "
            f"{summary['rounds_done']} rounds in {summary.get('seconds')} s: initial "
            f"{_score(summary.get('initial_score'))}, best {_score(summary.get('best_score'))} "
            f"(node {summary.get('best_node')}); outcomes {outcomes}; LLM calls {usage.get('llm_calls', 0)}, "
            f"cost {'unknown' if cost is None else f'${cost:.4f}'}; stored in {summary.get('storage')}")


class ArtifactPublisher:
    """Sends a search's artifacts to Prefect: progress, leaderboard, best so far, final summary.

    Call from the search flow's thread (artifacts attach to the current flow run). A failure to
    publish is logged once and never stops the search: the tree is the record, artifacts a view.
    """

    def __init__(self, experiment: str, rounds_asked: int, logger=None, every_s: float = LEADERBOARD_EVERY_S):
        self.experiment = experiment
        self.keys = artifact_keys(experiment)
        self.rounds_asked = max(rounds_asked, 1)
        self.every_s = every_s
        self.logger = logger
        self.progress_id = None
        self.best_id: int | None = None
        self.published_at = 0.0
        self.progress_at = 0.0
        self.failed = False

    def _safely(self, what: str, send) -> Any:
        try:
            return send()
        except Exception as exc:  # noqa: BLE001 - a view of the search must not stop it
            if not self.failed and self.logger is not None:
                self.logger.warning("could not publish the %s artifact: %s: %s", what, type(exc).__name__, exc)
            self.failed = True
            return None

    def start(self) -> None:
        """Creates the progress artifact of this search run (0 %)."""
        from prefect.artifacts import create_progress_artifact

        self.progress_id = self._safely("progress", lambda: create_progress_artifact(
            0.0, key=self.keys["progress"], description=f"{self.experiment}: rounds done of {self.rounds_asked}"))

    def after_round(self, tree, rounds_done: int, force: bool = False) -> None:
        """Updates progress (at most once a second) and the leaderboard and best page (every `every_s`)."""
        from prefect.artifacts import update_progress_artifact

        if self.progress_id is not None and (force or time.monotonic() - self.progress_at >= PROGRESS_EVERY_S):
            self.progress_at = time.monotonic()
            percent = min(100.0, 100.0 * rounds_done / self.rounds_asked)
            self._safely("progress", lambda: update_progress_artifact(
                self.progress_id, percent, description=f"{self.experiment}: {rounds_done} of {self.rounds_asked} rounds"))
        if force or time.monotonic() - self.published_at >= self.every_s:
            self.publish_tables(tree)

    def publish_tables(self, tree) -> None:
        """Sends the leaderboard and, when the best changed, the best-so-far page."""
        from prefect.artifacts import create_markdown_artifact, create_table_artifact

        self.published_at = time.monotonic()
        top = sorted((s for s in tree.summaries() if s.status.value == "ok" and s.score is not None),
                     key=lambda s: (-s.score, s.id))[:LEADERBOARD_SIZE]
        rows = leaderboard_rows(tree.nodes([s.id for s in top]))
        self._safely("leaderboard", lambda: create_table_artifact(
            rows, key=self.keys["leaderboard"], description=f"{self.experiment}: top {LEADERBOARD_SIZE} programs"))
        if top and top[0].id != self.best_id:
            best = tree.node(top[0].id)
            page = best_markdown(self.experiment, best, tree.lineage(best.id))
            if self._safely("best", lambda: create_markdown_artifact(
                    page, key=self.keys["best"], description=f"{self.experiment}: best so far")) is not None:
                self.best_id = best.id

    def finish(self, tree, summary: dict[str, Any], report_html: str) -> None:
        """Publishes the final state and the summary page."""
        from prefect.artifacts import create_markdown_artifact

        self.after_round(tree, summary.get("rounds_done", 0), force=True)
        self._safely("summary", lambda: create_markdown_artifact(
            summary_markdown(summary, report_html), key=self.keys["summary"],
            description=f"{self.experiment}: summary of the search run"))


# ---- flow run hygiene: the UI tells the truth after a crash ------------------------------------

def tag_current_flow_run(run_tags: Sequence[str]) -> None:
    """Adds tags (experiment, process) to the running search's flow run, so it can be found later."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    if not run_id:
        return
    try:
        with get_client(sync_client=True) as client:
            current = client.read_flow_run(run_id).tags
            client.update_flow_run(run_id, tags=sorted(set(current) | set(run_tags)))
    except Exception:  # noqa: BLE001 - tags help crash hygiene; their absence never stops a search
        pass


def crash_dead_flow_runs(experiment: str, logger=None) -> list[str]:
    """Sets to Crashed the RUNNING search and round flow runs of this experiment whose process died.

    Round flow runs have no heartbeats (flows/rounds.py), so nothing else would ever end them.
    Only runs whose pid tag names a dead process of this host are touched. Returns their names.
    """
    from prefect.states import Crashed

    return end_running_flow_runs(
        experiment, ["evolve-search", "evolve-round"], dead_process,
        lambda: Crashed(message="the search process died while this run was in flight; "
                                "a later search of the experiment found it"),
        "of a dead search to Crashed", logger)


def cancel_own_round_runs(experiment: str, reason: str, logger=None) -> list[str]:
    """Sets to Cancelled the RUNNING round flow runs of this process (an aborted search's rounds)."""
    from prefect.states import Cancelled

    own = pid_tag()
    return end_running_flow_runs(experiment, ["evolve-round"], lambda tags: own in tags,
                                 lambda: Cancelled(message=reason), "in flight to Cancelled", logger)


def end_running_flow_runs(experiment: str, flow_names: Sequence[str], select: Callable[[Sequence[str]], bool],
                          new_state: Callable[[], Any], what: str, logger=None) -> list[str]:
    """Forces the RUNNING flow runs of the experiment whose tags `select` accepts into new_state()."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowFilter, FlowFilterName, FlowRunFilter,
                                                FlowRunFilterState, FlowRunFilterStateType,
                                                FlowRunFilterTags)
    from prefect.client.schemas.objects import StateType

    ended: list[str] = []
    try:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=list(flow_names))),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])),
                    tags=FlowRunFilterTags(all_=[experiment_tag(experiment)])),
                limit=200)
            for run in runs:
                if select(run.tags):
                    client.set_flow_run_state(run.id, new_state(), force=True)
                    ended.append(run.name)
    except Exception as exc:  # noqa: BLE001 - the tree is already right; the UI is a view
        if logger is not None:
            logger.warning("could not set flow runs %s: %s: %s", what, type(exc).__name__, exc)
    if ended and logger is not None:
        logger.warning("set %d flow run(s) %s: %s", len(ended), what, ", ".join(ended))
    return ended
