"""Circuit breakers, unit level: rounds in a row of a down LLM or evaluator trip them; one good round resets."""
from __future__ import annotations

from evolveflow.breakers import Breakers
from evolveflow.records import Candidate, LLMCall, LLMReply, Node, Scored, Status
from flows.round import evaluator_outcome, proposal_outcome


def rounds(breakers: Breakers, *summaries: dict) -> str | None:
    for summary in summaries:
        breakers.observe(summary)
    return breakers.tripped()


DOWN = {"llm": "failed", "evaluator": None, "error": "LLM unavailable: 503 Service Unavailable"}
PROSE = {"llm": "unusable", "evaluator": None, "error": "no valid edit in 2 replies"}
GOOD = {"llm": "ok", "evaluator": "ok"}
INFRA = {"llm": "ok", "evaluator": "infra", "error": "GPU node unavailable"}


def test_the_llm_breaker_trips_after_n_rounds_in_a_row_and_names_the_error():
    assert rounds(Breakers(3, 3), DOWN, DOWN) is None
    reason = rounds(Breakers(3, 3), DOWN, DOWN, DOWN)
    assert "LLM failed every call for 3 rounds in a row" in reason and "503 Service Unavailable" in reason


def test_a_good_round_resets_the_count():
    assert rounds(Breakers(3, 3), DOWN, DOWN, GOOD, DOWN, DOWN) is None


def test_replies_without_a_usable_edit_trip_too_and_a_duplicate_is_usable():
    assert "no usable reply for 3 rounds" in rounds(Breakers(3, 3), PROSE, DOWN, PROSE)
    assert rounds(Breakers(3, 3), PROSE, PROSE, {"llm": "ok", "evaluator": None}, PROSE) is None


def test_the_evaluator_breaker_counts_evaluated_rounds_only():
    not_evaluated = {"llm": "ok", "evaluator": None}
    assert rounds(Breakers(5, 2), INFRA, not_evaluated) is None
    assert "only infrastructure failures for 2 rounds" in rounds(Breakers(5, 2), INFRA, not_evaluated, INFRA)
    assert rounds(Breakers(5, 2), INFRA, GOOD, INFRA) is None


def test_none_turns_a_breaker_off():
    assert rounds(Breakers(None, None), *[DOWN] * 50, *[INFRA] * 50) is None


def _rejected(code_hash: str, calls: tuple) -> Candidate:
    return Candidate(node=Node(id=2, parent_id=1, round=1, code="x", code_hash=code_hash,
                               status=Status.REJECTED, error="e"), llm_calls=calls)


def test_round_outcomes_tell_a_down_llm_from_garbage_and_from_a_duplicate():
    reply = LLMReply(text="prose", model="m")
    assert proposal_outcome(_rejected("", (LLMCall(purpose="propose", error="503"),))) == "failed"
    assert proposal_outcome(_rejected("", (LLMCall(purpose="propose", reply=reply),))) == "unusable"
    assert proposal_outcome(_rejected("abc", (LLMCall(purpose="propose", reply=reply),))) == "ok"  # duplicate
    assert evaluator_outcome(Scored(status=Status.INFRA_FAILED)) == "infra"
    assert evaluator_outcome(Scored(status=Status.CANDIDATE_ERROR)) == "ok"
    assert evaluator_outcome(Scored(status=Status.REJECTED)) is None


def test_storage_failures_are_told_from_other_errors_through_the_cause_chain():
    import errno

    from storage.failures import storage_failure

    assert storage_failure(OSError(errno.ENOSPC, "No space left on device"))
    assert storage_failure(RuntimeError('Failed to commit: Could not write file "t.wal": No space left on device'))
    try:
        try:
            raise OSError(errno.EROFS, "Read-only file system")
        except OSError as inner:
            raise ValueError("lance write failed") from inner
    except ValueError as outer:
        assert storage_failure(outer)
    assert not storage_failure(ValueError("no valid edit"))
    assert not storage_failure(OSError(errno.ENOENT, "missing"))
