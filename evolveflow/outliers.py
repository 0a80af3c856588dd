"""Decide whether a result looks too good to trust before it has been re-run.

Two documented rules, either triggers `reruns` more evaluations (the node keeps every attempt and
its score becomes the median of all of them):
1. New best: the score beats the best confirmed score by more than `new_best_margin` (relative to
   the best's magnitude; 0 means any new best is re-run), so the reported best is always confirmed.
   The first score of a search (the initial program's) is a new best too.
2. Lineage outlier: the robust z-score 0.6745·(x − median)/MAD of the score against the scores of
   the parent's lineage (root → parent) exceeds `mad_threshold` (3.5 is the usual cut-off of
   Iglewicz and Hoaglin). It needs `min_lineage` scores and a MAD above zero: a lineage of equal
   scores carries no information about noise. With `side: better` (the default) only z above the
   threshold counts: a clearly worse child misleads nobody (it is rarely sampled again), so
   re-running it wastes evaluations; `side: both` re-runs |z| above it.
"""
from __future__ import annotations

import statistics
from typing import Sequence

from evolveflow.config import OutlierConfig


def robust_z(value: float, sample: Sequence[float]) -> float | None:
    """Returns the MAD-based z-score of value against sample, or None when MAD is zero."""
    median = statistics.median(sample)
    mad = statistics.median(abs(x - median) for x in sample)
    if mad == 0:
        return None
    return 0.6745 * (value - median) / mad


def rerun_reason(
    score: float, best_confirmed: float | None, lineage_scores: Sequence[float], cfg: OutlierConfig
) -> str | None:
    """Returns why this score must be re-run before it counts, or None if it can be accepted."""
    if not cfg.enabled:
        return None
    if best_confirmed is None:
        return f"first score of the search ({score:.6g}): the reported best is always confirmed"
    margin = cfg.new_best_margin * max(abs(best_confirmed), 1e-12)
    if score > best_confirmed + margin:
        return f"would be a new best ({score:.6g} > confirmed best {best_confirmed:.6g})"
    if len(lineage_scores) >= cfg.min_lineage:
        z = robust_z(score, lineage_scores)
        if z is not None and (z if cfg.side == "better" else abs(z)) > cfg.mad_threshold:
            return f"outlier against its lineage (robust z = {z:.2f}, threshold {cfg.mad_threshold})"
    return None
