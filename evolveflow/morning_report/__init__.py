"""The morning report: one self-contained HTML file of a search (charts, tree, leaderboard, lessons)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from storage.tree import TreeStore


def write_html_report(tree: TreeStore, experiment: str, path: Path) -> Path:
    """Writes the report atomically (a browser never opens half a file) and returns its path."""
    from evolveflow.morning_report.data import gather
    from evolveflow.morning_report.page import render  # imports plotly: only when a report is made

    html = render(gather(tree, experiment))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_report_at_end(tree: TreeStore, experiment: str, path: Path) -> None:
    """Writes the report at a search's end; a failure is a warning, never the search's failure."""
    try:
        write_html_report(tree, experiment, path)
    except Exception as exc:  # noqa: BLE001 - the search's results are in the tree whatever happens here
        _logger().warning("could not write the HTML report %s: %r", path, exc)


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """Returns the flow run's logger (seen in the Prefect UI), else this module's."""
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:  # noqa: BLE001 - no run context: a plain logger will do
        return logging.getLogger(__name__)
