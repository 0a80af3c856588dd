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
    initial = tree.nodes([min(ids)]) if ids else []
    by_status = tree.status_counts()
    report: dict[str, Any] = {
        "experiment": experiment,
        "generated_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "running": running,
        "nodes": sum(by_status.values()),
        "by_status": by_status,
        "rounds": tree.max_round(),
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
