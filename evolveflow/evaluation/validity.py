"""Pure rules that read "this candidate is invalid" out of an evaluator's result, whatever its framework.

Peer evaluators report a failed candidate inside an otherwise normal result (exit 0, a score of 0)
rather than by raising. Any of these flags, at the top level of the result or inside its
``metrics`` / ``public`` dict, makes the attempt a ``candidate_error`` with the reason, never ``ok 0``:

* ``correct: false``, ``success: false``, ``valid: false``, ``is_valid: false`` (booleans, or 0);
* ``validity`` equal to 0;
* ``timeout: true`` or ``timed_out: true``.
"""
from __future__ import annotations

from typing import Any, Mapping

_FALSE_MEANS_INVALID = ("correct", "success", "valid", "is_valid")
_TRUE_MEANS_INVALID = ("timeout", "timed_out")
_NESTED = ("metrics", "public")
MAX_REASON_CHARS = 2000


def _falsy_flag(value: Any) -> bool:
    return value is False or (isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0)


def _places(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [result] + [result[key] for key in _NESTED if isinstance(result.get(key), Mapping)]


def invalid_flag(result: Any) -> str | None:
    """Return the flag that marks the result invalid (e.g. "correct: false"), or None."""
    if not isinstance(result, Mapping):
        return None
    for place in _places(result):
        for key in _FALSE_MEANS_INVALID:
            if key in place and _falsy_flag(place[key]):
                return f"{key}: {str(place[key]).lower()}"
        if "validity" in place and _falsy_flag(place["validity"]):
            return f"validity: {place['validity']}"
        for key in _TRUE_MEANS_INVALID:
            if place.get(key) is True:
                return f"{key}: true"
    return None


def stated_error(result: Any) -> str | None:
    """Return the error text a result states (``error``, ``error_message``, ``temp.error``), or None."""
    if not isinstance(result, Mapping):
        return None
    candidates = [result.get("error"), result.get("error_message")]
    if isinstance(result.get("temp"), Mapping):
        candidates.append(result["temp"].get("error"))
    for place in _places(result)[1:]:
        candidates.append(place.get("error"))
    for value in candidates:
        if isinstance(value, str) and value.strip():
            return value.strip()[:MAX_REASON_CHARS]
    return None


def invalid_reason(result: Any) -> str | None:
    """Return why the evaluator says the candidate is invalid ("correct: false: <error>"), or None."""
    flag = invalid_flag(result)
    if flag is None:
        return None
    error = stated_error(result)
    return f"the evaluator marked the candidate invalid ({flag})" + (f": {error}" if error else "")


def asks_retry(result: Any) -> str | None:
    """Return the reason when the result asks for a retry (``"retry": true``: an infrastructure failure)."""
    if isinstance(result, Mapping) and result.get("retry") is True:
        return stated_error(result) or "the evaluator asked for a retry ('retry': true)"
    return None


def flagged(result: Any) -> tuple[str, str] | None:
    """Return ("infra_error", reason) for a retry request, ("candidate_error", reason) for an invalid flag, else None."""
    retry = asks_retry(result)
    if retry is not None:
        return "infra_error", retry
    invalid = invalid_reason(result)
    return ("candidate_error", invalid) if invalid is not None else None
