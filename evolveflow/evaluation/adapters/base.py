"""The seam between evolveflow and an evaluator contract: what to launch, and how to read what it left."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from evolveflow.evaluation.contract import Verdict

CHANNEL_FD = "<evolveflow-channel-fd>"  # replaced in Launch.command by the result pipe's descriptor
MAX_RESULT_BYTES = 50_000_000  # evaluation.max_result_bytes' default


@dataclass(frozen=True)
class Launch:
    """How to start one evaluation: the command, its cwd, and where its results are."""

    command: list[str]
    cwd: Path
    channel: bool = False  # the command holds CHANNEL_FD and reports over that pipe
    results_dir: Path | None = None  # files the evaluator leaves here may be kept next to the node
    skip_files: frozenset[str] = field(default_factory=frozenset)  # never kept (the candidate itself)
    # Under bwrap: folders the evaluator reads but the candidate must not change, and the writable
    # places inside them.
    frozen: tuple[Path, ...] = ()
    writable: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Finished:
    """What one evaluation left behind, read before its working directory is removed."""

    exit_code: int | None
    killed_reason: str | None
    stdout: str
    stderr: str
    channel: bytes | None  # what arrived over the private result pipe (None: no pipe was used)
    cwd: Path
    results_dir: Path | None
    stdout_bytes: int = 0  # printed on stdout in all
    stdout_cut: bool = False  # stdout holds only the tail of what was printed
    max_result_bytes: int = MAX_RESULT_BYTES  # evaluation.max_result_bytes: a larger result is refused


class EvaluatorAdapter(Protocol):
    """One framework's evaluator contract.

    Contract: ``prepare`` writes the candidate into ``workdir`` (fresh, private, the only place the
    evaluator may write) where that framework puts it, and says how to launch its evaluator;
    ``verdict`` classifies a finished launch into ok / candidate_error / infra_error with score,
    metrics, feedback and private metrics. ``verdict`` reads results only from the channel the
    contract names (docs/sandbox.md lists them) and never follows symlinks. Adapters are immutable
    and hold nothing between evaluations; both methods may be called from many threads at once.
    """

    name: str

    def prepare(self, workdir: Path, code: str, filename: str, step: int) -> Launch:
        """Write the candidate and return how to launch the evaluator on it."""
        ...

    def verdict(self, finished: Finished) -> Verdict:
        """Classify what the launch left."""
        ...
