"""When a search stops: budgets and targets, checked before each new round starts."""
from __future__ import annotations

from dataclasses import dataclass

from evolveflow.config import StopConfig


@dataclass(frozen=True)
class Progress:
    """What the search has spent and achieved so far in this run."""

    elapsed_s: float
    cost_usd: float | None  # None: some call's price is unknown
    tokens: int
    best_score: float | None
    rounds_without_improvement: int


def stop_reason(cfg: StopConfig, progress: Progress) -> str | None:
    """Returns why the search must stop now, or None to go on."""
    if cfg.target_score is not None and progress.best_score is not None and progress.best_score >= cfg.target_score:
        return f"target score {cfg.target_score} reached ({progress.best_score:.6g})"
    if cfg.max_wall_s is not None and progress.elapsed_s >= cfg.max_wall_s:
        return f"wall-time budget of {cfg.max_wall_s:g} s used ({progress.elapsed_s:.0f} s)"
    if cfg.max_cost_usd is not None and progress.cost_usd is not None and progress.cost_usd >= cfg.max_cost_usd:
        return f"cost budget of ${cfg.max_cost_usd:g} used (${progress.cost_usd:.4f})"
    if cfg.max_tokens is not None and progress.tokens >= cfg.max_tokens:
        return f"token budget of {cfg.max_tokens} used ({progress.tokens})"
    if cfg.patience is not None and progress.rounds_without_improvement >= cfg.patience:
        return f"no improvement for {progress.rounds_without_improvement} rounds (patience {cfg.patience})"
    return None
