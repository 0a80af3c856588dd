"""Seed an experiment's domain knowledge from Python: add a list of {title, content} items."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from evolveflow.experiment import load_experiment
from storage.embeddings import load_embedder
from storage.memory import MemoryStore


def add_knowledge(experiment: str, items: Sequence[Mapping[str, str]], root: Path | None = None) -> int:
    """Adds knowledge items to an experiment's LanceDB store; returns how many were new."""
    for index, item in enumerate(items):
        if not str(item.get("title", "")).strip() or not str(item.get("content", "")).strip():
            raise ValueError(f"knowledge item {index} needs a non-empty 'title' and 'content': {dict(item)!r}")
    exp = load_experiment(experiment, root)
    store = MemoryStore(exp.memory_path, load_embedder(exp.config.cognition.embeddings))
    return store.add_knowledge(items)
