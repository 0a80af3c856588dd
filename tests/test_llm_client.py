"""complete() against a real loopback OpenAI-compatible server that injects faults."""
import json
import threading
import time
import urllib.error
import urllib.request

import pytest

import evolveflow  # noqa: F401  # offline env defaults before litellm
import litellm

from evolveflow.llm.client import EmptyReplyError, LLMError, complete
from tests.support.openai_server import (
    DEFAULT_REPLY,
    FakeOpenAIServer,
    FakeServerError,
    rough_token_count,
)

MESSAGES = [{"role": "system", "content": "You edit programs."}, {"role": "user", "content": "Improve it."}]
PROMPT_TOKENS = rough_token_count("You edit programs.Improve it.")
FAST = {"retry_backoff_s": 0.01, "timeout_s": 10.0}  # tiny backoff keeps the file fast


def ask(srv: FakeOpenAIServer, model: str = "openai/fake-model", **kwargs):
    """complete() pointed at the fake server, with test-friendly delays."""
    return complete(MESSAGES, model=model, api_base=srv.base_url, api_key="x", **{**FAST, **kwargs})


# -- happy path and accounting -----------------------------------------------------------------

def test_happy_path_returns_text_tokens_and_unknown_cost():
    with FakeOpenAIServer(responder=["the new program"]) as srv:
        reply = ask(srv, temperature=0.3, max_tokens=123)
    assert reply.text == "the new program"
    assert reply.model == "openai/fake-model"
    assert reply.prompt_tokens == PROMPT_TOKENS
    assert reply.completion_tokens == rough_token_count("the new program")
    assert reply.cost_usd is None  # an unknown model's price is unknown, not free
    assert 0 < reply.latency_s < 10
    sent = srv.requests[0]
    assert (sent["model"], sent["temperature"], sent["max_tokens"]) == ("fake-model", 0.3, 123)
    assert sent["messages"] == MESSAGES
    assert "seed" not in sent


def test_seed_is_passed_through_when_given():
    with FakeOpenAIServer() as srv:
        ask(srv, seed=42)
    assert srv.requests[0]["seed"] == 42


