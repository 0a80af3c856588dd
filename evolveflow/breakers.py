"""Circuit breakers: a search whose LLM or evaluator is down stops instead of spending all night.

Pure bookkeeping over finished rounds (round summaries in, a reason out); the round loop acts on it.
"""
from __future__ import annotations

from dataclasses import dataclass

from evolveflow.config import StopConfig


class SearchStopped(Exception):
    """The search stopped itself (a breaker tripped, or its results could not be written)."""


@dataclass
class Breakers:
    """Counts rounds in a row whose LLM failed every call, or gave nothing usable, or whose
    evaluator had only infrastructure failures; says when that is enough to stop."""

    llm_down_rounds: int | None
    evaluator_down_rounds: int | None
    llm_failed: int = 0  # rounds in a row in which every LLM call failed (no reply at all)
    llm_unusable: int = 0  # rounds in a row whose replies held no valid edit (or no reply)
    evaluator_failed: int = 0  # evaluated rounds in a row that ended infra_failed
    last_llm_error: str = ""
    last_evaluator_error: str = ""

    @classmethod
    def from_config(cls, stop: StopConfig) -> "Breakers":
        return cls(stop.llm_down_rounds, stop.evaluator_down_rounds)

    def observe(self, summary: dict) -> None:
        """Takes a finished round's summary (its "llm" and "evaluator" fields, see flows/round.py)."""
        llm = summary.get("llm")
        if llm == "failed":
            self.llm_failed += 1
            self.llm_unusable += 1
            self.last_llm_error = summary.get("error") or ""
        elif llm == "unusable":
            self.llm_failed = 0
            self.llm_unusable += 1
            self.last_llm_error = summary.get("error") or ""
        elif llm == "ok":
            self.llm_failed = self.llm_unusable = 0
        evaluator = summary.get("evaluator")
        if evaluator == "infra":
            self.evaluator_failed += 1
            self.last_evaluator_error = summary.get("error") or ""
        elif evaluator == "ok":
            self.evaluator_failed = 0

    def tripped(self) -> str | None:
        """Returns why the search must stop now, or None."""
        n = self.llm_down_rounds
        if n is not None and self.llm_failed >= n:
            return (f"the LLM failed every call for {self.llm_failed} rounds in a row "
                    f"(stop.llm_down_rounds: {n}); last error: {_short(self.last_llm_error)}")
        if n is not None and self.llm_unusable >= n:
            return (f"the LLM gave no usable reply for {self.llm_unusable} rounds in a row "
                    f"(stop.llm_down_rounds: {n}); last: {_short(self.last_llm_error)}")
        n = self.evaluator_down_rounds
        if n is not None and self.evaluator_failed >= n:
            return (f"the evaluator had only infrastructure failures for {self.evaluator_failed} rounds "
                    f"in a row (stop.evaluator_down_rounds: {n}); last error: {_short(self.last_evaluator_error)}")
        return None


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
