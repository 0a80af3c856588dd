"""generate: ask the LLM for a new candidate and turn its reply into a program (or a rejection)."""
from __future__ import annotations

import os
from typing import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from evolveflow.config import ApiConfig
from evolveflow.edits import REPLY_FORMAT, EditError, apply_proposal, code_hash, parse_reply, unified_diff
from evolveflow.llm.client import complete
from evolveflow.llm.rate_limit import Limiter
from evolveflow.prompts import build_proposal_messages
from evolveflow.records import Candidate, LLMCall, LLMReply, Node, Retrieved, Sampled, Status
from evolveflow.runtime import Runtime, get_runtime


def call_llm(api: ApiConfig, messages: list[dict], model: str, seed: int | None,
             purpose: str = "propose", billed: list[LLMCall] | None = None,
             limiter: Limiter | None = None) -> LLMReply:
    """Returns one reply from the configured model, with retries and fallbacks, within `limiter`'s rate.

    Replies that came back empty were paid for all the same: each is appended to `billed` as a
    failed call with its usage, also when the call ends in an error.
    """
    empty: list[LLMReply] = []
    try:
        return complete(
            messages, model=model, api_base=api.api_base,
            api_key=os.environ.get(api.api_key_env) if api.api_key_env else None,
            temperature=api.temperature, max_tokens=api.max_tokens, timeout_s=api.timeout_s,
            num_retries=api.num_retries, fallbacks=api.fallbacks, retry_backoff_s=api.retry_backoff_s,
            seed=seed if api.seed is None else api.seed, ledger=empty, limiter=limiter,
        )
    finally:
        if billed is not None:
            billed.extend(LLMCall(purpose=purpose, reply=r, error="empty reply") for r in empty)


def _seed(rt: Runtime, node_id: int, attempt: int) -> int | None:
    # The offline mutator needs a seed to be reproducible; hosted models get one only if asked.
    if rt.config.api.model.startswith("offline/"):
        return rt.config.pipeline.seed * 1_000_003 + node_id * 101 + attempt
    return None


def usage_of(calls: Sequence[LLMCall]) -> dict:
    replies = [c.reply for c in calls if c.reply is not None]
    costs = [r.cost_usd for r in replies]
    return {
        "model": replies[-1].model if replies else None,
        "prompt_tokens": sum(r.prompt_tokens or 0 for r in replies) if replies else None,
        "completion_tokens": sum(r.completion_tokens or 0 for r in replies) if replies else None,
        # Unknown if any call's price is unknown: a partial sum would look like a real number.
        "cost_usd": sum(costs) if replies and all(c is not None for c in costs) else None,
    }


def propose(rt: Runtime, sampled: Sampled, retrieved: Sequence[Retrieved]) -> Candidate:
    """Returns a pending candidate, or a rejected node saying why no valid program came back.

    Every call is logged in the runtime as it returns, so a Prefect retry of this task, or a later
    call that fails, loses none of the replies already paid for: the Candidate carries them all.
    """
    config = rt.config
    parent = sampled.parent
    messages = build_proposal_messages(
        rt.templates, rt.experiment.problem, parent, sampled.inspirations, sampled.failures,
        retrieved, REPLY_FORMAT, config.prompts.max_code_chars,
        config.prompts.max_metrics_chars, config.prompts.max_feedback_chars,
    )
    log = rt.call_log.setdefault(sampled.node_id, [])
    base = Node(
        id=sampled.node_id, parent_id=parent.id, round=sampled.round, code=parent.code,
        code_hash="", island=sampled.island, status=Status.REJECTED,
    )
    error = "no reply"
    replies = 0
    for attempt in range(config.api.max_reply_attempts):
        with rt.slot(rt.llm_slots):
            reply = call_llm(config.api, messages, config.api.model, _seed(rt, sampled.node_id, attempt), billed=log,
                             limiter=rt.rate_limiter)
        log.append(LLMCall(purpose="propose", reply=reply))
        replies += 1
        try:
            proposal = parse_reply(reply.text)
            code = apply_proposal(parent.code, proposal)
        except EditError as exc:
            error = f"{type(exc).__name__}: {exc}"
            # Tell the model what was wrong and let it try again within this round.
            messages = messages + [
                {"role": "assistant", "content": reply.text},
                {"role": "user", "content": f"Your reply could not be applied: {error}\n"
                 "Answer again, following the required format exactly."},
            ]
            continue
        node = base.model_copy(update={
            "code": code, "code_hash": code_hash(code), "motivation": proposal.motivation,
            "edit": unified_diff(parent.code, code), "status": Status.PENDING, **usage_of(log),
        })
        return register(rt, Candidate(node=node, llm_calls=tuple(log)))
    rejected = base.model_copy(update={"error": f"no valid edit in {replies} replies; last: {error}",
                                        "code_hash": "", **usage_of(log)})
    return Candidate(node=rejected, llm_calls=tuple(log))


def unavailable(rt: Runtime, sampled: Sampled, error: BaseException) -> Candidate:
    """Returns the rejected candidate of a round whose model never answered usefully.

    It carries every reply already paid for in this round (also by earlier tries), then the error.
    """
    calls = (*rt.call_log.get(sampled.node_id, ()), LLMCall(purpose="propose", error=str(error)[:1000]))
    node = Node(
        id=sampled.node_id, parent_id=sampled.parent.id, round=sampled.round,
        code=sampled.parent.code, code_hash="", island=sampled.island,
        status=Status.REJECTED, error=f"LLM unavailable: {error}", **usage_of(calls),
    )
    return Candidate(node=node, llm_calls=calls)


def register(rt: Runtime, candidate: Candidate) -> Candidate:
    """Rejects an exact or near duplicate, else records the candidate as pending (visible to all workers).

    Near duplicates are checked against evaluated programs only (persist indexes them).
    """
    node = candidate.node
    with rt.tree_lock:
        rt.check_abort()  # an aborted search has recorded its rounds in flight: write no more
        duplicate_of = rt.tree.find_hash(node.code_hash)
        reason = f"duplicate of node {duplicate_of}: not evaluated again" if duplicate_of is not None else None
        if reason is None and rt.near_duplicates is not None:
            near = rt.near_duplicates.nearest(node.code)
            if near is not None:
                reason = f"near-duplicate of node {near[0]} (similarity {near[1]:.3f}): not evaluated"
        if reason is None:
            rt.tree.insert_node(node)
            return candidate
    with rt.stats_lock:
        if reason.startswith("near"):
            rt.stats.near_duplicates += 1
        else:
            rt.stats.duplicates += 1
    rejected = node.model_copy(update={"status": Status.REJECTED, "error": reason})
    return candidate.model_copy(update={"node": rejected})


@task(name="generate", cache_policy=NO_CACHE)
def generate(search_id: str, sampled: Sampled, retrieved: list[Retrieved]) -> Candidate:
    """Asks the LLM for a new candidate program."""
    return propose(get_runtime(search_id), sampled, retrieved)
