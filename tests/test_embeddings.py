"""Tests of the MiniLM ONNX embedder and its per-process loader, with the real model."""
import logging

import numpy as np
import pytest

import evolveflow  # noqa: F401  (environment defaults)
from storage.embeddings import (
    MINILM_DIM,
    Embedder,
    EmbeddingUnavailable,
    MiniLMEmbedder,
    load_embedder,
)


@pytest.fixture(scope="module")
def embedder():
    loaded = load_embedder()
    assert loaded is not None, "the packaged MiniLM model should load on this machine"
    return loaded


def cosine(a, b):
    return float(np.dot(a, b))  # inputs are unit vectors


def test_vectors_have_384_dims_and_unit_norm(embedder):
    vectors = embedder.embed(["Quicksort partitions around a pivot.", "x[i] = f(y)", ""])
    assert embedder.dim == MINILM_DIM == 384
    assert isinstance(embedder, Embedder)
    for vector in vectors:
        assert len(vector) == 384
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_similar_sentences_are_closer_than_unrelated_ones(embedder):
    cat, kitten, revenue = embedder.embed([
        "A cat is sleeping on the sofa.",
        "A kitten naps on the couch.",
        "Quarterly revenue rose because of strong exports.",
    ])
    assert cosine(cat, kitten) > 0.5
    assert cosine(cat, kitten) > cosine(cat, revenue) + 0.3
    assert cosine(kitten, revenue) < 0.2


def test_batch_equals_one_by_one_and_keeps_order(embedder):
    texts = [
        "a much longer sentence about genetic programming, mutation operators and fitness",
        "short",
        "def f(x): return x * 2",
        "Mean pooling with the attention mask, then L2 normalisation.",
    ]
    batch = np.array(embedder.embed(texts))
    single = np.array([embedder.embed([text])[0] for text in texts])
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_batches_larger_than_batch_size_and_empty_input():
    small_batches = MiniLMEmbedder(batch_size=2)
    texts = [f"sentence number {i} about search" for i in range(5)]
    np.testing.assert_allclose(
        small_batches.embed(texts), MiniLMEmbedder(batch_size=64).embed(texts), atol=1e-5
    )
    assert small_batches.embed([]) == []
    with pytest.raises(TypeError):
        small_batches.embed("a bare string")


def test_long_text_is_truncated_not_rejected(embedder):
    (vector,) = embedder.embed(["word " * 2000])
    assert len(vector) == 384


def test_loader_caches_per_process(embedder):
    assert load_embedder() is embedder


def test_disabled_gives_none():
    assert load_embedder(False) is None


def test_broken_model_gives_none_and_exactly_one_warning(tmp_path, caplog):
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"this is not an ONNX protobuf")
    with caplog.at_level(logging.WARNING, logger="storage.embeddings"):
        assert load_embedder(model_path=broken) is None
        assert load_embedder(model_path=broken) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(broken) in warnings[0].getMessage()
    assert "full-text" in warnings[0].getMessage()


def test_missing_model_raises_specific_error(tmp_path):
    with pytest.raises(EmbeddingUnavailable, match="does not exist"):
        MiniLMEmbedder(model_path=tmp_path / "absent.onnx")
