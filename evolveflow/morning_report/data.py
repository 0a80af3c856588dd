"""What the morning report shows, read from the experiment tree in a few bulk queries."""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.tree import TreeStore

STATUSES = ("ok", "candidate_error", "infra_failed", "rejected", "abandoned", "pending")


@dataclass(frozen=True)
class NodeRow:
    """One node of the tree, without its code."""

    id: int
    parent_id: int | None
    round: int
    score: float | None
    score_spread: float | None
    status: str
    error: str | None
    motivation: str
    edit: str
    analysis: str | None


@dataclass(frozen=True)
class CallRow:
    """One recorded LLM call."""

    created_at: datetime
    purpose: str
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    node_id: int | None


@dataclass(frozen=True)
class ReportData:
    """Everything the report renders, gathered once."""

    experiment: str
    generated_at: str
    nodes: list[NodeRow]
    attempt_scores: dict[int, list[float]]  # scored evaluation attempts per node, in order
    calls: list[CallRow]
    runs: list[dict[str, Any]]
    usage: dict[str, Any]
    best_id: int | None
    lineage: list[int]  # root -> best

    def by_id(self) -> dict[int, NodeRow]:
        return {n.id: n for n in self.nodes}


def _rows(tree: TreeStore, sql: str) -> list[tuple]:
    # The tree's own serialised read: the report needs columns (timestamps, all attempts at once)
    # that no public reader returns, and one query beats a thousand per-node calls.
    return tree._fetch(sql)  # noqa: SLF001


def gather(tree: TreeStore, experiment: str) -> ReportData:
    """Returns the report's data from an open tree (read-only or the search's own)."""
    nodes = [NodeRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7] or "", r[8] or "", r[9]) for r in _rows(
        tree, "SELECT id, parent_id, round, score, score_spread, status, error, motivation, edit, analysis "
              "FROM nodes ORDER BY id")]
    attempt_scores: dict[int, list[float]] = {}
    for node_id, score in _rows(tree, "SELECT node_id, score FROM attempts WHERE outcome = 'ok' "
                                      "AND score IS NOT NULL ORDER BY node_id, attempt"):
        attempt_scores.setdefault(node_id, []).append(score)
    calls = [CallRow(r[0], r[1], r[2], r[3] or 0, r[4] or 0, r[5], r[6]) for r in _rows(
        tree, "SELECT created_at, purpose, model, prompt_tokens, completion_tokens, "
              "CASE WHEN cost_usd IS NULL AND model IS NULL AND error IS NOT NULL THEN 0 ELSE cost_usd END, "
              "node_id FROM llm_calls ORDER BY created_at, rowid")]
    run_cols = ("run_id", "started_at", "ended_at", "rounds_asked", "rounds_done", "stop_reason")
    runs = [dict(zip(run_cols, r)) for r in _rows(tree, f"SELECT {', '.join(run_cols)} FROM runs ORDER BY started_at")]
    best = tree.best()
    return ReportData(
        experiment=experiment, generated_at=time.strftime("%Y-%m-%d %H:%M:%S %Z"), nodes=nodes,
        attempt_scores=attempt_scores, calls=calls, runs=runs, usage=tree.usage_totals(),
        best_id=best.id if best else None, lineage=[n.id for n in tree.lineage(best.id)] if best else [],
    )


def best_so_far(nodes: list[NodeRow]) -> tuple[list[int], list[float]]:
    """Returns the best ok score after each round that had one (a step line)."""
    best: dict[int, float] = {}
    for n in nodes:
        if n.status == "ok" and n.score is not None:
            best[n.round] = max(best.get(n.round, n.score), n.score)
    rounds, scores, running = [], [], None
    for rnd in sorted(best):
        running = best[rnd] if running is None else max(running, best[rnd])
        rounds.append(rnd)
        scores.append(running)
    return rounds, scores


def leaderboard(data: ReportData, top: int = 20) -> list[tuple[NodeRow, NodeRow | None]]:
    """Returns the top scored nodes (ties: earliest) with their parents."""
    index = data.by_id()
    scored = sorted((n for n in data.nodes if n.status == "ok" and n.score is not None),
                    key=lambda n: (-n.score, n.id))
    return [(n, index.get(n.parent_id)) for n in scored[:top]]


def subtree_sizes(nodes: list[NodeRow]) -> dict[int, int]:
    """Returns each node's subtree size (itself included); children always have larger ids."""
    sizes = {n.id: 1 for n in nodes}
    for n in sorted(nodes, key=lambda n: -n.id):
        if n.parent_id in sizes:
            sizes[n.parent_id] += sizes[n.id]
    return sizes


def noisy_nodes(data: ReportData) -> list[tuple[int, list[float]]]:
    """Returns the nodes with two or more scored attempts: the evaluator's measured noise."""
    return [(node_id, scores) for node_id, scores in sorted(data.attempt_scores.items()) if len(scores) >= 2]
