"""Tests of the LanceDB knowledge/lessons store on real directories with the real embedder."""
import re
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

import evolveflow  # noqa: F401  (environment defaults)
from storage.embeddings import load_embedder
from storage.memory import MemoryStore, MemoryStoreError, fts_query_text

REPO_ROOT = Path(__file__).resolve().parents[1]

MEMOIZATION = {
    "title": "Memoization",
    "content": "Cache the results from costly function calls and reuse them for identical inputs.",
    "source": "notes.md",
}
DISTRACTORS = [
    {"title": "Island model", "content": "Populations evolve separately and exchange migrants."},
    {"title": "Tournament selection",
     "content": "Pick parents by comparing random pairs on fitness."},
    {"title": "Vectorisation",
     "content": "NumPy array operations replace Python loops over elements."},
]
# Same meaning as MEMOIZATION, but not one word in common with it.
PARAPHRASE = "remember earlier answers instead of working out everything again"


@pytest.fixture(scope="module")
def embedder():
    loaded = load_embedder()
    assert loaded is not None
    return loaded


def words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"\w+", text)}


def seeded(path, embedder) -> MemoryStore:
    store = MemoryStore(path, embedder)
    assert store.add_knowledge([MEMOIZATION, *DISTRACTORS]) == 4
    return store


def test_round_trip_of_knowledge_and_lessons(tmp_path, embedder):
    store = seeded(tmp_path / "mem", embedder)
    lesson = (7, "Pivot choice", "Median-of-three pivots stopped the worst case.")
    assert store.add_lessons([lesson]) == 1
    assert store.count("knowledge") == 4 and store.count("lesson") == 1

    (top, *_) = store.search("median of three pivot", top_k=3)
    assert (top.kind, top.title, top.node_id) == ("lesson", "Pivot choice", 7)
    assert top.content == "Median-of-three pivots stopped the worst case."
    assert top.score is not None and top.score > 0

    (top, *_) = store.search("tournament selection of parents", top_k=2)
    assert (top.kind, top.title, top.node_id) == ("knowledge", "Tournament selection", None)
    assert len(store.search("fitness", top_k=2)) == 2


def test_duplicate_contents_are_skipped(tmp_path):
    store = MemoryStore(tmp_path / "mem", None)
    twice = [MEMOIZATION, {**MEMOIZATION, "title": "same content, other title"}]
    assert store.add_knowledge(twice) == 1
    assert store.add_knowledge([MEMOIZATION, DISTRACTORS[0]]) == 1
    assert store.add_knowledge([]) == 0
    assert store.count("knowledge") == 2
    with pytest.raises(ValueError, match="content"):
        store.add_knowledge([{"title": "no content"}])


def test_persists_across_reopen(tmp_path, embedder):
    path = tmp_path / "mem"
    first = seeded(path, embedder)
    first.add_lessons([(3, "Lesson", "Unrolling the inner loop gained 4%.")])
    reopened = MemoryStore(path, embedder)
    assert reopened.count("knowledge") == 4
    assert reopened.lesson_node_ids() == {3}
    assert reopened.search("unrolling loop", top_k=1)[0].node_id == 3
    assert reopened.add_knowledge([MEMOIZATION]) == 0  # duplicates are known after reopen


def test_hybrid_finds_paraphrase_that_full_text_misses(tmp_path, embedder):
    assert not words(PARAPHRASE) & words(MEMOIZATION["title"] + " " + MEMOIZATION["content"])
    fts_only = seeded(tmp_path / "fts", None)
    assert fts_only.search(PARAPHRASE, top_k=3) == []

    hybrid = seeded(tmp_path / "hybrid", embedder)
    (top, *_) = hybrid.search(PARAPHRASE, top_k=3)
    assert top.title == "Memoization"


def test_directory_with_vectors_reopened_without_embedder_uses_full_text(tmp_path, embedder):
    path = tmp_path / "mem"
    seeded(path, embedder)
    plain = MemoryStore(path, None)
    assert plain.search("island populations migrants", top_k=1)[0].title == "Island model"
    assert plain.search(PARAPHRASE, top_k=3) == []
    # Rows added without an embedder are stored (vector null) and found by text.
    assert plain.add_lessons([(9, "Crossover", "Uniform crossover broke the invariants.")]) == 1
    assert plain.search("uniform crossover", top_k=1)[0].node_id == 9


def test_directory_without_vectors_gets_them_when_opened_with_embedder(tmp_path, embedder):
    path = tmp_path / "mem"
    lesson = (2, "Caching", "Storing previous outputs avoided recomputation.")
    seeded(path, None).add_lessons([lesson])
    upgraded = MemoryStore(path, embedder)
    (top, *_) = upgraded.search(PARAPHRASE, top_k=3)
    assert top.title in {"Memoization", "Caching"}
    assert {r.title for r in upgraded.search(PARAPHRASE, top_k=2)} == {"Memoization", "Caching"}


