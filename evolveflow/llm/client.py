"""The one function that talks to LLMs: litellm.completion with retries, fallbacks and cost accounting.

Retries and fallbacks are done here rather than by litellm, on purpose (verified on litellm 1.106.2):

* litellm's ``num_retries`` is layered: it becomes the OpenAI SDK's ``max_retries`` *and* litellm then
  retries again, so ``num_retries=2`` sends 5 requests on HTTP 500 but 3 on a truncated body, and a
  custom provider gets only the second layer.  Here every provider gets exactly ``1 + num_retries``
  attempts per model, with backoff that honours the server's Retry-After.
* litellm's ``fallbacks`` works on success, but runs through ``acompletion`` in a separate event loop,
  logs an ERROR traceback to stderr per failed model and raises a bare ``APIConnectionError`` whose
  type says nothing of the real failure.  It also cannot treat an empty reply as a failure.

Rate limits (``limiter``, see evolveflow/llm/rate_limit.py) are asked here, before every request
this function sends, because every LLM call of a search (proposals and analyses) comes through here.
"""
from __future__ import annotations

import datetime
import email.utils
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import evolveflow  # noqa: F401  # sets offline env defaults, which litellm reads at import
import litellm
import openai

from evolveflow.llm.rate_limit import Limiter
from evolveflow.records import LLMReply

litellm.suppress_debug_info = True  # no "Give Feedback / Get Help" banner on handled errors

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
MAX_SERVER_HINT_S = 60.0  # a Retry-After longer than this is capped, not obeyed
ERROR_TEXT_LIMIT = 300
RETRYABLE_STATUS = frozenset({408, 409, 429})
# Arguments complete() sets itself; taking them from `extra` too would make the call ambiguous.
MANAGED_KEYS = frozenset(
    {"model", "messages", "api_base", "api_key", "temperature", "max_tokens", "timeout",
     "num_retries", "max_retries", "fallbacks", "seed", "stream"}
)

# Jitter has its own generator so retries never disturb a seeded global `random` used by the search.
_jitter = random.Random()


class LLMError(Exception):
    """The call failed after all retries and fallbacks; the message names the model(s) and last errors."""

    def __init__(self, message: str, *, models: Sequence[str], attempts: int, last_error: str) -> None:
        super().__init__(message)
        self.models = tuple(models)
        self.attempts = attempts
        self.last_error = last_error


class EmptyReplyError(LLMError):
    """The model answered, but with empty content, on every attempt left."""


def complete(
    messages: list[dict],
    *,
    model: str,
    api_base: str | None = None,
    api_key: str | None = None,
    temperature: float = 0.7,
    max_tokens: int = 4096,
    timeout_s: float = 120.0,
    num_retries: int = 2,
    fallbacks: Sequence[str] = (),
    seed: int | None = None,
    extra: dict | None = None,
    retry_backoff_s: float = 1.0,
    ledger: list[LLMReply] | None = None,
    limiter: Limiter | None = None,
) -> LLMReply:
    """Ask `model` (then each of `fallbacks`) for a chat completion; return its text and accounting.

    Each model gets ``1 + num_retries`` attempts (an empty reply always gets at least one retry).
    Transient failures (timeouts, connection errors, 408/409/429/5xx, empty content) are retried
    after ``retry_backoff_s * 2**k`` seconds with jitter, or after the server's Retry-After when
    given; other errors (e.g. 400, 401) move straight on to the next fallback.  ``extra`` is passed
    to ``litellm.completion`` as is (e.g. ``input_cost_per_token`` to price an unknown model).
    Every response that came back but could not be used (empty content) is still billed: it is
    appended to ``ledger`` with its tokens, cost and own latency as it arrives, even when the call
    ends in ``EmptyReplyError``, so the caller can record what it paid for.  The returned reply's
    latency is the rest of the call's wall time, so the latencies add up to it exactly, less the
    time spent waiting for ``limiter``: each request (each retry too) first waits until it fits the
    rate limit, reserving the prompt's estimated tokens plus ``max_tokens``, settled to the usage
    the reply reports.
    """
    if num_retries < 0:
        raise ValueError(f"num_retries must be >= 0, got {num_retries}")
    if isinstance(fallbacks, str):
        raise TypeError(f"fallbacks must be a list of model names, not the string {fallbacks!r}; wrap it in [...]")
    clashing = sorted(MANAGED_KEYS & set(extra or {}))
    if clashing:
        raise TypeError(f"extra must not set {clashing}; use complete()'s own parameters for those")
    request: dict[str, Any] = {
        "messages": messages, "temperature": temperature, "max_tokens": max_tokens, "timeout": timeout_s,
        # Zero both of litellm's retry layers: this function owns retrying (see module docstring).
        "num_retries": 0, "max_retries": 0,
        **(extra or {}),
    }
    for key, value in (("api_base", api_base), ("api_key", api_key), ("seed", seed)):
        if value is not None:
            request[key] = value

    models = [model, *fallbacks]
    started = time.monotonic()
    billed_before = len(ledger) if ledger is not None else 0
    tally = _Tally(limiter=limiter, reserve=reserved_tokens(messages, max_tokens, limiter))
    for name in models:
        answer = _ask_one_model(name, request, num_retries, retry_backoff_s, tally, ledger)
        if answer is not None:
            response, text = answer
            unusable_s = sum(r.latency_s for r in (ledger or [])[billed_before:])
            return build_reply(response, text, name, time.monotonic() - started - unusable_s - tally.rate_wait_s,
                               tally.rate_wait_s)

    error_class = EmptyReplyError if tally.last_was_empty else LLMError
    raise error_class(
        failure_message(models, tally.attempts, tally.last_error_by_model),
        models=models, attempts=tally.attempts, last_error=tally.last_error_by_model[models[-1]],
    ) from tally.last_exception


