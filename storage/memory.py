"""LanceDB store of seeded knowledge and per-node lessons, searched by full text and vectors."""
from __future__ import annotations

import hashlib
import logging
import re
import uuid
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import lancedb
import pyarrow as pa
from lancedb.index import FTS

from evolveflow.records import Retrieved
from storage.embeddings import Embedder

logger = logging.getLogger(__name__)

KNOWLEDGE_TABLE = "knowledge"
LESSONS_TABLE = "lessons"
# Retrieved.kind for each table.
KIND_BY_TABLE = {KNOWLEDGE_TABLE: "knowledge", LESSONS_TABLE: "lesson"}
TABLE_BY_KIND = {"knowledge": KNOWLEDGE_TABLE, "lesson": LESSONS_TABLE, "lessons": LESSONS_TABLE}

TEXT_COLUMN = "text"
VECTOR_COLUMN = "vector"
# Columns a search reads back; never the vector, which is large and unused by callers.
RESULT_COLUMNS = ["title", "content", "node_id"]
# Conventional reciprocal-rank-fusion constant: damps the gap between the first few ranks.
RRF_K = 60
# Each ranking is fetched this much deeper than top_k so fusion has overlap to work with.
CANDIDATE_FACTOR = 3
MIN_CANDIDATES = 10
# A query beyond ~64 words is a pasted document, not a question; more words only cost time.
MAX_QUERY_WORDS = 64
DEFAULT_CLEANUP_AGE = timedelta(minutes=5)


class MemoryStoreError(Exception):
    """The memory directory is unusable as it stands (e.g. vectors of another model)."""


def memory_schema(vector_dim: int | None) -> pa.Schema:
    """The one schema of both tables; the vector column exists only when an embedder is used."""
    fields = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("content", pa.string(), nullable=False),
        pa.field(TEXT_COLUMN, pa.string(), nullable=False),  # title + content, FTS-indexed
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("node_id", pa.int64()),  # set for lessons only
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
    if vector_dim is not None:
        fields.append(vector_field(vector_dim))
    return pa.schema(fields)


def vector_field(dim: int) -> pa.Field:
    """The vector column; nullable because rows added without an embedder have none."""
    return pa.field(VECTOR_COLUMN, pa.list_(pa.float32(), dim), nullable=True)


def content_hash(content: str) -> str:
    """Stable identity of a knowledge item's content, used to skip exact duplicates."""
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def fts_query_text(query: str) -> str:
    """Reduce a free-text query to plain words so no FTS query syntax can be triggered."""
    words = re.findall(r"\w+", query)
    return " ".join(words[:MAX_QUERY_WORDS])


