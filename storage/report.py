"""A search's state as one JSON-able report, published by the running search for other readers.

DuckDB locks the tree against every other process while a search runs, so `status` and `best`
read this snapshot then; with no search running they build the same report from the tree.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from evolveflow.caps import METRICS_MAX_CHARS, cap_metrics
from storage.tree import TreeStore


def build_report(tree: TreeStore, experiment: str, running: dict[str, Any] | None = None,
                 metrics_max_chars: int = METRICS_MAX_CHARS) -> dict[str, Any]:
    """Returns the experiment's state: counts, usage, the best node and its lineage.

    The best node's metrics are cut to metrics_max_chars per value (evaluation.metrics_max_chars),
    also for trees written before the tree itself held them cut.
    """
    best = tree.best()
    ids = tree.node_ids()
    ran, lost = rounds_ran(tree, running is not None)
    initial = tree.nodes([min(ids)]) if ids else []
    by_status = tree.status_counts()
    report: dict[str, Any] = {
        "experiment": experiment,
        "generated_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "running": running,
        "nodes": sum(by_status.values()),
        "by_status": by_status,
        "rounds": ran,
        "round_numbers_lost": lost,
        "usage": tree.usage_totals(),
        "initial_score": initial[0].score if initial else None,
        "best": None,
        "lineage": [],
    }
    if best is not None:
        report["best"] = {
            "id": best.id, "round": best.round, "score": best.score, "score_spread": best.score_spread,
            "metrics": cap_metrics(best.metrics, metrics_max_chars), "motivation": best.motivation, "code": best.code,
            "attempts": len(tree.attempts(best.id)),
        }
        report["lineage"] = [
            {"id": n.id, "round": n.round, "score": n.score, "motivation": n.motivation[:200]}
            for n in tree.lineage(best.id)
        ]
    return report


# Written by the search (flows/rounds.py): the highest round number handed out, and the first of
# the current run. A number is never given out twice, so a round killed before its node was
# written leaves a gap; status counts the rounds that produced a node and reports the gaps.
LAST_ROUND_FILE = "last_round"
RUN_FIRST_ROUND_FILE = "run_first_round"


def read_round_file(storage_dir: Path, name: str) -> int | None:
    """Returns the round number stored in storage_dir/name, or None."""
    try:
        return int((storage_dir / name).read_text().strip())
    except (OSError, ValueError):
        return None


def rounds_ran(tree: TreeStore, running: bool) -> tuple[int, int]:
    """Returns (rounds that produced a node, round numbers handed out that never will).

    Numbers of the running search's own rounds in flight are not lost (yet); with no search
    running, every number handed out without a node is.
    """
    storage_dir = tree.path.parent
    issued = max(read_round_file(storage_dir, LAST_ROUND_FILE) or 0, tree.max_round())
    horizon = issued
    if running:
        first = read_round_file(storage_dir, RUN_FIRST_ROUND_FILE)
        horizon = min(issued, first - 1) if first else 0  # a search from before this file: unknown
    ran, below = tree._fetch(  # noqa: SLF001 - one query of the same storage package
        "SELECT count(DISTINCT round) FILTER (WHERE round >= 1), "
        "count(DISTINCT round) FILTER (WHERE round BETWEEN 1 AND ?) FROM nodes", [horizon])[0]
    return ran, horizon - below


def empty_report(experiment: str, running: dict[str, Any] | None) -> dict[str, Any]:
    """Returns the report of an experiment with no tree yet."""
    return {
        "experiment": experiment, "generated_at": time.strftime("%Y-%m-%d %H:%M:%S"), "running": running,
        "nodes": 0, "by_status": {}, "rounds": 0, "round_numbers_lost": 0,
        "usage": {"llm_calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": None,
                  "calls_with_unknown_cost": 0},
        "initial_score": None, "best": None, "lineage": [],
    }


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Writes the report atomically (readers never see half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1, default=str))
    os.replace(tmp, path)


def read_report(path: Path) -> dict[str, Any] | None:
    """Returns the last published report, or None."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
