"""analyze: turn a round's outcome into a short, reusable lesson."""
from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from evolveflow.llm.offline import analyst_reply
from evolveflow.prompts import build_analysis_messages
from evolveflow.records import Candidate, LLMCall, Sampled, Scored, Status
from evolveflow.runtime import Runtime, get_runtime
from tasks.generate import call_llm


def _fmt(score: float | None) -> str:
    return "none" if score is None else f"{score:.6g}"


def facts(sampled: Sampled, candidate: Candidate, scored: Scored) -> dict[str, str]:
    """Returns the facts of an outcome, as shown to the analyst."""
    node, parent = candidate.node, sampled.parent
    out = {
        "node": str(node.id), "parent": str(parent.id),
        "change": (node.motivation.strip().splitlines() or ["an edit"])[0][:300],
        "status": scored.status.value, "parent score": _fmt(parent.score), "score": _fmt(scored.score),
    }
    if scored.score is not None and parent.score is not None:
        out["delta"] = f"{scored.score - parent.score:+.6g}"
    if scored.error:
        out["error"] = " ".join(scored.error.strip().splitlines()[-3:])[:500]
    if scored.metrics:
        out["metrics"] = ", ".join(f"{k}={v}" for k, v in sorted(scored.metrics.items()))[:500]
    return out


def write_lesson(rt: Runtime, sampled: Sampled, candidate: Candidate, scored: Scored) -> tuple[str | None, LLMCall | None]:
    """Returns the lesson for an evaluated node (None for nodes that never ran) and its LLM call.

    Empty analyst replies are billed too: they wait in the runtime until persist writes them.
    """
    if scored.status not in (Status.OK, Status.CANDIDATE_ERROR):
        return None, None
    found = facts(sampled, candidate, scored)
    messages = build_analysis_messages(rt.templates, found, candidate.node.motivation, candidate.node.edit)
    billed = rt.unused_analysis.setdefault(candidate.node.id, [])
    with rt.slot(rt.llm_slots):
        reply = call_llm(rt.config.api, messages, rt.config.api.analyst(), seed=None, purpose="analyze", billed=billed,
                         limiter=rt.rate_limiter)
    return reply.text.strip(), LLMCall(purpose="analyze", reply=reply)


def fallback_lesson(sampled: Sampled, candidate: Candidate, scored: Scored, error: BaseException) -> tuple[str, LLMCall]:
    """Returns a factual lesson when the analyst model failed, and the failed call."""
    messages = "## Facts\n" + "\n".join(f"{k}: {v}" for k, v in facts(sampled, candidate, scored).items())
    return analyst_reply(messages), LLMCall(purpose="analyze", error=str(error)[:1000])


@task(name="analyze", cache_policy=NO_CACHE)
def analyze(search_id: str, sampled: Sampled, candidate: Candidate, scored: Scored) -> tuple[str | None, LLMCall | None]:
    """Writes a lesson about this round's outcome."""
    return write_lesson(get_runtime(search_id), sampled, candidate, scored)