@dataclass
class _Tally:
    """What the failed attempts so far left behind, across models."""

    attempts: int = 0
    last_error_by_model: dict[str, str] = field(default_factory=dict)
    last_was_empty: bool = False
    last_exception: BaseException | None = None
    limiter: Limiter | None = None
    reserve: int = 0  # tokens each request reserves in the limiter
    rate_wait_s: float = 0.0  # spent waiting for the limiter, not for the model


def _ask_one_model(
    name: str, request: dict[str, Any], num_retries: int, retry_backoff_s: float, tally: _Tally,
    ledger: list[LLMReply] | None = None,
) -> tuple[Any, str] | None:
    """Try one model within its attempt budget; return (response, text) or None, noting failures in tally."""
    budget = 1 + num_retries
    attempt = 0
    while True:
        attempt += 1
        tally.attempts += 1
        retry_hint: float | None = None
        permit = tally.limiter.acquire(tally.reserve) if tally.limiter is not None else None
        if permit is not None:
            tally.rate_wait_s += permit.waited_s
        asked = time.monotonic()
        try:
            response = litellm.completion(model=name, **request)
        except openai.OpenAIError as exc:  # every litellm provider error derives from this
            if permit is not None:
                tally.limiter.settle(permit, None)
            tally.last_exception, tally.last_was_empty = exc, False
            tally.last_error_by_model[name] = describe_error(exc)
            retryable, retry_hint = is_transient(exc), server_retry_hint(exc)
        except BaseException:
            if permit is not None:
                tally.limiter.settle(permit, None)
            raise
        else:
            if permit is not None:
                tally.limiter.settle(permit, used_tokens(response))
            text = reply_text(response)
            if text.strip():
                return response, text
            if ledger is not None:  # billed although unusable
                ledger.append(build_reply(response, text, name, time.monotonic() - asked))
            tally.last_exception, tally.last_was_empty = None, True
            tally.last_error_by_model[name] = f"empty content (finish_reason={finish_reason(response)})"
            retryable, budget = True, max(budget, 2)  # an empty reply always earns one more try
        if not retryable or attempt >= budget:
            return None
        delay = retry_hint if retry_hint is not None else backoff_delay(retry_backoff_s, attempt)
        log.info("LLM attempt %d on %s failed (%s); retrying in %.2fs",
                 attempt, name, tally.last_error_by_model[name], delay)
        time.sleep(delay)


def is_transient(exc: BaseException) -> bool:
    """Whether a litellm/OpenAI error is worth retrying on the same model."""
    if isinstance(exc, openai.APIConnectionError):  # includes timeouts and connection resets
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and (status in RETRYABLE_STATUS or status >= 500)


