"""Per-minute request and token budgets for LLM calls: a call waits (abortably) until it fits.

``complete()`` asks its limiter before every HTTP request it sends (retries count: providers count
them) and settles the permit when the request ends, so the budget reflects what the provider
reported using.  Two limiters, and both together:

* ``WindowLimiter`` (``api.requests_per_minute``, ``api.tokens_per_minute``): in this process.  A
  sliding window, not a token bucket: no 60 s span ever holds more than the budget, which is what a
  provider's "per minute" promises under any of the ways they enforce it.  A call reserves its
  prompt's estimated tokens plus ``max_tokens``; the reply's reported usage replaces the reservation.
* ``PrefectRateLimit`` (``api.prefect_rate_limit``): a Prefect global concurrency limit with slot
  decay, one slot per request, for several searches (processes) sharing one provider key through
  one Prefect server.  It costs an API round trip per request and counts requests only: Prefect
  slots cannot be sized after the fact, so tokens cannot be settled there.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

if TYPE_CHECKING:
    from evolveflow.config import ApiConfig

POLL_S = 0.2  # the longest a waiting call goes without checking for an abort (as rt.slot)
MINUTE_S = 60.0


class RateLimitError(Exception):
    """A rate limit is configured in a way that cannot work; the message says what to change."""


@dataclass(frozen=True)
class Permit:
    """One request let through, and how long it was held back (0.0: not at all); `held` is the limiter's record."""

    waited_s: float = 0.0
    held: Any = None


class Limiter(Protocol):
    """Paces requests to a provider.  Thread-safe: every round of a search shares one.

    ``acquire`` blocks until one request of ``tokens`` fits the budget (calling the abort check
    while it waits, which raises to give up) and returns a permit; ``settle`` is called exactly
    once per permit when the request ended, with the tokens the provider reported (None when it
    reported none: the reservation stands).  ``counts_tokens`` says whether ``tokens`` matters
    (else pass 0 and skip the estimate).  ``close`` releases what the limiter holds open.
    """

    counts_tokens: bool

    def acquire(self, tokens: int) -> Permit: ...

    def settle(self, permit: Permit, used_tokens: int | None) -> None: ...

    def close(self) -> None: ...


def open_rate_limiter(api: "ApiConfig", check_abort: Callable[[], None]) -> Limiter | None:
    """Returns the limiter `api` asks for, or None when it sets no limit (calls then cost nothing extra).

    ``check_abort`` raises to stop a waiting call (e.g. ``Runtime.check_abort``).
    """
    limiters: list[Limiter] = []
    if api.prefect_rate_limit:
        limiters.append(PrefectRateLimit(api.prefect_rate_limit, check_abort=check_abort))
    if api.requests_per_minute or api.tokens_per_minute:
        limiters.append(WindowLimiter(api.requests_per_minute, api.tokens_per_minute, MINUTE_S, check_abort))
    if not limiters:
        return None
    return limiters[0] if len(limiters) == 1 else Combined(limiters)


def seconds_until_fits(
    window: Sequence[tuple[float, int]], now: float, window_s: float,
    requests: int | None, tokens: int | None, wanted: int,
) -> float:
    """Returns how long until one more request of `wanted` tokens fits (0: now).

    ``window`` holds (sent_at, tokens) of the requests sent in the last ``window_s`` seconds, oldest
    first.  A request larger than the whole token budget fits only when the window is empty: it
    goes alone instead of never.
    """
    wait = 0.0
    if requests is not None and len(window) >= requests:
        wait = window[len(window) - requests][0] + window_s - now
    if tokens is not None:
        held = sum(t for _, t in window)
        if wanted > tokens:
            if window:
                wait = max(wait, window[-1][0] + window_s - now)
        elif held + wanted > tokens:
            for sent_at, used in window:
                held -= used
                if held + wanted <= tokens:
                    wait = max(wait, sent_at + window_s - now)
                    break
    return max(wait, 0.0)


@dataclass
class _Sent:
    sent_at: float
    tokens: int


