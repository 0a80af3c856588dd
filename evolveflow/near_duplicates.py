"""Near-duplicate candidates: cosine similarity of code embeddings above a threshold.

Off by default (dedup.near_threshold). The embedding model reads at most 256 tokens, so only the
evolvable part of a program (the EVOLVE-BLOCKs, or the whole code without markers) is embedded,
and two programs that differ only beyond those 256 tokens look identical: keep the threshold high.
"""
from __future__ import annotations

import threading
from typing import Iterable

import numpy as np

from evolveflow.edits import evolve_blocks
from storage.embeddings import Embedder


def evolvable_text(code: str) -> str:
    """Returns the code inside the EVOLVE-BLOCKs, or all of it when there are none."""
    lines = code.splitlines()
    try:
        blocks = evolve_blocks(code)
    except Exception:  # unbalanced markers: compare the whole program
        blocks = []
    if not blocks:
        return code
    return "\n".join("\n".join(lines[start:end]) for start, end in blocks)


class NearDuplicateIndex:
    """Embeddings of every evaluated program of a search (ok or candidate_error); thread-safe.

    Programs enter only once evaluated: one that ends abandoned or infra_failed never rejects a
    later candidate. Pending ones are covered by the exact-hash check.
    """

    def __init__(self, embedder: Embedder, threshold: float):
        self.embedder = embedder
        self.threshold = threshold
        self._ids: list[int] = []
        self._vectors = np.zeros((0, embedder.dim), dtype=np.float32)
        self._lock = threading.Lock()

    def add_many(self, programs: Iterable[tuple[int, str]]) -> None:
        """Indexes (node id, code) pairs; ids already indexed are skipped (a retried persist)."""
        with self._lock:
            known = set(self._ids)
        programs = [(node_id, code) for node_id, code in programs if node_id not in known]
        if not programs:
            return
        vectors = np.asarray(self.embedder.embed([evolvable_text(c) for _, c in programs]), dtype=np.float32)
        with self._lock:
            known = set(self._ids)  # again: another thread may have added some meanwhile
            fresh = [i for i, (node_id, _) in enumerate(programs) if node_id not in known]
            self._ids += [programs[i][0] for i in fresh]
            self._vectors = np.vstack([self._vectors, vectors[fresh]])

    def __contains__(self, node_id: int) -> bool:
        with self._lock:
            return node_id in self._ids

    def nearest(self, code: str) -> tuple[int, float] | None:
        """Returns (node id, similarity) of the most similar indexed program above the threshold."""
        with self._lock:
            if not self._ids:
                return None
            vector = np.asarray(self.embedder.embed([evolvable_text(code)])[0], dtype=np.float32)
            similarities = self._vectors @ vector
            best = int(np.argmax(similarities))
            if similarities[best] >= self.threshold:
                return self._ids[best], float(similarities[best])
            return None
