"""The built-in offline "models", served to litellm as the custom provider `offline/`.

`offline/mutator` is not an LLM: it is a seeded mutation operator. It reads the current program
(and the inspirations) from the proposal prompt and answers with valid SEARCH/REPLACE edits that
perturb numeric constants inside the EVOLVE-BLOCK, or copy a constant from an inspiration.
`offline/analyst` writes a factual lesson from the facts of an analysis prompt.
Both make searches run with no API key and no network; real discovery needs a real LLM.
"""
from __future__ import annotations

import hashlib
import random
import time
from typing import Any

import litellm
from litellm import CustomLLM
from litellm.types.utils import Choices, Message, ModelResponse, Usage

from evolveflow.mutation import NothingToMutate, propose_mutation
from evolveflow.prompts import facts_in_prompt, programs_in_prompt

PROVIDER = "offline"


def _prompt_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "user")


def _rng(seed: Any, prompt: str) -> random.Random:
    # Same seed and same prompt give the same answer; a different prompt gives another draw.
    digest = hashlib.sha256(f"{seed}|{prompt}".encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


def mutator_reply(prompt: str, seed: Any) -> str:
    """Returns a reply with SEARCH/REPLACE edits for the program in a proposal prompt."""
    parent, inspirations = programs_in_prompt(prompt)
    if parent is None:
        return "MOTIVATION: I found no program in the prompt, so I cannot propose an edit."
    try:
        mutation = propose_mutation(parent, _rng(seed, prompt), inspirations)
    except NothingToMutate as exc:
        return f"MOTIVATION: nothing to mutate: {exc}"
    blocks = "\n\n".join(
        f"<<<<<<< SEARCH\n{search.rstrip(chr(10))}\n=======\n{replace.rstrip(chr(10))}\n>>>>>>> REPLACE"
        for search, replace in mutation.edits
    )
    return f"MOTIVATION: {mutation.description}\n\n{blocks}\n"


def analyst_reply(prompt: str) -> str:
    """Returns a factual lesson built from the facts of an analysis prompt."""
    facts = facts_in_prompt(prompt)
    change = facts.get("change", "an edit")
    status = facts.get("status", "unknown")
    parent_score = facts.get("parent score", "none")
    if status != "ok":
        reason = facts.get("error", "no reason recorded")
        return f"{change} (from node {facts.get('parent', '?')}) failed with {status}: {reason}"
    delta = facts.get("delta", "unknown")
    verdict = "improved" if delta.startswith("+") and delta.strip("+0.e") else (
        "worsened" if delta.startswith("-") else "did not change")
    return (
        f"{change} {verdict} the score: {parent_score} -> {facts.get('score', '?')} "
        f"(delta {delta}) on node {facts.get('node', '?')}."
    )


class OfflineProvider(CustomLLM):
    """litellm custom provider answering for offline/mutator and offline/analyst."""

    def completion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> ModelResponse:
        started = time.perf_counter()
        prompt = _prompt_text(messages)
        optional = kwargs.get("optional_params") or {}
        if model == "mutator":
            text = mutator_reply(prompt, optional.get("seed"))
        elif model == "analyst":
            text = analyst_reply(prompt)
        else:
            raise litellm.BadRequestError(
                message=f"unknown offline model 'offline/{model}': use offline/mutator or offline/analyst",
                model=model, llm_provider=PROVIDER,
            )
        prompt_tokens = len(prompt) // 4 + 1
        completion_tokens = len(text) // 4 + 1
        response = ModelResponse(
            model=f"{PROVIDER}/{model}",
            choices=[Choices(index=0, finish_reason="stop", message=Message(role="assistant", content=text))],
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                        total_tokens=prompt_tokens + completion_tokens),
        )
        # Local and free: the cost is known to be zero, unlike an unpriced hosted model.
        response._hidden_params["response_cost"] = 0.0
        response._hidden_params["offline_latency_s"] = time.perf_counter() - started
        return response

    async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> ModelResponse:
        return self.completion(model, messages, *args, **kwargs)


_HANDLER = OfflineProvider()


def register_offline_provider() -> None:
    """Makes `offline/...` model strings reach the built-in offline models (idempotent)."""
    existing = [p for p in (litellm.custom_provider_map or []) if p.get("provider") != PROVIDER]
    litellm.custom_provider_map = existing + [{"provider": PROVIDER, "custom_handler": _HANDLER}]
    # litellm reads the map into its provider list when it changes.
    from litellm.utils import custom_llm_setup

    custom_llm_setup()
