"""Rate limits on LLM requests: the window limiter, Prefect's global limit, Retry-After, abort.

The end-to-end tests go through complete() to the real loopback server and judge by the times the
server itself saw each request arrive.  A per-minute budget is tested with a short window: the
limiter takes the window's length as a parameter (the config is per minute).
"""
from __future__ import annotations

import email.utils
import threading
import time
import uuid
from types import SimpleNamespace

import pytest

import evolveflow  # noqa: F401  # offline env defaults before litellm
from evolveflow.abort import Aborted
from evolveflow.config import ApiConfig, ConfigError, load_config
from evolveflow.llm.client import complete, server_retry_hint
from evolveflow.llm.rate_limit import (
    MINUTE_S, Combined, PrefectRateLimit, RateLimitError, WindowLimiter, open_rate_limiter, seconds_until_fits,
)
from tests.support.openai_server import FakeOpenAIServer, rough_token_count

MESSAGES = [{"role": "user", "content": "Improve it."}]
SLACK_S = 0.2  # how much later than the limiter dated it a request may reach the server (busy 2 cores)


class Arrivals:
    """A fault rule that lets every request through but notes when the server received it."""

    def __init__(self, faults: list[str | None] = ()) -> None:
        self.times: list[float] = []
        self.faults = list(faults)

    def __call__(self, request: dict) -> str | None:
        self.times.append(time.monotonic())
        return self.faults[len(self.times) - 1] if len(self.times) <= len(self.faults) else None


def ask(srv: FakeOpenAIServer, limiter=None, **kwargs):
    return complete(MESSAGES, model="openai/fake-model", api_base=srv.base_url, api_key="x",
                    retry_backoff_s=0.01, timeout_s=10.0, limiter=limiter, **kwargs)


