"""The experiment tree in a DuckDB file: nodes, evaluation attempts, LLM calls and runs.

Contract: one process owns the file for writing (DuckDB locks it against every other process,
even read-only ones); inside that process every method is thread-safe, serialised by one lock,
and every write is one transaction. Other processes read the JSON report the owner publishes
(see storage/report.py) or open the file read-only when no search holds it.
"""
from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import duckdb

from evolveflow.records import EvalResult, LLMReply, Node, NodeSummary, Status
from storage.schema import LINEAGE_SQL, MIGRATIONS, NODE_COLUMNS, SCHEMA, SCHEMA_VERSION, SUMMARY_COLUMNS


class TreeLocked(Exception):
    """Another process holds the experiment's DuckDB file."""


def _json(value: Any) -> str:
    return json.dumps(value, default=str, allow_nan=False)


def _clean(value: Any) -> Any:
    """Returns value with non-finite floats made JSON-safe strings (DuckDB JSON rejects NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _node_from_row(row: Sequence[Any]) -> Node:
    data = dict(zip(NODE_COLUMNS, row))
    for key in ("metrics", "timings", "feedback", "private_metrics"):
        data[key] = json.loads(data[key]) if data[key] else {}
    data["status"] = Status(data["status"])
    for key in ("motivation", "edit", "notes"):
        data[key] = data[key] or ""
    return Node(**data)


def _node_params(node: Node) -> list[Any]:
    data = node.model_dump()
    data["metrics"] = _json(_clean(node.metrics))
    data["timings"] = _json(_clean(node.timings))
    data["feedback"] = _json(node.feedback)
    data["private_metrics"] = _json(_clean(node.private_metrics))
    data["status"] = node.status.value
    return [data[col] for col in NODE_COLUMNS]


class TreeStore:
    """DuckDB-backed experiment tree (see module docstring for the concurrency contract)."""

    def __init__(self, path: Path | str, *, read_only: bool = False, lock_wait_s: float = 0.0):
        self.path = Path(path)
        self.read_only = read_only
        self._lock = threading.RLock()
        # Every node's summary, kept by this (the only writing) connection once first asked for:
        # samplers read them every round, and reading the whole table each time grew with the tree.
        self._summaries: dict[int, NodeSummary] | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = self._connect(lock_wait_s)
        if not read_only:
            self._con.execute(SCHEMA)
            self._con.execute(MIGRATIONS)
            self._con.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)]
            )

    def _connect(self, lock_wait_s: float) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + lock_wait_s
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=self.read_only)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    raise
                if time.monotonic() >= deadline:
                    raise TreeLocked(
                        f"{self.path} is held by another process (a running search?): {exc}"
                    ) from None
                time.sleep(0.2)

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def __enter__(self) -> "TreeStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._con.execute(sql, list(params)).fetchall()

    def _transaction(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        with self._lock:
            self._con.execute("BEGIN TRANSACTION")
            try:
                for sql, params in statements:
                    if params and isinstance(params[0], (list, tuple)):
                        self._con.executemany(sql, [list(p) for p in params])
                    else:
                        self._con.execute(sql, list(params))
                self._con.execute("COMMIT")
            except BaseException:
                try:
                    self._con.execute("ROLLBACK")
                except duckdb.Error:
                    pass  # the failed statement (a full disk, ...) ended the transaction: keep its error
                raise

    # ---- reads -------------------------------------------------------------------------------

    def summaries(self) -> list[NodeSummary]:
        """Returns every node as a code-free summary, for samplers (ordered by id)."""
        with self._lock:
            if self._summaries is None or self.read_only:
                self._summaries = self._summaries_of(None)
            return [self._summaries[i] for i in sorted(self._summaries)]

    def _summaries_of(self, ids: Sequence[int] | None) -> dict[int, NodeSummary]:
        where = "" if ids is None else f" WHERE id IN ({', '.join('?' * len(ids))})"
        rows = self._fetch(f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM nodes{where}", list(ids or ()))
        return {r[0]: NodeSummary(**{**dict(zip(SUMMARY_COLUMNS, r)), "metrics": json.loads(r[-1] or "{}")})
                for r in rows}

    def _resummarize(self, ids: Sequence[int]) -> None:
        """After a write to these nodes: their cached summaries are read again (if any are cached)."""
        with self._lock:
            if self._summaries is not None and ids:
                self._summaries.update(self._summaries_of(list(ids)))

    def nodes(self, ids: Sequence[int]) -> list[Node]:
        """Returns the nodes with these ids, in the order asked."""
        if not ids:
            return []
        rows = self._fetch(
            f"SELECT {', '.join(NODE_COLUMNS)} FROM nodes WHERE id IN ({', '.join('?' * len(ids))})",
            ids,
        )
        by_id = {row[0]: _node_from_row(row) for row in rows}
        return [by_id[i] for i in ids if i in by_id]

    def node(self, node_id: int) -> Node | None:
        found = self.nodes([node_id])
        return found[0] if found else None

    def lineage(self, node_id: int) -> list[Node]:
        """Returns the path from the root to this node."""
        ids = [row[0] for row in self._fetch(LINEAGE_SQL, [node_id])]
        return self.nodes(ids)

    def best(self) -> Node | None:
        """Returns the evaluated node with the highest score (ties: the earliest)."""
        rows = self._fetch(
            "SELECT id FROM nodes WHERE status = 'ok' AND score IS NOT NULL "
            "ORDER BY score DESC, id ASC LIMIT 1"
        )
        return self.node(rows[0][0]) if rows else None

    def best_score(self) -> float | None:
        """Returns the highest confirmed score (status ok), without loading any node."""
        return self._fetch("SELECT max(score) FROM nodes WHERE status = 'ok'")[0][0]

    def lineage_scores(self, node_id: int) -> list[float]:
        """Returns the ok scores on the path from the root to this node (no code loaded)."""
        return [r[0] for r in self._fetch(
            f"SELECT n.score FROM ({LINEAGE_SQL}) l JOIN nodes n ON n.id = l.id "
            "WHERE n.status = 'ok' AND n.score IS NOT NULL", [node_id])]

    def failed_children(self, parent_id: int, limit: int = 3) -> list[Node]:
        """Returns the parent's latest children that failed or were rejected, newest first."""
        rows = self._fetch(
            "SELECT id FROM nodes WHERE parent_id = ? AND status IN ('candidate_error', 'rejected') "
            "ORDER BY id DESC LIMIT ?",
            [parent_id, limit],
        )
        return self.nodes([r[0] for r in rows])

    def find_hash(self, code_hash: str) -> int | None:
        """Returns the id of a node with this code hash that was or is being evaluated."""
        rows = self._fetch(
            "SELECT id FROM nodes WHERE code_hash = ? AND status IN ('ok', 'candidate_error', 'pending') "
            "ORDER BY id LIMIT 1",
            [code_hash],
        )
        return rows[0][0] if rows else None

    def max_id(self) -> int:
        return self._fetch("SELECT coalesce(max(id), 0) FROM nodes")[0][0]

    def max_round(self) -> int:
        return self._fetch("SELECT coalesce(max(round), 0) FROM nodes")[0][0]

    def status_counts(self) -> dict[str, int]:
        return dict(self._fetch("SELECT status, count(*) FROM nodes GROUP BY status"))

    def usage_totals(self) -> dict[str, Any]:
        """Returns total tokens and cost of all LLM calls, billed-but-unusable replies included.

        A call whose price is unknown is one that came back (it names a model) with a NULL cost;
        a call that failed without any response (model NULL) cost nothing and is not one. The
        total cost is None as soon as one price is unknown: a partial sum would look real.
        """
        row = self._fetch(
            "SELECT count(*), sum(prompt_tokens), sum(completion_tokens), sum(cost_usd), "
            "count(*) FILTER (WHERE cost_usd IS NULL AND (model IS NOT NULL OR error IS NULL)) FROM llm_calls"
        )[0]
        calls, prompt, completion, cost, unknown = row
        return {
            "llm_calls": calls,
            "prompt_tokens": prompt or 0,
            "completion_tokens": completion or 0,
            "cost_usd": None if unknown else (cost or 0.0) if calls else None,
            "calls_with_unknown_cost": unknown,
        }

    def llm_calls(self, node_id: int) -> list[dict[str, Any]]:
        """Returns the node's recorded LLM calls, in the order they were written."""
        cols = ("purpose", "model", "prompt_tokens", "completion_tokens", "cost_usd", "error", "first_attempt")
        rows = self._fetch(
            f"SELECT {', '.join(cols)} FROM llm_calls WHERE node_id = ? ORDER BY rowid", [node_id]
        )
        return [dict(zip(cols, r)) for r in rows]

    def attempts(self, node_id: int) -> list[dict[str, Any]]:
        cols = ("attempt", "outcome", "score", "metrics", "error", "exit_code", "duration_s")
        rows = self._fetch(
            f"SELECT {', '.join(cols)} FROM attempts WHERE node_id = ? ORDER BY attempt", [node_id]
        )
        return [dict(zip(cols, r)) for r in rows]

    def ids_with_status(self, status: Status) -> list[int]:
        return [r[0] for r in self._fetch("SELECT id FROM nodes WHERE status = ? ORDER BY id", [status.value])]

    def node_ids(self) -> set[int]:
        return {r[0] for r in self._fetch("SELECT id FROM nodes")}

    # ---- writes (one transaction each) ----------------------------------------------------------

    def add_visit(self, node_id: int) -> None:
        """Counts one more selection of this node as a parent (UCB1's n)."""
        self._transaction([("UPDATE nodes SET visits = visits + 1 WHERE id = ?", [node_id])])
        self._resummarize([node_id])

    def insert_node(self, node: Node) -> None:
        """Writes a new node (pending, rejected or already evaluated)."""
        placeholders = ", ".join("?" * len(NODE_COLUMNS))
        self._transaction(
            [(f"INSERT INTO nodes ({', '.join(NODE_COLUMNS)}) VALUES ({placeholders})", _node_params(node))]
        )
        self._resummarize([node.id])

    def finish_node(
        self,
        node: Node,
        attempts: Sequence[EvalResult] = (),
        llm_calls: Sequence[tuple[str, LLMReply | None, str | None]] = (),
        first_attempt: int = 1,
    ) -> None:
        """Writes a node's final state, its evaluation attempts and its LLM calls atomically.

        Idempotent: attempts are numbered from first_attempt and replaced by number, and the LLM
        calls given replace those an earlier write with the same first_attempt stored, so a
        retried persist never counts tokens or cost twice. A re-evaluation (a later first_attempt)
        keeps the calls and attempts written before it.
        """
        params = _node_params(node)
        # Upsert: a node may have been inserted as pending earlier. Visits are counted separately.
        statements: list[tuple[str, Sequence[Any]]] = [(
            f"INSERT INTO nodes ({', '.join(NODE_COLUMNS)}) VALUES ({', '.join('?' * len(NODE_COLUMNS))}) "
            "ON CONFLICT (id) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in NODE_COLUMNS[1:] if c != "visits")
            + ", updated_at = now()",
            params,
        )]
        if attempts:
            statements.append(
                (
                    "INSERT OR REPLACE INTO attempts (node_id, attempt, outcome, score, metrics, error, "
                    "exit_code, duration_s, stdout_tail, stderr_tail, feedback, private_metrics) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            node.id, first_attempt + i, a.outcome.value, a.score, _json(_clean(a.metrics)), a.error,
                            a.exit_code, a.duration_s, a.stdout_tail, a.stderr_tail, _json(a.feedback),
                            _json(_clean(a.private_metrics)),
                        )
                        for i, a in enumerate(attempts)
                    ],
                )
            )
        if llm_calls:
            statements.append((
                "DELETE FROM llm_calls WHERE node_id = ? AND first_attempt = ?", [node.id, first_attempt]
            ))
            statements.append(
                (
                    "INSERT INTO llm_calls (node_id, purpose, model, prompt_tokens, completion_tokens, "
                    "cost_usd, latency_s, error, first_attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            node.id, purpose, r.model if r else None, r.prompt_tokens if r else None,
                            r.completion_tokens if r else None, r.cost_usd if r else None,
                            r.latency_s if r else None, error, first_attempt,
                        )
                        for purpose, r, error in llm_calls
                    ],
                )
            )
        self._transaction(statements)
        self._resummarize([node.id])

    def record_analysis(self, node_id: int, analysis: str | None,
                        llm_calls: Sequence[tuple[str, LLMReply | None, str | None]]) -> None:
        """Writes a node's lesson and its analysis calls (replacing the analysis calls of an earlier try)."""
        self._transaction([
            ("UPDATE nodes SET analysis = ? WHERE id = ?", [analysis, node_id]),
            ("DELETE FROM llm_calls WHERE node_id = ? AND purpose = 'analyze'", [node_id]),
            *([(
                "INSERT INTO llm_calls (node_id, purpose, model, prompt_tokens, completion_tokens, "
                "cost_usd, latency_s, error, first_attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                [(node_id, purpose, r.model if r else None, r.prompt_tokens if r else None,
                  r.completion_tokens if r else None, r.cost_usd if r else None,
                  r.latency_s if r else None, error) for purpose, r, error in llm_calls],
            )] if llm_calls else []),
        ])

    def set_analysis(self, node_id: int, analysis: str) -> None:
        self._transaction([("UPDATE nodes SET analysis = ? WHERE id = ?", [analysis, node_id])])

    def abandon_pending(self, why: str | None = None) -> list[int]:
        """Marks nodes left pending by a stopped search as abandoned (saying why, when known); returns their ids."""
        ids = [r[0] for r in self._fetch("SELECT id FROM nodes WHERE status = 'pending'")]
        if ids:
            error = "the search stopped while this candidate was in flight" + (f" ({why})" if why else "")
            self._transaction(
                [(
                    "UPDATE nodes SET status = 'abandoned', error = ?, updated_at = current_timestamp "
                    "WHERE status = 'pending'",
                    [error],
                )]
            )
            self._resummarize(ids)
        return ids

    def last_stop_reason(self) -> str | None:
        """Why the last run that recorded its end stopped (e.g. a full disk), if it did."""
        rows = self._fetch("SELECT stop_reason FROM runs WHERE stop_reason IS NOT NULL "
                           "ORDER BY started_at DESC LIMIT 1")
        return rows[0][0] if rows else None

    def close_dead_runs(self, current_run_id: str) -> int:
        """Marks runs that never ended (their process died) as such; returns how many."""
        open_runs = "ended_at IS NULL AND stop_reason IS NULL AND run_id <> ?"
        rows = self._fetch(f"SELECT count(*) FROM runs WHERE {open_runs}", [current_run_id])
        if rows[0][0]:
            self._transaction([(
                "UPDATE runs SET stop_reason = 'process died: in-flight rounds marked abandoned', "
                f"rounds_done = NULL WHERE {open_runs}", [current_run_id],
            )])
        return rows[0][0]

    def start_run(self, run_id: str, rounds_asked: int, pid: int) -> None:
        self._transaction(
            [("INSERT INTO runs (run_id, rounds_asked, pid) VALUES (?, ?, ?)", [run_id, rounds_asked, pid])]
        )

    def end_run(self, run_id: str, rounds_done: int, stop_reason: str) -> None:
        self._transaction(
            [(
                "UPDATE runs SET ended_at = current_timestamp, rounds_done = ?, stop_reason = ? WHERE run_id = ?",
                [rounds_done, stop_reason, run_id],
            )]
        )
