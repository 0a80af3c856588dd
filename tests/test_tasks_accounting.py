"""Every paid LLM reply is recorded exactly once; only evaluated programs count as near duplicates.

Real parts: a DuckDB tree and runtime in tmp_path, the loopback OpenAI server, MiniLM embeddings.
"""
from __future__ import annotations

import re

import pytest
from prefect import flow

from evolveflow.config import TaskRetry
from evolveflow.llm.client import EmptyReplyError, LLMError
from evolveflow.records import EvalResult, LLMCall, LLMReply, Outcome, Scored, Status
from evolveflow.runtime import get_runtime
from tasks.analyze import write_lesson
from tasks.generate import generate, propose, unavailable
from tasks.options import with_retries
from tasks.persist import final_node, persist, save
from tasks.sample import choose
from tests.support.openai_server import PROSE_REPLY, FakeOpenAIServer, rough_token_count
from tests.test_tasks import add_root, pending, runtimes, with_c1  # noqa: F401  (runtimes: fixture)

LESSON = "Raising C1 moved the score."


def edit_or_lesson(request: dict) -> str:
    """Answers like a model: a lesson for the analyst, else a valid edit of C1."""
    prompt = request["messages"][-1]["content"]
    if "## Facts" in prompt:
        return LESSON
    current = re.search(r"^C1 = (\S+)$", prompt, re.MULTILINE).group(1)
    return (f"MOTIVATION: raise C1.\n\n<<<<<<< SEARCH\nC1 = {current}\n=======\n"
            f"C1 = {float(current) + 0.01:.4f}\n>>>>>>> REPLACE\n")


def billed_tokens(server: FakeOpenAIServer) -> tuple[int, int]:
    """Returns the (prompt, completion) tokens of every response the server answered with usage."""
    prompt = completion = 0
    for body, fault in zip(server.requests, server.fault_log):
        if fault in (None, "empty", "prose"):
            prompt += rough_token_count("".join(str(m.get("content") or "") for m in body["messages"]))
            text = "" if fault == "empty" else PROSE_REPLY if fault == "prose" else edit_or_lesson(body)
            completion += rough_token_count(text)
    return prompt, completion