def test_rows_added_without_embedder_get_vectors_at_compaction(tmp_path, embedder):
    path = tmp_path / "mem"
    with_vectors = MemoryStore(path, embedder)
    MemoryStore(path, None).add_knowledge([MEMOIZATION, *DISTRACTORS])
    with_vectors.compact()
    assert with_vectors.search(PARAPHRASE, top_k=1)[0].title == "Memoization"


def test_vectors_of_another_dimension_are_refused(tmp_path, embedder):
    class FourDimEmbedder:  # stands in for a different embedding model
        dim = 4

        def embed(self, texts):
            return [[0.5, 0.5, 0.5, 0.5] for _ in texts]

    seeded(tmp_path / "mem", embedder)
    with pytest.raises(MemoryStoreError, match="384-dim"):
        MemoryStore(tmp_path / "mem", FourDimEmbedder())


def test_lessons_by_node_and_deletion(tmp_path):
    store = MemoryStore(tmp_path / "mem", None)
    store.add_lessons([
        (1, "a", "first lesson about sorting"),
        (2, "b", "second lesson about sorting"),
        (2, "c", "third lesson about sorting"),
        (3, "d", "fourth lesson about sorting"),
    ])
    assert store.lesson_node_ids() == {1, 2, 3}
    assert store.delete_lessons_for([2, 99]) == 2
    assert store.delete_lessons_for([]) == 0
    assert store.lesson_node_ids() == {1, 3}
    assert store.count("lesson") == 2
    assert {r.node_id for r in store.search("lesson sorting", top_k=10)} == {1, 3}
    with pytest.raises(ValueError, match="unknown kind"):
        store.count("notes")


def test_compaction_drops_versions_and_keeps_results(tmp_path, embedder):
    store = seeded(tmp_path / "mem", embedder)
    topics = ["pivots", "caches", "islands", "mutation", "crossover", "recursion", "hashing",
              "sorting", "threads", "vectors", "parsing", "graphs", "heaps", "tries", "queues"]
    for node_id, topic in enumerate(topics):  # 15 separate writes, so 15+ versions
        lesson = (node_id, f"lesson {node_id}", f"Round {node_id} taught us about {topic}.")
        store.add_lessons([lesson])
    before = store.search("what did we learn about islands", top_k=5)
    assert before[0].node_id == 2
    versions_before = store.version_count("lesson")
    assert versions_before > 15

    store.compact(keep_versions_newer_than=timedelta(0))

    assert store.version_count("lesson") < 4 < versions_before
    assert store.search("what did we learn about islands", top_k=5) == before
    assert store.count("lesson") == 15
    store.add_lessons([(99, "after", "Added after compaction: quadtrees.")])
    assert 99 in {r.node_id for r in store.search("added after compaction", top_k=3)}


@pytest.mark.parametrize("use_embedder", [False, True])
def test_awkward_queries_do_not_raise(tmp_path, embedder, use_embedder):
    store = MemoryStore(tmp_path / "mem", embedder if use_embedder else None)
    awkward = ['x[i] = f(y)', 'say "hello', 'title: pivot', '(unbalanced', 'AND', 'OR NOT',
               'a AND (b OR', '*', '~fuzzy^2', 'back\\slash', '"', '   ', '', 'ünïcödé ñ',
               '-- ; DROP']
    for query in awkward:  # empty tables first
        assert store.search(query, top_k=3) == []
    store.add_knowledge([{"title": "Indexing", "content": "Write x[i] = f(y) for each element."}])
    for query in awkward:
        assert isinstance(store.search(query, top_k=3), list)
    assert store.search("x[i] = f(y)", top_k=1)[0].title == "Indexing"
    assert store.search("x[i] = f(y)", top_k=0) == []
    assert fts_query_text('a "b" (c): x[i]') == "a b c x i"


def test_two_stores_on_one_directory_see_each_others_writes(tmp_path):
    path = tmp_path / "mem"
    first, second = MemoryStore(path, None), MemoryStore(path, None)
    first.add_knowledge([DISTRACTORS[0]])
    assert second.search("island migrants", top_k=1)[0].title == "Island model"
    second.add_lessons([(5, "Migration", "Migrating every round homogenised the islands.")])
    assert first.lesson_node_ids() == {5}
    assert first.count("lesson") == 1


def test_another_process_writes_are_visible(tmp_path):
    path = tmp_path / "mem"
    store = MemoryStore(path, None)
    assert store.search("subprocess wrote this", top_k=1) == []
    script = textwrap.dedent(f"""
        import evolveflow
        from storage.memory import MemoryStore
        lesson = (11, "From afar", "A subprocess wrote this lesson.")
        MemoryStore({str(path)!r}, None).add_lessons([lesson])
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO_ROOT, timeout=60,
                   env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"})
    assert store.search("subprocess wrote this", top_k=1)[0].node_id == 11
    assert store.lesson_node_ids() == {11}
