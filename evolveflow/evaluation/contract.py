"""Pure rules that turn an evaluator's exit status and JSON result into an Outcome, score, metrics and error.

The classification is the contract with users:

* OK -- the evaluator exited 0 and its result holds a finite number under ``score``
  (or ``eval_score`` / ``combined_score``, looked up in that order). ``bool`` is not a number.
  An OK result may still carry the evaluator's ``error`` text (e.g. a penalty score with a reason).
* INFRA_ERROR -- the evaluator failed for reasons outside the candidate; the framework retries:
  exit status 75 (EX_TEMPFAIL); a result with ``"retry": true``; death by SIGKILL, SIGTERM,
  SIGINT or SIGHUP that evolveflow's timeout or output guard did not send.
* CANDIDATE_ERROR -- a result the evaluator marks invalid (``correct``/``success``/``valid`` false,
  ``validity`` 0, ``timeout`` true: see validity.py), whatever its score; and everything else: timeout, killed by the output guard, nonzero exit
  (error = the result's ``error`` field, else the last lines of stderr), death by any other
  signal (SIGSEGV, SIGABRT, SIGXCPU, ...), no result, a result that is not a JSON object,
  a missing / NaN / infinite / non-numeric score, or an ``error`` with no score.

Exit statuses 129..159 are read as death by signal (status - 128): that is how shells and
bubblewrap report a child killed by a signal. Metrics come from the result's ``metrics`` dict,
else its ``metadata`` dict, else its remaining top-level keys; they are kept on every outcome,
with non-finite floats turned into the strings "NaN", "Infinity" and "-Infinity".
"""
from __future__ import annotations

import json
import math
import signal
from dataclasses import dataclass, field
from typing import Any

from evolveflow.evaluation.validity import invalid_reason
from evolveflow.records import Outcome

SCORE_KEYS = ("score", "eval_score", "combined_score")
EX_TEMPFAIL = 75
# Signals that say "someone stopped this process", not "the program crashed".
INFRA_SIGNALS = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
# Keys of a flat result that are bookkeeping, not metrics.
_NON_METRIC_KEYS = frozenset({*SCORE_KEYS, "error", "retry", "traceback", "metrics", "metadata"})
_STDERR_LINES_IN_ERROR = 15
_MAX_ERROR_CHARS = 2000


class _Missing:
    """Marker type for 'the evaluator produced no result at all'."""

    def __repr__(self) -> str:
        return "NO_RESULT"


NO_RESULT: Any = _Missing()


@dataclass(frozen=True)
class Verdict:
    """How one evaluation is classified, with its score, metrics and error text."""

    outcome: Outcome
    score: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    feedback: dict[str, str] = field(default_factory=dict)  # text for the LLM beyond the metrics
    private_metrics: dict[str, Any] = field(default_factory=dict)  # stored, never shown


def last_json_object(text: str) -> dict[str, Any] | None:
    """Return the last JSON object on stdout: the last line that is one, else a trailing multi-line one."""
    lines = text.splitlines()
    for line in reversed(lines):
        stripped = line.strip()
        if stripped.startswith("{") and stripped.endswith("}"):
            try:
                value = json.loads(stripped)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return _trailing_pretty_object(lines)


def _trailing_pretty_object(lines: list[str]) -> dict[str, Any] | None:
    # Evaluators often print json.dumps(result, indent=2) last; accept it only if nothing follows it.
    decoder = json.JSONDecoder()
    starts = [i for i, line in enumerate(lines) if line.lstrip().startswith("{")]
    for index in reversed(starts[-200:]):
        chunk = "\n".join(lines[index:]).strip()
        try:
            value, end = decoder.raw_decode(chunk)
        except ValueError:
            continue
        if isinstance(value, dict) and not chunk[end:].strip():
            return value
    return None


def parse_result_text(text: str, source: str) -> tuple[Any, str | None]:
    """Parse a result file's text; return (value, problem) where problem explains unusable text."""
    try:
        return json.loads(text), None
    except ValueError as exc:
        return NO_RESULT, f"{source} is not valid JSON ({exc})"


def signal_of(exit_code: int | None) -> signal.Signals | None:
    """Return the signal that ended the evaluator, from a negative code or a shell-style 128+N status."""
    if exit_code is None:
        return None
    number = -exit_code if exit_code < 0 else exit_code - 128 if 128 < exit_code < 160 else None
    if number is None:
        return None
    try:
        return signal.Signals(number)
    except ValueError:
        return None