class MemoryStore:
    """Knowledge and lessons of one experiment in one LanceDB directory.

    Rows are searchable right after an add: the FTS index scans rows it has not indexed
    yet (measured 23 ms a query with 2,000 unindexed rows, 7 ms indexed), and compact()
    (28 ms for those rows) folds them into the index, so call it once a round.

    Vectors: with an embedder every row gets a vector, and rows without one (a table
    created without an embedder, or rows another store added without one) get theirs
    when this store opens and at each compact(), so hybrid search covers them. Without
    an embedder, rows are added with a null vector and search is full-text only.
    """

    def __init__(self, path: Path | str, embedder: Embedder | None) -> None:
        self.path = Path(path)
        self.embedder = embedder
        self.path.mkdir(parents=True, exist_ok=True)
        # Interval 0: every read sees other processes' latest commits. Measured on a local
        # directory: no cost above noise (4-6 ms an FTS query either way), so always on.
        self._db = lancedb.connect(str(self.path), read_consistency_interval=timedelta(0))
        self._tables = {name: self._open_or_create(name) for name in KIND_BY_TABLE}
        if embedder is not None:
            for table in self._tables.values():
                self._backfill_vectors(table)

    # ----- opening -----

    def _open_or_create(self, name: str):
        dim = self.embedder.dim if self.embedder is not None else None
        try:
            table = self._db.open_table(name)
        except ValueError:  # "Table ... was not found"
            # exist_ok: another process may create it between our open and create.
            try:
                table = self._db.create_table(name, schema=memory_schema(dim), exist_ok=True)
            except ValueError:  # it won the race with a schema of its own; use that
                table = self._db.open_table(name)
        if not any(TEXT_COLUMN in idx.columns for idx in table.list_indices()):
            # Unindexed rows are still searched (by a flat scan), so creating it empty is fine.
            table.create_index(TEXT_COLUMN, config=FTS(), replace=True)
        return table

    def _vector_dim(self, table) -> int | None:
        if VECTOR_COLUMN not in table.schema.names:
            return None
        return table.schema.field(VECTOR_COLUMN).type.list_size

    def _backfill_vectors(self, table) -> None:
        assert self.embedder is not None
        dim = self._vector_dim(table)
        if dim is None:
            table.add_columns(vector_field(self.embedder.dim))
        elif dim != self.embedder.dim:
            raise MemoryStoreError(
                f"table {table.name!r} in {self.path} holds {dim}-dim vectors but the embedder "
                f"gives {self.embedder.dim}-dim ones; use the embedder the directory was built "
                "with, or a new memory directory"
            )
        missing = (
            table.search().where(f"{VECTOR_COLUMN} IS NULL").select(["id", TEXT_COLUMN])
            .limit(None).to_arrow()
        )
        if missing.num_rows == 0:
            return
        vectors = self.embedder.embed(missing.column(TEXT_COLUMN).to_pylist())
        updates = pa.table(
            {"id": missing.column("id"),
             VECTOR_COLUMN: pa.array(vectors, type=vector_field(self.embedder.dim).type)}
        )
        # Partial-column update keyed by id: only the vector of each matched row changes.
        table.merge_insert("id").when_matched_update_all().execute(updates)
        logger.info("added vectors to %d rows of %s", missing.num_rows, table.name)

    # ----- writing -----

    def _rows(self, items: list[tuple[str, str, str | None, int | None]]) -> pa.Table:
        """Build rows (title, content, source, node_id) in the table schema, with vectors."""
        texts = [f"{title}\n{content}" for title, content, _, _ in items]
        now = datetime.now(timezone.utc)
        columns = {
            "id": [uuid.uuid4().hex for _ in items],
            "title": [i[0] for i in items],
            "content": [i[1] for i in items],
            TEXT_COLUMN: texts,
            "content_hash": [content_hash(i[1]) for i in items],
            "source": [i[2] for i in items],
            "node_id": [i[3] for i in items],
            "created_at": [now] * len(items),
        }
        dim = self.embedder.dim if self.embedder is not None else None
        if dim is not None:
            columns[VECTOR_COLUMN] = self.embedder.embed(texts)
        return pa.Table.from_pydict(columns, schema=memory_schema(dim))

    def add_knowledge(self, items: Sequence[Mapping]) -> int:
        """Add {title, content, source?} items, skipping duplicate contents; returns count added."""
        unique: dict[str, tuple[str, str, str | None, int | None]] = {}
        for position, item in enumerate(items):
            title, content = item.get("title"), item.get("content")
            if not isinstance(title, str) or not isinstance(content, str) or not content.strip():
                raise ValueError(
                    f"knowledge item {position} needs a string 'title' and a non-empty string "
                    f"'content'; got keys {sorted(item)}"
                )
            unique.setdefault(content_hash(content), (title, content, item.get("source"), None))
        if not unique:
            return 0
        table = self._tables[KNOWLEDGE_TABLE]
        # Drop known contents before embedding them: embedding is the expensive part.
        hashes = ", ".join(f"'{h}'" for h in unique)  # hex digests: safe inside SQL quotes
        known = table.search().where(f"content_hash IN ({hashes})").select(["content_hash"])
        for existing in known.limit(None).to_arrow().column("content_hash").to_pylist():
            unique.pop(existing, None)
        if not unique:
            return 0
        rows = self._rows(list(unique.values()))
        # merge_insert rather than add: one commit that also skips rows a concurrent
        # process inserted since the check above.
        result = (
            table.merge_insert("content_hash").when_not_matched_insert_all().execute(rows)
        )
        return result.num_inserted_rows

    def add_lessons(self, lessons: Sequence[tuple[int, str, str]]) -> int:
        """Add (node_id, title, content) lessons in one write; returns count added."""
        if not lessons:
            return 0
        items = [(title, content, None, int(node_id)) for node_id, title, content in lessons]
        table = self._tables[LESSONS_TABLE]
        # A vector column the rows lack (no embedder) is filled with nulls by LanceDB.
        table.add(self._rows(items))
        return len(items)

    def delete_lessons_for(self, node_ids: Iterable[int]) -> int:
        """Delete every lesson about the given nodes; returns how many were deleted."""
        ids = sorted({int(n) for n in node_ids})
        if not ids:
            return 0
        table = self._tables[LESSONS_TABLE]
        condition = f"node_id IN ({', '.join(map(str, ids))})"
        doomed = table.count_rows(condition)
        if doomed:
            table.delete(condition)
        return doomed

    # ----- reading -----

    def lesson_node_ids(self) -> set[int]:
        """The node ids that have at least one lesson."""
        column = (
            self._tables[LESSONS_TABLE].search().select(["node_id"]).limit(None).to_arrow()
            .column("node_id")
        )
        return {n for n in column.to_pylist() if n is not None}

    def count(self, kind: str) -> int:
        """Number of rows of kind "knowledge" or "lesson"."""
        return self._table_for(kind).count_rows()

    def _table_for(self, kind: str):
        try:
            return self._tables[TABLE_BY_KIND[kind]]
        except KeyError:
            raise ValueError(f"unknown kind {kind!r}; use 'knowledge' or 'lesson'") from None

    def search(self, query: str, top_k: int) -> list[Retrieved]:
        """Best top_k items of both tables, fusing vector and full-text rankings by reciprocal rank.

        Rankings fused: one full-text ranking per table (BM25 scores are not comparable
        across tables: a small lessons table gives every word a low IDF) and, with an
        embedder, one vector ranking over both tables (cosine distances are comparable).
        """
        if top_k <= 0 or not query or not query.strip():
            return []
        depth = max(top_k * CANDIDATE_FACTOR, MIN_CANDIDATES)
        rows: dict[tuple[str, str], dict] = {}
        words = fts_query_text(query)
        rankings = [self._fts_ranking(name, words, depth, rows) for name in self._tables]
        if self.embedder is not None:
            rankings.append(self._vector_ranking(query, depth, rows))
        fused: dict[tuple[str, str], float] = {}
        for ranking in rankings:
            for rank, key in enumerate(ranking):
                fused[key] = fused.get(key, 0.0) + 1.0 / (RRF_K + rank + 1)
        # Ties (e.g. the top hit of each table in full-text-only mode) go to the stronger
        # text match.
        best = sorted(
            fused, key=lambda key: (fused[key], rows[key].get("_score", 0.0)), reverse=True
        )
        return [self._retrieved(key, rows[key], fused[key]) for key in best[:top_k]]

    def _fts_ranking(self, name: str, words: str, depth: int, rows: dict) -> list[tuple[str, str]]:
        """Full-text hits of one table, best BM25 score first."""
        if not words:
            return []
        found = (
            self._tables[name].search(words, query_type="fts", fts_columns=TEXT_COLUMN)
            .select(["id", *RESULT_COLUMNS]).limit(depth).to_list()
        )
        ranking = []
        for row in found:
            key = (name, row["id"])
            rows[key] = row  # keeps _score for tie-breaking
            ranking.append(key)
        return ranking

    def _vector_ranking(self, query: str, depth: int, rows: dict) -> list[tuple[str, str]]:
        """Nearest rows of both tables by cosine distance; rows without a vector never appear."""
        assert self.embedder is not None
        (vector,) = self.embedder.embed([query])
        hits = []
        for name, table in self._tables.items():
            found = (
                table.search(vector, vector_column_name=VECTOR_COLUMN).distance_type("cosine")
                .select(["id", *RESULT_COLUMNS]).limit(depth).to_list()
            )
            hits.extend((row["_distance"], name, row) for row in found)
        hits.sort(key=lambda hit: hit[0])
        ranking = []
        for _, name, row in hits[:depth]:
            key = (name, row["id"])
            rows.setdefault(key, row)
            ranking.append(key)
        return ranking

    @staticmethod
    def _retrieved(key: tuple[str, str], row: dict, score: float) -> Retrieved:
        name = key[0]
        return Retrieved(
            kind=KIND_BY_TABLE[name], title=row["title"], content=row["content"],
            node_id=row["node_id"] if name == LESSONS_TABLE else None, score=score,
        )

    # ----- maintenance -----

    def compact(self, keep_versions_newer_than: timedelta = DEFAULT_CLEANUP_AGE) -> None:
        """Merge small fragments, bring the FTS index up to date and drop old versions.

        Versions younger than ``keep_versions_newer_than`` survive so a reader in another
        process that is mid-query on one does not lose its files; pass timedelta(0) when
        no other process uses the directory.
        """
        for table in self._tables.values():
            if self.embedder is not None:
                # Rows another process added without an embedder get their vectors here.
                self._backfill_vectors(table)
            with warnings.catch_warnings():
                # LanceDB warns about cleanup_older_than=0; the docstring above covers it.
                warnings.simplefilter("ignore", UserWarning)
                table.optimize(cleanup_older_than=keep_versions_newer_than)

    def version_count(self, kind: str) -> int:
        """How many versions of the table of this kind are kept on disk."""
        return len(self._table_for(kind).list_versions())