def test_per_call_prices_give_a_real_cost():
    with FakeOpenAIServer(responder=["priced answer"]) as srv:
        reply = ask(srv, extra={"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6})
    expected = reply.prompt_tokens * 1e-6 + reply.completion_tokens * 2e-6
    assert reply.cost_usd == pytest.approx(expected)
    assert reply.cost_usd > 0


def test_registered_model_price_gives_a_real_cost():
    name = "openai/evolveflow-test-priced"
    litellm.register_model({name: {"input_cost_per_token": 3e-6, "output_cost_per_token": 5e-6,
                                   "litellm_provider": "openai", "mode": "chat"}})
    try:
        with FakeOpenAIServer() as srv:
            reply = ask(srv, model=name)
    finally:
        litellm.model_cost.pop(name, None)
    assert reply.cost_usd == pytest.approx(reply.prompt_tokens * 3e-6 + reply.completion_tokens * 5e-6)


def test_invalid_arguments_are_refused_with_a_fix():
    with pytest.raises(TypeError, match=r"extra must not set \['num_retries', 'timeout'\]; use complete\(\)'s own"):
        complete(MESSAGES, model="openai/m", extra={"timeout": 1, "num_retries": 9})
    with pytest.raises(TypeError, match=r"not the string 'openai/b'; wrap it in \[\.\.\.\]"):
        complete(MESSAGES, model="openai/m", fallbacks="openai/b")
    with pytest.raises(ValueError, match=r"num_retries must be >= 0, got -1"):
        complete(MESSAGES, model="openai/m", num_retries=-1)


# -- retries -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["429", "500", "503", "reset", "truncated", "empty"])
def test_one_fault_then_success(fault):
    with FakeOpenAIServer(responder=["recovered"], faults=[fault]) as srv:
        reply = ask(srv)
    assert reply.text == "recovered"
    assert srv.fault_log == [fault, None]
    assert srv.stats.faults[fault] == 1 and srv.stats.served == 1
    assert srv.errors == []


def test_hang_beyond_timeout_then_success():
    with FakeOpenAIServer(responder=["after the hang"], faults=["hang"], hang_s=30) as srv:
        started = time.monotonic()
        reply = ask(srv, timeout_s=0.5)
        elapsed = time.monotonic() - started
    assert reply.text == "after the hang"
    assert srv.fault_log == ["hang", None]
    assert elapsed < 5  # the client gave up on the hang instead of waiting 30 s
    assert srv.errors == []


def test_retry_after_from_server_replaces_backoff():
    # A one-hour backoff would hang the test: only the server's 1 ms retry-after-ms can make it pass.
    with FakeOpenAIServer(faults=["429", "429"], retry_after_ms=1) as srv:
        started = time.monotonic()
        reply = ask(srv, retry_backoff_s=3600)
    assert reply.text == DEFAULT_REPLY
    assert time.monotonic() - started < 5


def test_backoff_applies_when_server_gives_no_hint():
    with FakeOpenAIServer(faults=["reset"]) as srv:
        started = time.monotonic()
        ask(srv, retry_backoff_s=0.4)
    assert time.monotonic() - started >= 0.2  # jitter keeps at least half the backoff


def test_all_attempts_fail_raises_llm_error_naming_model_and_cause():
    with FakeOpenAIServer(faults=["500"] * 10) as srv:
        with pytest.raises(LLMError) as caught:
            ask(srv, model="openai/x", num_retries=2)
    message = str(caught.value)
    assert message.startswith("LLM call to openai/x failed after 3 attempts: InternalServerError: ")
    assert "injected fault: HTTP 500" in message
    assert caught.value.attempts == 3 and caught.value.models == ("openai/x",)
    assert len(srv.requests) == 3  # exactly 1 + num_retries: no hidden SDK or litellm retries


def test_empty_replies_get_one_more_try_then_empty_reply_error():
    with FakeOpenAIServer(faults=["empty"] * 5) as srv:
        with pytest.raises(EmptyReplyError) as caught:
            ask(srv, model="openai/x", num_retries=0)
    assert str(caught.value) == "LLM call to openai/x failed after 2 attempts: empty content (finish_reason=stop)"
    assert len(srv.requests) == 2


def test_empty_replies_are_billed_into_the_ledger_even_when_the_call_fails():
    ledger = []
    with FakeOpenAIServer(faults=["empty"] * 5) as srv:
        with pytest.raises(EmptyReplyError):
            ask(srv, model="openai/x", num_retries=0, ledger=ledger,
                extra={"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6})
    assert len(ledger) == len(srv.requests) == 2
    for billed in ledger:
        assert billed.text == "" and billed.model == "openai/x"
        assert billed.prompt_tokens == PROMPT_TOKENS and billed.completion_tokens == rough_token_count("")
        assert billed.cost_usd == pytest.approx(PROMPT_TOKENS * 1e-6 + rough_token_count("") * 2e-6)


def test_an_empty_reply_then_a_good_one_bills_both_and_splits_the_time():
    ledger = []
    with FakeOpenAIServer(responder=["fine"], faults=["empty", "500", None]) as srv:
        started = time.monotonic()
        reply = ask(srv, num_retries=2, ledger=ledger)
        elapsed = time.monotonic() - started
    assert reply.text == "fine" and [b.text for b in ledger] == [""]  # the 500 came back with no usage
    assert ledger[0].prompt_tokens == PROMPT_TOKENS
    assert 0 < ledger[0].latency_s and 0 < reply.latency_s
    assert ledger[0].latency_s + reply.latency_s <= elapsed  # each second counted once


def test_without_a_ledger_retries_are_unchanged():
    with FakeOpenAIServer(responder=["fine"], faults=["empty"]) as srv:
        assert ask(srv, num_retries=0).text == "fine"
    assert len(srv.requests) == 2


def test_client_errors_are_not_retried():
    with FakeOpenAIServer() as srv:
        with pytest.raises(LLMError) as caught:
            complete(MESSAGES, model="openai/x", api_base=srv.base_url + "/wrong", api_key="x", **FAST)
    assert str(caught.value).startswith("LLM call to openai/x failed after 1 attempt: NotFoundError: ")
    assert "no route POST" in str(caught.value)


def test_server_down_raises_llm_error():
    with FakeOpenAIServer() as srv:
        base_url = srv.base_url
    with pytest.raises(LLMError, match=r"^LLM call to openai/x failed after 2 attempts: InternalServerError: "):
        complete(MESSAGES, model="openai/x", api_base=base_url, api_key="x", num_retries=1, **FAST)


def test_handled_failures_print_no_banner_or_traceback(capfd):
    with FakeOpenAIServer(faults=["500", "reset", "truncated", "429"]) as srv:
        with pytest.raises(LLMError):
            ask(srv, num_retries=3)
    out, err = capfd.readouterr()
    for noise in ("Traceback", "Give Feedback", "Get Help", "LiteLLM"):
        assert noise not in out + err


# -- fallbacks -----------------------------------------------------------------------------------

def fail_model_named_bad(request: dict) -> str | None:
    """Server fault rule: every request for model 'bad' gets a 500."""
    return "500" if request["model"] == "bad" else None


def test_fallback_model_answers_when_primary_always_fails():
    with FakeOpenAIServer(responder=lambda req: f"answer from {req['model']}", faults=fail_model_named_bad) as srv:
        reply = ask(srv, model="openai/bad", fallbacks=["openai/good"], num_retries=1)
    assert reply.text == "answer from good"
    assert reply.model == "openai/good"
    assert [r["model"] for r in srv.requests] == ["bad", "bad", "good"]


def test_all_models_failing_names_each_in_the_error():
    with FakeOpenAIServer(faults=lambda req: "503" if req["model"] == "a" else "429") as srv:
        with pytest.raises(LLMError) as caught:
            ask(srv, model="openai/a", fallbacks=["openai/b"], num_retries=1)
    message = str(caught.value)
    assert message.startswith("LLM call to openai/a (fallbacks openai/b) failed after 4 attempts; last error per model: ")
    assert "openai/a: ServiceUnavailableError: " in message
    assert "openai/b: RateLimitError: " in message
    assert caught.value.models == ("openai/a", "openai/b")


# -- the fake server itself ----------------------------------------------------------------------

def post_chat(base_url: str, body: dict) -> tuple[int, str]:
    """POST a chat request with urllib; return (status, body), or (-1, error) when the connection broke."""
    request = urllib.request.Request(base_url + "/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (ConnectionError, urllib.error.URLError) as exc:
        return -1, repr(exc)


def random_fault_log(seed: int) -> list:
    """The faults a seeded random-mode server gives 30 sequential requests."""
    kinds = ["429", "500", "503", "reset", "empty", "truncated", "prose"]
    with FakeOpenAIServer(fault_rate=0.5, fault_kinds=kinds, seed=seed) as srv:
        for _ in range(30):
            post_chat(srv.base_url, {"model": "m", "messages": MESSAGES})
    return srv.fault_log


def test_random_faults_are_reproducible_from_the_seed():
    first, again, other = random_fault_log(7), random_fault_log(7), random_fault_log(8)
    assert first == again
    assert first != other
    assert 5 < sum(kind is not None for kind in first) < 25  # about half fail, with several kinds
    assert len({kind for kind in first if kind}) >= 3


def test_scripted_responder_and_faults_run_in_order():
    with FakeOpenAIServer(responder=["one", "two"], faults=[None, "prose", None, None]) as srv:
        replies = [post_chat(srv.base_url, {"model": "m", "messages": MESSAGES}) for _ in range(4)]
    contents = [json.loads(body)["choices"][0]["message"]["content"] for _, body in replies]
    assert contents[0] == "one" and contents[2:] == ["two", "two"]  # the last scripted reply repeats
    assert "I think" in contents[1]  # prose, not an edit
    assert srv.stats.served == 3 and srv.stats.faults == {"prose": 1}


def test_truncated_body_is_invalid_json_and_reset_breaks_the_connection():
    with FakeOpenAIServer(faults=["truncated", "reset"]) as srv:
        status, body = post_chat(srv.base_url, {"model": "m", "messages": MESSAGES})
        broken_status, _ = post_chat(srv.base_url, {"model": "m", "messages": MESSAGES})
    assert status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)
    assert broken_status == -1


def test_stream_requests_are_rejected_and_models_are_listed():
    with FakeOpenAIServer(models=["m1", "m2"]) as srv:
        status, body = post_chat(srv.base_url, {"model": "m1", "messages": MESSAGES, "stream": True})
        with urllib.request.urlopen(srv.base_url + "/models", timeout=5) as response:
            listed = json.loads(response.read())
    assert status == 400
    assert json.loads(body)["error"]["message"] == "streaming is not supported; send stream=false"
    assert [m["id"] for m in listed["data"]] == ["m1", "m2"]
    assert srv.requests == []  # rejected requests are not chat requests


def test_stop_interrupts_a_hung_request():
    srv = FakeOpenAIServer(faults=["hang"], hang_s=60).start()
    client = threading.Thread(target=post_chat, args=(srv.base_url, {"model": "m", "messages": MESSAGES}))
    client.start()
    deadline = time.monotonic() + 5
    while not srv.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    srv.stop()
    client.join(timeout=5)
    assert srv.fault_log == ["hang"]
    assert time.monotonic() - started < 2
    assert not client.is_alive()


def test_responder_errors_are_kept_for_the_test_to_see():
    def broken_responder(request: dict) -> str:
        raise RuntimeError("responder bug")

    with FakeOpenAIServer(responder=broken_responder) as srv:
        status, _ = post_chat(srv.base_url, {"model": "m", "messages": MESSAGES})
    assert status == -1
    assert [str(e) for e in srv.errors] == ["responder bug"]


def test_unknown_fault_kind_is_refused_with_the_valid_choices():
    with pytest.raises(FakeServerError, match=r"unknown fault kinds \['boom'\]; choose from \['429', "):
        FakeOpenAIServer(faults=["boom"])