@dataclass
class WindowLimiter:
    """At most `requests` requests and `tokens` tokens in any `window_s` seconds (None: no limit).

    Waiting calls are served first come, first served, so a large call is not starved by small ones.
    """

    requests: int | None = None
    tokens: int | None = None
    window_s: float = MINUTE_S
    check_abort: Callable[[], None] = lambda: None
    clock: Callable[[], float] = time.monotonic
    _sent: deque = field(default_factory=deque)
    _queue: deque = field(default_factory=deque)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        for name in ("requests", "tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise RateLimitError(f"a rate limit of {value} {name} per window lets nothing through; use >= 1 or None")

    @property
    def counts_tokens(self) -> bool:
        return self.tokens is not None

    def acquire(self, tokens: int) -> Permit:
        """Waits until the request fits, then records it as sent now."""
        started = self.clock()
        turn = object()
        held_back = False
        with self._cond:
            self._queue.append(turn)
            try:
                while True:
                    now = self.clock()
                    self._forget_before(now - self.window_s)
                    delay = (seconds_until_fits([(s.sent_at, s.tokens) for s in self._sent], now, self.window_s,
                                                self.requests, self.tokens, tokens)
                             if self._queue[0] is turn else POLL_S)
                    if delay <= 0:
                        break
                    held_back = True
                    self._cond.wait(min(delay, POLL_S))
                    self.check_abort()
            finally:
                self._queue.remove(turn)
                self._cond.notify_all()  # the next in line may fit now
            sent = _Sent(now, tokens if self.tokens is not None else 0)
            self._sent.append(sent)
        return Permit(waited_s=now - started if held_back else 0.0, held=sent)

    def settle(self, permit: Permit, used_tokens: int | None) -> None:
        """Replaces the request's reservation with the tokens the provider reported."""
        if used_tokens is None or self.tokens is None:
            return
        with self._cond:
            permit.held.tokens = max(int(used_tokens), 0)
            self._cond.notify_all()  # a smaller bill frees budget for whoever waits

    def close(self) -> None:
        """Nothing held open."""

    def _forget_before(self, horizon: float) -> None:
        while self._sent and self._sent[0].sent_at <= horizon:
            self._sent.popleft()


class PrefectRateLimit:
    """One slot per request from a Prefect global concurrency limit with slot decay.

    The limit lives on the Prefect server, so every search talking to that server shares it.  A
    limit L with decay D lets L requests through at once, then D a second: any minute holds at most
    L + 60·D (``prefect gcl create NAME --limit 30 --slot-decay-per-second 0.5``: at most 60).  The
    server answers 423 with a Retry-After while the limit is full; the wait is done here, in
    abortable steps, rather than inside Prefect's ``rate_limit()``, which can only time out (and
    logs an error each time it does).
    """

    counts_tokens = False

    def __init__(self, name: str, check_abort: Callable[[], None] = lambda: None) -> None:
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        self.name = name
        self.check_abort = check_abort
        self._client = get_client(sync_client=True)
        self._client.__enter__()
        try:
            limit = self._client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            self.close()
            raise RateLimitError(
                f"api.prefect_rate_limit is {name!r}, but the Prefect server has no global concurrency "
                f"limit of that name: create one, e.g. `prefect gcl create {name} --limit 30 "
                f"--slot-decay-per-second 0.5` for at most 60 requests in any minute") from None
        problem = (("has no slot decay, so its slots never come back", "--slot-decay-per-second 0.5")
                   if not limit.slot_decay_per_second else ("is inactive", "--enable") if not limit.active else None)
        if problem:
            self.close()
            raise RateLimitError(
                f"api.prefect_rate_limit: the Prefect global concurrency limit {name!r} {problem[0]}: "
                f"`prefect gcl update {name} {problem[1]}` makes it a rate limit")

    def acquire(self, tokens: int) -> Permit:
        """Takes one slot, waiting as long as the server says (and checking for an abort meanwhile)."""
        import httpx

        started = time.monotonic()
        held_back = False
        while True:
            self.check_abort()
            try:
                taken = self._client.increment_concurrency_slots(names=[self.name], slots=1, mode="rate_limit")
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 423:
                    raise
                held_back = True
                _sleep_abortably(float(exc.response.headers.get("Retry-After") or 1.0), self.check_abort)
                continue
            if not taken.json():  # the server skips limits it does not know: never go unlimited silently
                raise RateLimitError(f"api.prefect_rate_limit: the Prefect global concurrency limit "
                                     f"{self.name!r} was deleted while the search ran")
            return Permit(waited_s=time.monotonic() - started if held_back else 0.0)

    def settle(self, permit: Permit, used_tokens: int | None) -> None:
        """Nothing to settle: a slot decays by itself."""

    def close(self) -> None:
        self._client.__exit__(None, None, None)


class Combined:
    """Several limiters at once (a local token budget and a shared Prefect request limit)."""

    def __init__(self, limiters: Sequence[Limiter]) -> None:
        self.limiters = tuple(limiters)
        self.counts_tokens = any(limiter.counts_tokens for limiter in self.limiters)

    def acquire(self, tokens: int) -> Permit:
        # In order; whatever an earlier limiter granted counts as spent while a later one waits,
        # so open_rate_limiter puts the local window last: it dates the request no earlier than
        # it is sent (conservative), and the shared slot is at worst spent early, never late.
        parts: list[Permit] = []
        try:
            for limiter in self.limiters:
                parts.append(limiter.acquire(tokens))
        except BaseException:
            for limiter, part in zip(self.limiters, parts):
                limiter.settle(part, None)
            raise
        return Permit(waited_s=sum(p.waited_s for p in parts), held=tuple(parts))

    def settle(self, permit: Permit, used_tokens: int | None) -> None:
        for limiter, part in zip(self.limiters, permit.held):
            limiter.settle(part, used_tokens)

    def close(self) -> None:
        for limiter in self.limiters:
            limiter.close()


def _sleep_abortably(seconds: float, check_abort: Callable[[], None]) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, POLL_S))
        check_abort()