def ask_at_once(srv: FakeOpenAIServer, limiter, calls: int, **kwargs) -> list:
    """Makes `calls` concurrent calls; returns their replies (or exceptions)."""
    results: list = [None] * calls

    def one(i: int) -> None:
        try:
            results[i] = ask(srv, limiter, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def most_in_any_window(times: list[float], weights: list[int], window_s: float) -> int:
    """The largest total weight of the requests that arrived within any span shorter than window_s."""
    pairs = sorted(zip(times, weights))
    return max(sum(w for t, w in pairs[i:] if t < start + window_s) for i, (start, _) in enumerate(pairs))


@pytest.fixture(scope="module")
def warm_litellm():
    """The first litellm call in a process imports a lot: keep that delay out of the timed tests."""
    with FakeOpenAIServer() as srv:
        ask(srv)


# -- the pure arithmetic ---------------------------------------------------------------------

def test_seconds_until_fits_counts_requests_and_tokens_in_the_window():
    window = [(0.0, 10), (1.0, 10)]
    assert seconds_until_fits(window, 1.5, 60, requests=3, tokens=None, wanted=0) == 0
    assert seconds_until_fits(window, 1.5, 60, requests=2, tokens=None, wanted=0) == 58.5  # oldest leaves at 60
    assert seconds_until_fits(window, 1.5, 60, requests=None, tokens=30, wanted=10) == 0
    assert seconds_until_fits(window, 1.5, 60, requests=None, tokens=25, wanted=10) == 58.5  # 20 + 10 > 25
    assert seconds_until_fits(window, 1.5, 60, requests=None, tokens=15, wanted=10) == 59.5  # both must leave
    assert seconds_until_fits([], 1.5, 60, requests=1, tokens=5, wanted=10) == 0  # too big: goes when alone
    assert seconds_until_fits(window, 1.5, 60, requests=None, tokens=5, wanted=10) == 59.5


# -- the window limiter on its own -------------------------------------------------------------

def test_window_limiter_lets_no_more_than_its_budget_into_any_window():
    limiter = WindowLimiter(requests=2, window_s=0.5)
    times: list[float] = []

    def take() -> None:
        limiter.acquire(0)
        times.append(time.monotonic())

    threads = [threading.Thread(target=take) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(times) == 5
    assert most_in_any_window(times, [1] * 5, 0.5) == 2
    assert max(times) - min(times) >= 1.0 - 0.05  # 2 now, 2 after one window, the fifth after two


def test_window_limiter_serves_waiters_in_arrival_order():
    # A big request waiting for room is not overtaken by a small one that would fit sooner.
    limiter = WindowLimiter(tokens=100, window_s=0.6)
    limiter.acquire(60)
    order: list[str] = []
    big = threading.Thread(target=lambda: (limiter.acquire(80), order.append("big")))
    big.start()
    time.sleep(0.1)
    small = threading.Thread(target=lambda: (limiter.acquire(10), order.append("small")))
    small.start()
    big.join(timeout=5)
    small.join(timeout=5)
    assert order == ["big", "small"]


def test_reported_usage_replaces_the_reservation():
    limiter = WindowLimiter(tokens=100, window_s=MINUTE_S)
    first = limiter.acquire(80)
    got = threading.Event()
    waiter = threading.Thread(target=lambda: (limiter.acquire(80), got.set()), daemon=True)
    waiter.start()
    time.sleep(0.3)
    assert not got.is_set()  # 80 + 80 > 100: waits (for a minute, unless the bill is smaller)
    limiter.settle(first, 15)
    assert got.wait(2)


def test_a_request_larger_than_the_budget_goes_alone_instead_of_never():
    limiter = WindowLimiter(tokens=100, window_s=0.4)
    assert limiter.acquire(500).waited_s == 0.0  # the window is empty: it goes at once
    second = limiter.acquire(10)  # must wait for the big one to leave the window
    assert second.waited_s >= 0.4 - 0.05


def test_abort_while_waiting_for_the_limit_returns_promptly_and_frees_the_queue():
    stop = threading.Event()

    def check_abort() -> None:
        if stop.is_set():
            raise Aborted("the search stopped: test")

    limiter = WindowLimiter(requests=1, window_s=1.0, check_abort=check_abort)
    limiter.acquire(0)
    outcome: list = []

    def wait() -> None:
        try:
            limiter.acquire(0)
        except Aborted as exc:
            outcome.append((exc, time.monotonic()))

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.2)
    stop.set()
    aborted_at = time.monotonic()
    waiter.join(timeout=5)
    assert outcome and outcome[0][1] - aborted_at < 0.5
    stop.clear()  # the aborted waiter left the queue: the next request is not stuck behind it
    assert limiter.acquire(0).waited_s < 1.5


# -- through complete(), judged by the server ----------------------------------------------------

def test_requests_per_minute_holds_at_the_server(warm_litellm):
    arrivals = Arrivals()
    with FakeOpenAIServer(faults=arrivals) as srv:
        replies = ask_at_once(srv, WindowLimiter(requests=2, window_s=1.0), calls=5)
    assert all(not isinstance(r, BaseException) for r in replies), replies
    assert len(arrivals.times) == 5
    assert most_in_any_window(arrivals.times, [1] * 5, 1.0 - SLACK_S) == 2
    assert max(arrivals.times) - min(arrivals.times) >= 2.0 - SLACK_S
    assert max(r.latency_s for r in replies) < 1.0  # the last call waited 2 s: for the limit, not the model


def test_tokens_per_minute_holds_at_the_server(warm_litellm):
    reply_text = "x" * 396  # the server bills 100 tokens for it, plus 3 for the prompt
    arrivals = Arrivals()
    with FakeOpenAIServer(responder=[reply_text], faults=arrivals) as srv:
        replies = ask_at_once(srv, WindowLimiter(tokens=250, window_s=1.0), calls=5, max_tokens=100)
    assert all(not isinstance(r, BaseException) for r in replies), replies
    billed = [r.prompt_tokens + r.completion_tokens for r in replies]
    assert billed == [rough_token_count("Improve it.") + rough_token_count(reply_text)] * 5
    assert most_in_any_window(arrivals.times, billed, 1.0 - SLACK_S) <= 250
    assert max(arrivals.times) - min(arrivals.times) >= 2.0 - SLACK_S  # two calls' worth per window


def test_reply_usage_settles_the_reservation_through_complete(warm_litellm):
    # Each call reserves its prompt + max_tokens=1000 of a 1500-token minute, but bills ~5 tokens:
    # without settling, the second call would wait a whole minute.
    stop = threading.Event()
    limiter = WindowLimiter(tokens=1500, window_s=MINUTE_S, check_abort=lambda: stop.is_set() and _abort())
    done = threading.Event()
    with FakeOpenAIServer(responder=["ok"]) as srv:
        worker = threading.Thread(target=lambda: ([ask(srv, limiter, max_tokens=1000) for _ in range(5)], done.set()),
                                  daemon=True)
        worker.start()
        finished = done.wait(10)
        stop.set()
        worker.join(timeout=5)
    assert finished and len(srv.requests) == 5


def test_a_call_larger_than_the_token_budget_does_not_deadlock(warm_litellm):
    arrivals = Arrivals()
    with FakeOpenAIServer(faults=arrivals) as srv:
        replies = ask_at_once(srv, WindowLimiter(tokens=50, window_s=0.5), calls=2, max_tokens=100)
    assert all(not isinstance(r, BaseException) for r in replies), replies
    first, second = sorted(arrivals.times)
    assert second - first >= 0.5 - SLACK_S  # each went alone


def test_retry_after_is_honoured(warm_litellm):
    # The fake server says "wait 1 s" as retry-after-ms (the header OpenAI sends alongside Retry-After).
    arrivals = Arrivals(faults=["429"])
    with FakeOpenAIServer(faults=arrivals, retry_after_ms=1000) as srv:
        ask(srv, limiter=WindowLimiter(requests=10, window_s=1.0))
    assert srv.fault_log == ["429", None]
    assert 1.0 <= arrivals.times[1] - arrivals.times[0] < 5  # not the 0.01 s backoff


@pytest.mark.parametrize("headers, seconds", [
    ({"retry-after": "1"}, 1.0),
    ({"retry-after": "2.5", "retry-after-ms": "300"}, 0.3),  # the finer header wins
    ({"retry-after": "7200"}, 60.0),  # capped: an hour-long ask is not obeyed
    ({"retry-after": "soon"}, None),
    ({}, None),
])
def test_server_retry_hint_reads_retry_after(headers, seconds):
    assert server_retry_hint(SimpleNamespace(litellm_response_headers=headers)) == seconds


def test_server_retry_hint_reads_an_http_date():
    in_3_s = email.utils.formatdate(time.time() + 3, usegmt=True)
    assert 1.5 <= server_retry_hint(SimpleNamespace(litellm_response_headers={"retry-after": in_3_s})) <= 3.0
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert server_retry_hint(SimpleNamespace(litellm_response_headers={"retry-after": past})) == 0.0


def test_abort_during_a_rate_limit_wait_in_complete_returns_promptly(warm_litellm):
    stop = threading.Event()
    limiter = WindowLimiter(requests=1, window_s=MINUTE_S, check_abort=lambda: stop.is_set() and _abort())
    outcome: list = []
    with FakeOpenAIServer() as srv:
        ask(srv, limiter)
        waiter = threading.Thread(target=lambda: _catch(outcome, lambda: ask(srv, limiter)))
        waiter.start()
        time.sleep(0.3)
        stop.set()
        aborted_at = time.monotonic()
        waiter.join(timeout=5)
    assert outcome and isinstance(outcome[0][0], Aborted)
    assert outcome[0][1] - aborted_at < 0.5
    assert len(srv.requests) == 1  # the second request was never sent


def _abort() -> None:
    raise Aborted("the search stopped: test")


def _catch(outcome: list, call) -> None:
    try:
        call()
    except BaseException as exc:  # noqa: BLE001
        outcome.append((exc, time.monotonic()))


# -- config ------------------------------------------------------------------------------------

def test_no_limits_by_default_cost_nothing():
    assert ApiConfig().requests_per_minute is None and ApiConfig().tokens_per_minute is None
    assert open_rate_limiter(ApiConfig(), lambda: None) is None


def test_config_limits_are_per_minute():
    limiter = open_rate_limiter(ApiConfig(requests_per_minute=60, tokens_per_minute=90_000), lambda: None)
    assert isinstance(limiter, WindowLimiter)
    assert (limiter.requests, limiter.tokens, limiter.window_s, limiter.counts_tokens) == (60, 90_000, 60.0, True)
    assert open_rate_limiter(ApiConfig(requests_per_minute=5), lambda: None).counts_tokens is False


@pytest.mark.parametrize("key, value, message", [
    ("api.requests_per_minute", 0, "'api.requests_per_minute': Input should be greater than or equal to 1 (got 0)"),
    ("api.tokens_per_minute", -5, "'api.tokens_per_minute': Input should be greater than or equal to 1 (got -5)"),
    ("api.prefect_rate_limit", "", "'api.prefect_rate_limit': String should have at least 1 character (got '')"),
])
def test_config_refuses_limits_that_let_nothing_through(key, value, message):
    with pytest.raises(ConfigError) as caught:
        load_config([], {key: value})
    assert str(caught.value) == f"command-line flags: {message}"


# -- Prefect's global concurrency limit, shared by searches on one server -------------------------

def _gcl(limit: int, decay: float) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    name = f"llm-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=name, limit=limit, slot_decay_per_second=decay))
    return name


@pytest.mark.usefixtures("prefect_server")
def test_prefect_rate_limit_paces_requests_at_the_server(warm_litellm):
    limiter = PrefectRateLimit(_gcl(limit=2, decay=4.0))  # bursts of 2, then 4 a second
    arrivals = Arrivals()
    try:
        with FakeOpenAIServer(faults=arrivals) as srv:
            replies = ask_at_once(srv, limiter, calls=6)
    finally:
        limiter.close()
    assert all(not isinstance(r, BaseException) for r in replies), replies
    assert max(arrivals.times) - min(arrivals.times) >= (6 - 2) / 4.0 - SLACK_S


@pytest.mark.usefixtures("prefect_server")
def test_prefect_rate_limit_wait_is_abortable():
    stop = threading.Event()
    limiter = PrefectRateLimit(_gcl(limit=1, decay=0.02), check_abort=lambda: stop.is_set() and _abort())
    outcome: list = []
    try:
        limiter.acquire(0)
        waiter = threading.Thread(target=lambda: _catch(outcome, lambda: limiter.acquire(0)))
        waiter.start()
        time.sleep(0.5)
        stop.set()
        aborted_at = time.monotonic()
        waiter.join(timeout=10)
    finally:
        limiter.close()
    assert outcome and isinstance(outcome[0][0], Aborted)
    assert outcome[0][1] - aborted_at < 1.0


@pytest.mark.usefixtures("prefect_server")
def test_prefect_rate_limit_refuses_a_missing_or_non_decaying_limit():
    with pytest.raises(RateLimitError, match=r"no global concurrency limit of that name: create one, e\.g\. "
                                             r"`prefect gcl create nope-\w+ --limit 30 --slot-decay-per-second 0\.5`"):
        PrefectRateLimit(f"nope-{uuid.uuid4().hex[:6]}")
    with pytest.raises(RateLimitError, match=r"has no slot decay, so its slots never come back: "
                                             r"`prefect gcl update llm-\w+ --slot-decay-per-second 0\.5` makes it"):
        PrefectRateLimit(_gcl(limit=5, decay=0.0))


@pytest.mark.usefixtures("prefect_server")
def test_both_limits_combine():
    limiter = open_rate_limiter(ApiConfig(tokens_per_minute=1000, prefect_rate_limit=_gcl(5, 1.0)), lambda: None)
    try:
        assert isinstance(limiter, Combined) and limiter.counts_tokens
        assert [type(part).__name__ for part in limiter.limiters] == ["PrefectRateLimit", "WindowLimiter"]
        permit = limiter.acquire(900)
        limiter.settle(permit, 10)
        assert limiter.acquire(900).waited_s < 0.5  # settled through to the window
    finally:
        limiter.close()


# -- a whole search ------------------------------------------------------------------------------

@pytest.mark.usefixtures("prefect_server")
def test_a_search_keeps_every_llm_request_within_requests_per_minute(tmp_path, monkeypatch, warm_litellm):
    import os

    from evolveflow.llm import rate_limit
    from flows.search import evolve_search
    from tests.support.openai_server import offline_responder
    from tests.test_resilience_e2e import experiment, tree_of

    monkeypatch.setattr(rate_limit, "MINUTE_S", 2.0)  # a 2 s "minute" keeps the test short
    arrivals = Arrivals()
    with FakeOpenAIServer(responder=offline_responder(), faults=arrivals) as srv:
        experiment(tmp_path, 'def evaluate(program_path):\n    return {"score": -mse(load(program_path))}\n',
                   f"api: {{model: openai/stub, analyzer_model: openai/stub, api_base: '{srv.base_url}', "
                   "num_retries: 0, retry_backoff_s: 0.01, requests_per_minute: 2}\n"
                   "pipeline: {parallel: {num_workers: 3}}\n")
        monkeypatch.setitem(os.environ, "OPENAI_API_KEY", "x")
        evolve_search(experiment="demo", rounds=4, root=str(tmp_path))
    assert len(arrivals.times) >= 6  # proposals and analyses, under one budget
    # Under a whole search (Prefect threads on 2 busy cores) litellm can take 0.3 s from the
    # limiter's stamp to the server: judge with more slack than the calls above.
    assert most_in_any_window(arrivals.times, [1] * len(arrivals.times), 2.0 - 0.5) <= 2
    with tree_of(tmp_path) as tree:
        waits = [tree.node(i).timings.get("llm_rate_wait", 0.0) for i in range(1, 5)]
    assert any(w > 0 for w in waits), waits  # recorded with the round's other timings (none: absent)