def server_retry_hint(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (retry-after-ms, or Retry-After in seconds or as an HTTP
    date), capped; None if unsaid."""
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        return None
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            seconds = float(headers.get(header)) * scale
        except (TypeError, ValueError):
            seconds = _seconds_until_http_date(headers.get(header)) if header == "retry-after" else None
            if seconds is None:
                continue
        if seconds >= 0:
            return min(seconds, MAX_SERVER_HINT_S)
    return None


def _seconds_until_http_date(value: Any) -> float | None:
    """Seconds from now until an HTTP date (RFC 9110 allows one in Retry-After), at least 0; None if not one."""
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": HTTP dates are always in UTC
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(when.timestamp() - time.time(), 0.0)


def reserved_tokens(messages: list[dict], max_tokens: int, limiter: Limiter | None) -> int:
    """Tokens one request holds in the limiter until its usage is known: the prompt's estimate plus max_tokens.

    The estimate uses the tokenizer bundled with litellm whatever the model (offline, a few ms for a
    long prompt): asking for the model's own tokenizer downloads one from Hugging Face for some
    models (llama-3: a 23 s stall offline).  The reply's usage corrects it.
    """
    if limiter is None or not limiter.counts_tokens:
        return 0
    try:
        prompt = litellm.token_counter(model="", messages=messages)
    except Exception:  # noqa: BLE001 - an estimate: content it cannot read falls back to chars/4
        prompt = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 1
    return int(prompt) + max_tokens


def used_tokens(response: Any) -> int | None:
    """The tokens a reply says it used (prompt + completion), or None when it does not say."""
    usage = getattr(response, "usage", None)
    total = getattr(usage, "total_tokens", None)
    if isinstance(total, int):
        return total
    parts = [getattr(usage, key, None) for key in ("prompt_tokens", "completion_tokens")]
    return sum(parts) if all(isinstance(p, int) for p in parts) else None


def backoff_delay(base_s: float, attempt: int) -> float:
    """Exponential backoff for the given failed attempt (1-based), capped and jittered to 50-100%."""
    return min(base_s * 2 ** (attempt - 1), MAX_BACKOFF_S) * _jitter.uniform(0.5, 1.0)


def describe_error(exc: BaseException) -> str:
    """One line naming the error class and the first line of its message, cut to a readable length."""
    text = str(exc).strip()
    first_line = text.splitlines()[0] if text else ""
    if len(first_line) > ERROR_TEXT_LIMIT:
        first_line = first_line[:ERROR_TEXT_LIMIT] + "..."
    return f"{type(exc).__name__}: {first_line}"


def failure_message(models: Sequence[str], attempts: int, last_error_by_model: dict[str, str]) -> str:
    """The LLMError message: which model(s) were tried, how many attempts, and what went wrong last."""
    tries = f"{attempts} attempt" + ("" if attempts == 1 else "s")
    if len(models) == 1:
        return f"LLM call to {models[0]} failed after {tries}: {last_error_by_model[models[0]]}"
    per_model = "; ".join(f"{m}: {last_error_by_model[m]}" for m in models)
    return (
        f"LLM call to {models[0]} (fallbacks {', '.join(models[1:])}) failed after {tries}; "
        f"last error per model: {per_model}"
    )


def reply_text(response: Any) -> str:
    """The content of the first choice, or '' when there is none."""
    choices = getattr(response, "choices", None) or []
    if not choices:
        return ""
    message = getattr(choices[0], "message", None)
    return getattr(message, "content", None) or ""


def finish_reason(response: Any) -> str | None:
    """The first choice's finish_reason, for error messages."""
    choices = getattr(response, "choices", None) or []
    return getattr(choices[0], "finish_reason", None) if choices else None


def build_reply(response: Any, text: str, model: str, latency_s: float, rate_wait_s: float = 0.0) -> LLMReply:
    """Turn a litellm response into an LLMReply; `model` is the requested name that answered."""
    usage = getattr(response, "usage", None)
    return LLMReply(
        text=text,
        model=model,
        prompt_tokens=getattr(usage, "prompt_tokens", None),
        completion_tokens=getattr(usage, "completion_tokens", None),
        cost_usd=response_cost(response),
        latency_s=latency_s,
        rate_wait_s=rate_wait_s,
    )


def response_cost(response: Any) -> float | None:
    """The call's price in USD as litellm knows it, or None when the model's price is unknown."""
    cost = (getattr(response, "_hidden_params", None) or {}).get("response_cost")
    if cost is None:
        try:
            cost = litellm.completion_cost(completion_response=response)
        # Pricing is accounting, never a reason to lose a reply: any failure here means "unknown".
        except Exception:  # noqa: BLE001
            return None
    return float(cost) if cost is not None else None