@pytest.fixture
def online(runtimes, monkeypatch):
    """Returns a function that opens a runtime pointed at a loopback server."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-secret")

    def make(server: FakeOpenAIServer, config: str = ""):
        return runtimes(config, **{"api.model": "openai/fake-model", "api.api_base": server.base_url})
    return make


# ---- item 1: a retried persist writes the round's LLM calls once ------------------------------------

def _round_outcome(rt):
    root = add_root(rt)
    candidate = pending(rt, with_c1(rt, "0.7"), root)
    scored = Scored(status=Status.OK, score=-0.07, score_spread=0.0,
                    attempts=(EvalResult(outcome=Outcome.OK, score=-0.07),))
    reply = LLMReply(text="edit", model="m", prompt_tokens=100, completion_tokens=10, cost_usd=0.25)
    calls = [LLMCall(purpose="propose", reply=reply), LLMCall(purpose="analyze", reply=reply)]
    return final_node(candidate, scored, None, {}), scored, calls


def test_a_retried_persist_counts_calls_and_attempts_once(runtimes):
    rt = runtimes()
    node, scored, calls = _round_outcome(rt)
    persist.fn(rt.search_id, node, scored, calls)
    persist.fn(rt.search_id, node, scored, calls)  # what a Prefect retry does
    usage = rt.tree.usage_totals()
    assert (usage["llm_calls"], usage["prompt_tokens"], usage["completion_tokens"]) == (2, 200, 20)
    assert usage["cost_usd"] == 0.5
    assert len(rt.tree.attempts(node.id)) == 1


def test_a_reevaluation_keeps_the_calls_written_before_it(runtimes):
    rt = runtimes()
    node, scored, calls = _round_outcome(rt)
    save(rt, node, scored, calls)
    again = LLMCall(purpose="analyze", reply=LLMReply(text="l", model="m", prompt_tokens=7, completion_tokens=1,
                                                      cost_usd=0.0))
    for _ in range(2):  # written twice: still once
        save(rt, node, scored, [again], first_attempt=2)
    assert [c["first_attempt"] for c in rt.tree.llm_calls(node.id)] == [1, 1, 2]
    assert rt.tree.usage_totals()["prompt_tokens"] == 207
    assert [a["attempt"] for a in rt.tree.attempts(node.id)] == [1, 2]
    save(rt, node, scored, [], first_attempt=3)  # a re-evaluation without calls keeps them all
    assert len(rt.tree.llm_calls(node.id)) == 3


# ---- item 3: billed-but-empty replies and the unknown-cost rule -------------------------------------

def test_usage_totals_count_only_responses_with_an_unknown_price_as_unknown(runtimes):
    rt = runtimes()
    node, scored, _ = _round_outcome(rt)
    priced = LLMReply(text="x", model="m", prompt_tokens=5, completion_tokens=1, cost_usd=0.5)
    save(rt, node, scored, [LLMCall(purpose="propose", reply=priced),
                            LLMCall(purpose="propose", error="HTTP 500: no response, nothing billed")])
    usage = rt.tree.usage_totals()
    assert usage["cost_usd"] == 0.5 and usage["calls_with_unknown_cost"] == 0
    unpriced_empty = LLMReply(text="", model="m", prompt_tokens=5, completion_tokens=1, cost_usd=None)
    save(rt, node, scored, [LLMCall(purpose="analyze", reply=unpriced_empty, error="empty reply")], first_attempt=2)
    usage = rt.tree.usage_totals()
    assert usage["cost_usd"] is None and usage["calls_with_unknown_cost"] == 1  # never a partial sum
    assert usage["prompt_tokens"] == 10


def test_empty_replies_of_propose_and_analyze_are_recorded_with_their_usage(online):
    with FakeOpenAIServer(responder=edit_or_lesson, faults=["empty", None, "empty", None]) as server:
        rt = online(server)
        add_root(rt)
        sampled = choose(rt, 1)
        candidate = propose(rt, sampled, [])
        scored = Scored(status=Status.OK, score=-0.02)
        lesson, call = write_lesson(rt, sampled, candidate, scored)
    assert server.fault_log == ["empty", None, "empty", None] and server.errors == []
    assert [(c.purpose, c.error) for c in candidate.llm_calls] == [("propose", "empty reply"), ("propose", None)]
    assert candidate.node.prompt_tokens == sum(c.reply.prompt_tokens for c in candidate.llm_calls)
    assert lesson == LESSON
    save(rt, final_node(candidate, scored, lesson, {}), scored, [*candidate.llm_calls, call])
    stored = rt.tree.llm_calls(candidate.node.id)
    assert sorted((c["purpose"], c["error"] or "") for c in stored) == [
        ("analyze", ""), ("analyze", "empty reply"), ("propose", ""), ("propose", "empty reply")]
    usage = rt.tree.usage_totals()
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == billed_tokens(server)
    assert rt.unused_analysis == {} and rt.call_log == {}


def test_an_analyst_that_only_answers_empty_is_still_billed(online):
    with FakeOpenAIServer(responder=edit_or_lesson, faults=[None, "empty", "empty"]) as server:
        rt = online(server)
        add_root(rt)
        sampled = choose(rt, 1)
        candidate = propose(rt, sampled, [])
        scored = Scored(status=Status.OK, score=-0.02)
        with pytest.raises(EmptyReplyError):
            write_lesson(rt, sampled, candidate, scored)
    save(rt, final_node(candidate, scored, None, {}), scored, list(candidate.llm_calls))
    assert [c["error"] for c in rt.tree.llm_calls(candidate.node.id)] == [None, "empty reply", "empty reply"]
    assert rt.tree.usage_totals()["prompt_tokens"] == billed_tokens(server)[0]


# ---- item 2: replies already paid for survive a later failure or a Prefect retry --------------------

def test_a_failed_round_keeps_the_replies_it_paid_for(online):
    # Reply 1 is prose (no edit: the model is asked again), request 2 fails: LLMError.
    with FakeOpenAIServer(responder=edit_or_lesson, faults=["prose", "500"]) as server:
        rt = online(server)
        add_root(rt)
        sampled = choose(rt, 1)
        with pytest.raises(LLMError) as failure:
            propose(rt, sampled, [])
    candidate = unavailable(rt, sampled, failure.value)
    assert candidate.node.status == Status.REJECTED and candidate.node.error.startswith("LLM unavailable: ")
    assert [(c.reply is not None, c.error is not None) for c in candidate.llm_calls] == [(True, False), (False, True)]
    assert candidate.node.prompt_tokens == billed_tokens(server)[0]
    save(rt, final_node(candidate, Scored(status=Status.REJECTED), None, {}), Scored(status=Status.REJECTED),
         list(candidate.llm_calls))
    assert rt.tree.usage_totals()["prompt_tokens"] == billed_tokens(server)[0]
    assert rt.call_log == {}  # cleared once persisted


@flow(name="generate-with-one-retry")
def generate_with_one_retry(search_id: str):
    """Runs the generate task of round 1 as a round does, with one Prefect retry on LLMError."""
    task = with_retries(generate, TaskRetry(retries=1, delay_s=0.0), only_for=(LLMError,))
    return task(search_id, choose(get_runtime(search_id), 1), [])


@pytest.mark.usefixtures("prefect_server")
def test_a_prefect_retry_of_generate_keeps_the_replies_of_the_failed_try(online):
    # Try 1: prose, then HTTP 500 (LLMError: Prefect retries the task). Try 2: a valid edit.
    with FakeOpenAIServer(responder=edit_or_lesson, faults=["prose", "500", None]) as server:
        rt = online(server)
        add_root(rt)
        candidate = generate_with_one_retry(rt.search_id)
    assert server.fault_log == ["prose", "500", None]
    assert candidate.node.status == Status.PENDING
    assert [c.reply.text[:20] for c in candidate.llm_calls] == [PROSE_REPLY[:20], "MOTIVATION: raise C1"]
    assert candidate.node.prompt_tokens == billed_tokens(server)[0]


# ---- item 6: only evaluated programs enter the near-duplicate index ---------------------------------

def test_only_evaluated_programs_reject_near_duplicates(runtimes):
    rt = runtimes(**{"dedup.near_threshold": 0.998})  # C1 = 0.81 vs 0.811: cosine 0.9989 here
    root = add_root(rt)
    first = pending(rt, with_c1(rt, "0.81"), root)
    assert first.node.status == Status.PENDING and first.node.id not in rt.near_duplicates
    infra = Scored(status=Status.INFRA_FAILED, error="evaluator down")
    save(rt, final_node(first, infra, None, {}), infra, [])
    assert first.node.id not in rt.near_duplicates  # never evaluated: must not reject others
    second = pending(rt, with_c1(rt, "0.811"), root, 2)
    assert second.node.status == Status.PENDING
    ok = Scored(status=Status.OK, score=-0.02)
    save(rt, final_node(second, ok, None, {}), ok, [])
    save(rt, final_node(second, ok, None, {}), ok, [])  # a retried persist indexes it once
    assert second.node.id in rt.near_duplicates and rt.near_duplicates._ids.count(second.node.id) == 1
    third = pending(rt, with_c1(rt, "0.81"), root, 3)  # the infra_failed code again: near the ok one
    assert third.node.status == Status.REJECTED
    assert third.node.error.startswith(f"near-duplicate of node {second.node.id} (similarity 0.99")
    assert rt.stats.near_duplicates == 1
