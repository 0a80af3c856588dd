"""Cut evaluator text (metrics, feedback, errors) to a size, deterministically, with a visible marker.

Every place where an evaluator's output flows on (the tree, report.json, prompts) cuts it here, so
one huge metric cannot swell every later prompt or report. Pure functions, no I/O.
"""
from __future__ import annotations

import json
from typing import Any, Literal, Mapping

METRICS_MAX_CHARS = 20_000  # evaluation.metrics_max_chars' default
MORE_METRICS_KEY = "…[cut]"  # the key that replaces metrics dropped for the total budget
TOTAL_METRICS_FACTOR = 5  # a node's metrics keep at most this many max_chars in all


def marker(total: int) -> str:
    """Returns the marker left where text of `total` characters was cut."""
    return f"…[cut: {total:,} chars]"


def cut_text(text: str, limit: int, keep: Literal["head", "tail"] = "head") -> str:
    """Returns text if it fits in limit characters, else its head (or tail) and the marker, within limit."""
    if len(text) <= limit:
        return text
    mark = marker(len(text))
    room = max(0, limit - len(mark) - 1)
    return f"{text[:room]} {mark}" if keep == "head" else f"{mark} {text[len(text) - room:]}"


def as_json(value: Any, sort_keys: bool = False) -> str:
    """Returns value as compact-ish JSON text (what its size is measured in)."""
    return json.dumps(value, sort_keys=sort_keys, default=str, ensure_ascii=False)


def cap_metrics(metrics: Mapping[str, Any], max_chars: int = METRICS_MAX_CHARS) -> dict[str, Any]:
    """Returns metrics with every value longer than max_chars (as JSON) cut to a string with the marker.

    Numbers and other short values are untouched. If the metrics are still longer than
    TOTAL_METRICS_FACTOR * max_chars in all (very many keys), the later keys are dropped and
    MORE_METRICS_KEY says how many. Deterministic: the same metrics always give the same result.
    """
    capped: dict[str, Any] = {}
    budget, used, dropped = TOTAL_METRICS_FACTOR * max_chars, 2, 0
    for key, value in metrics.items():
        key = cut_text(str(key), 200)
        if isinstance(value, (dict, list, str)):
            text = value if isinstance(value, str) else as_json(value)
            if len(as_json(text)) > max_chars:
                value = cut_text(text, max_chars)
        size = len(as_json(key)) + len(as_json(value)) + 2
        if dropped or used + size > budget:
            dropped += 1
            continue
        capped[key], used = value, used + size
    if dropped:
        capped[MORE_METRICS_KEY] = f"{dropped:,} more metrics not kept (evaluation.metrics_max_chars)"
    return capped


def metrics_text(metrics: Mapping[str, Any], max_chars: int) -> str:
    """Returns metrics as sorted JSON text of at most max_chars; long values are cut first, to a fair share."""
    if not metrics:
        return "{}"
    share = max(100, max_chars // len(metrics) - 20)  # room for the key and punctuation
    return cut_text(as_json(cap_metrics(metrics, share), sort_keys=True), max_chars)


def cap_feedback(feedback: Mapping[str, str], max_chars: int) -> dict[str, str]:
    """Returns feedback items sharing max_chars in all: each long item keeps its tail (logs end in the news)."""
    total = sum(len(v) for v in feedback.values())
    if total <= max_chars or not feedback:
        return dict(feedback)
    share = max_chars // len(feedback)
    # Items shorter than an equal share keep all of it; the rest split what they leave.
    small = {k: v for k, v in feedback.items() if len(v) <= share}
    large = [k for k in feedback if k not in small]
    room = (max_chars - sum(len(v) for v in small.values())) // max(1, len(large))
    return {k: small[k] if k in small else cut_text(v, room, keep="tail") for k, v in feedback.items()}