def clean_metrics(value: Any) -> Any:
    """Replace non-finite floats (at any depth) by strings so that JSON storage never sees NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(key): clean_metrics(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_metrics(item) for item in value]
    return value


def metrics_of(result: Any) -> dict[str, Any]:
    """Extract the metrics of a result: its metrics dict, else metadata dict, else other top-level keys."""
    if not isinstance(result, dict):
        return {}
    for key in ("metrics", "metadata"):
        if isinstance(result.get(key), dict):
            return clean_metrics(result[key])
    return clean_metrics({k: v for k, v in result.items() if k not in _NON_METRIC_KEYS})


def last_lines(text: str, count: int = _STDERR_LINES_IN_ERROR) -> str:
    """Return the last non-blank lines of text, at most _MAX_ERROR_CHARS long."""
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-count:])[-_MAX_ERROR_CHARS:]


def _error_field(result: Any) -> str | None:
    if isinstance(result, dict) and result.get("error") not in (None, ""):
        return str(result["error"])[:_MAX_ERROR_CHARS]
    return None


def process_verdict(*, exit_code: int | None, killed_reason: str | None, stderr: str,
                    metrics: dict[str, Any] | None = None) -> Verdict | None:
    """Classify how the evaluator process ended when that alone decides (kills, signals, status 75)."""
    metrics = metrics or {}
    if killed_reason is not None:
        return Verdict(Outcome.CANDIDATE_ERROR, metrics=metrics, error=killed_reason)
    died_from = signal_of(exit_code)
    if died_from in INFRA_SIGNALS:
        return Verdict(Outcome.INFRA_ERROR, metrics=metrics, error=(
            f"evaluator was killed by {died_from.name}, which evolveflow did not send "
            "(out-of-memory killer, an operator, or a shutdown?)"))
    if exit_code == EX_TEMPFAIL:
        detail = last_lines(stderr) or "no stderr"
        return Verdict(Outcome.INFRA_ERROR, metrics=metrics, error=(
            f"evaluator exited with status 75 (EX_TEMPFAIL, temporary failure): {detail}"))
    if died_from is not None:
        detail = last_lines(stderr, 5)
        message = f"evaluator died from {died_from.name}" + (f": {detail}" if detail else "")
        return Verdict(Outcome.CANDIDATE_ERROR, metrics=metrics, error=message)
    return None


def judge(
    *,
    exit_code: int | None,
    killed_reason: str | None,
    result: Any,
    result_problem: str | None,
    stderr: str,
) -> Verdict:
    """Classify one evaluator run (see the module docstring for the rules)."""
    metrics = metrics_of(result)
    if isinstance(result, dict) and result.get("retry") is True and killed_reason is None \
            and signal_of(exit_code) is None:
        reason = _error_field(result) or "the evaluator asked for a retry ('retry': true)"
        return Verdict(Outcome.INFRA_ERROR, metrics=metrics, error=reason)
    ended = process_verdict(exit_code=exit_code, killed_reason=killed_reason, stderr=stderr, metrics=metrics)
    if ended is not None:
        return ended
    if exit_code != 0:
        message = _error_field(result) or last_lines(stderr) or (
            f"evaluator exited with status {exit_code} and printed nothing on stderr")
        return Verdict(Outcome.CANDIDATE_ERROR, metrics=metrics, error=message)
    if result is NO_RESULT:
        return Verdict(Outcome.CANDIDATE_ERROR, error=result_problem or "the evaluator produced no result")
    return interpret_result(result)


def interpret_result(result: Any) -> Verdict:
    """Classify the JSON result of an evaluator that exited 0."""
    if not isinstance(result, dict):
        kind = "null" if result is None else type(result).__name__
        return Verdict(Outcome.CANDIDATE_ERROR, error=f"the evaluator's result is a JSON {kind}, not an object")
    metrics = metrics_of(result)
    stated_error = _error_field(result)
    invalid = invalid_reason(result)
    if invalid is not None:
        return Verdict(Outcome.CANDIDATE_ERROR, metrics=metrics, error=invalid)
    # The score sits at the top level, or inside "metrics" (an object result's metrics).
    holder = result
    key = next((k for k in SCORE_KEYS if k in result), None)
    if key is None and isinstance(result.get("metrics"), dict):
        holder = result["metrics"]
        key = next((k for k in SCORE_KEYS if k in holder), None)
    if key is None:
        return Verdict(Outcome.CANDIDATE_ERROR, metrics=metrics, error=stated_error or (
            "no 'score' (or eval_score/combined_score) in the evaluator's result"))
    problem = score_problem(holder[key], key)
    if problem is not None:
        return Verdict(Outcome.CANDIDATE_ERROR, metrics=metrics, error=stated_error or problem)
    return Verdict(Outcome.OK, score=float(holder[key]), metrics=metrics, error=stated_error)


def score_problem(value: Any, key: str = "score") -> str | None:
    """Explain why a score value is unusable, or return None for a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        shown = repr(value)[:80]
        kind = "null" if value is None else type(value).__name__
        return f"{key} is {shown} (a JSON {kind}), not a number"
    if isinstance(value, float) and math.isnan(value):
        return f"{key} is NaN"
    if isinstance(value, float) and math.isinf(value):
        return f"{key} is infinite ({value})"
    if isinstance(value, int) and abs(value) > 2**1023:
        return f"{key} is an integer too large to be a float"
    return None
