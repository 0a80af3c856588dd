"""Read-only queries on an experiment's tree for the CLI: lessons, the best's diff, SQL, Parquet export."""
from __future__ import annotations

import difflib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import duckdb

from evolveflow.experiment import Experiment, ExperimentError
from evolveflow.search_lock import is_locked, read_holder
from storage.tree import TreeLocked, TreeStore

EXPORT_TABLES = ("nodes", "attempts", "llm_calls", "runs")
# DuckDB's own parser says what a statement is; SHOW, DESCRIBE, SUMMARIZE, WITH and VALUES are SELECTs.
READ_STATEMENTS = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})


class QueryRefused(Exception):
    """A query that is not one read statement."""


def check_readable(exp: Experiment, command: str) -> None:
    """Raises a one-line error when a search holds the tree (naming its pid) or there is no tree yet."""
    if is_locked(exp.lock_path):
        holder = read_holder(exp.lock_path)
        who = f"pid {holder.get('pid')}" + (f" on {holder['host']}" if holder.get("host") else "")
        raise TreeLocked(
            f"a search is running on {exp.name} ({who}) and holds its tree: `evolveflow {command}` works "
            f"when it ends; `evolveflow status {exp.name}` and `evolveflow best {exp.name}` work meanwhile"
        )
    if not exp.tree_path.exists():
        raise ExperimentError(f"{exp.name} has not been run yet: evolveflow run {exp.name} --rounds 10")


@contextmanager
def read_only(exp: Experiment, command: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only DuckDB connection on the tree: DuckDB itself refuses every write through it."""
    check_readable(exp, command)
    try:
        con = duckdb.connect(str(exp.tree_path), read_only=True)
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise
        raise TreeLocked(f"{exp.tree_path} is held by another process: {exc}") from None
    try:
        yield con
    finally:
        con.close()


def run_sql(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple]]:
    """Runs one read statement; returns its column names and rows."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRefused(str(exc).splitlines()[0]) from None
    if len(statements) != 1:
        raise QueryRefused(f"give exactly one statement, not {len(statements)}")
    kind = statements[0].type
    if kind not in READ_STATEMENTS:
        raise QueryRefused(f"only a read statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN) runs here, not {kind.name}")
    result = con.execute(sql)
    return [d[0] for d in result.description], result.fetchall()


def export_parquet(con: duckdb.DuckDBPyConnection, dest: Path) -> dict[str, int]:
    """Writes each tree table to dest/<table>.parquet; returns the rows written per table."""
    dest.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in EXPORT_TABLES:
        target = str((dest / f"{name}.parquet").resolve()).replace("'", "''")
        counts[name] = con.execute(f"COPY {name} TO '{target}' (FORMAT PARQUET)").fetchone()[0]
    return counts


def recent_lessons(con: duckdb.DuckDBPyConnection, limit: int) -> list[dict[str, Any]]:
    """The nodes' lessons (their analysis), newest first."""
    rows = con.execute(
        "SELECT id, round, score, status, analysis FROM nodes WHERE trim(coalesce(analysis, '')) <> '' "
        "ORDER BY round DESC, id DESC LIMIT ?", [limit]).fetchall()
    return [dict(zip(("node", "round", "score", "status", "lesson"), r)) for r in rows]


def matching_lessons(exp: Experiment, con: duckdb.DuckDBPyConnection, query: str, limit: int) -> list[dict[str, Any]]:
    """The lessons that best match query: LanceDB's full-text ranking, fused with vectors when embeddings are on."""
    if not exp.memory_path.is_dir():
        return []
    from storage.embeddings import load_embedder  # LanceDB and the embedder load only for --query
    from storage.memory import MemoryStore

    store = MemoryStore(exp.memory_path, load_embedder(exp.config.cognition.embeddings))
    # One search spans knowledge and lessons: ask deep enough that knowledge cannot crowd lessons out.
    hits = [h for h in store.search(query, limit + store.count("knowledge")) if h.kind == "lesson"][:limit]
    ids = [h.node_id for h in hits if h.node_id is not None]
    found = {r[0]: r[1:] for r in con.execute(
        f"SELECT id, round, score, status FROM nodes WHERE id IN ({', '.join('?' * len(ids))})", ids
    ).fetchall()} if ids else {}
    return [
        {"node": h.node_id, **dict(zip(("round", "score", "status"), found.get(h.node_id, (None,) * 3))),
         "lesson": h.content, "relevance": h.score}
        for h in hits
    ]


def best_diff(exp: Experiment) -> tuple[int, int | None, str]:
    """The best node, its parent and the unified diff of the parent's code to the best's (difflib)."""
    check_readable(exp, "best --diff")
    with TreeStore(exp.tree_path, read_only=True, lock_wait_s=5) as tree:
        best = tree.best()
        if best is None:
            raise ExperimentError(f"{exp.name} has no evaluated node yet")
        parent = tree.node(best.parent_id) if best.parent_id is not None else None
    if parent is None:
        return best.id, None, ""
    diff = difflib.unified_diff(parent.code.splitlines(keepends=True), best.code.splitlines(keepends=True),
                                fromfile=f"node {parent.id} (parent)", tofile=f"node {best.id} (best)")
    return best.id, parent.id, "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                                       for line in diff)
