"""Immutable records that pass between the stages of a round."""
from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Status(str, enum.Enum):
    """What became of a candidate node."""

    PENDING = "pending"  # proposed, evaluation in flight
    OK = "ok"  # evaluated, has a confirmed score
    CANDIDATE_ERROR = "candidate_error"  # the program raised, was invalid or timed out
    INFRA_FAILED = "infra_failed"  # the evaluator failed for reasons outside the candidate
    REJECTED = "rejected"  # never evaluated: edit did not apply, duplicate, no valid reply
    ABANDONED = "abandoned"  # in flight when the search process died


class Outcome(str, enum.Enum):
    """Classification of one evaluation attempt."""

    OK = "ok"
    CANDIDATE_ERROR = "candidate_error"
    INFRA_ERROR = "infra_error"


class EvalResult(Frozen):
    """One run of the user's evaluator on one candidate."""

    outcome: Outcome
    score: float | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    exit_code: int | None = None
    duration_s: float = 0.0
    stdout_tail: str = ""
    stderr_tail: str = ""
    # What the evaluator said beyond numbers (artifacts, text feedback, its error text), shown to
    # the LLM when this node is a parent; private metrics are stored but never shown.
    feedback: dict[str, str] = Field(default_factory=dict)
    private_metrics: dict[str, Any] = Field(default_factory=dict)


class NodeSummary(Frozen):
    """What a sampler may know about a node: no code, no DB handle."""

    id: int
    parent_id: int | None
    round: int
    score: float | None
    status: Status
    visits: int = 0
    island: int = 0
    metrics: dict[str, Any] = Field(default_factory=dict)


class SampleChoice(Frozen):
    """A sampler's answer: the parent to edit, other nodes to show, and the child's island."""

    parent_id: int
    inspiration_ids: tuple[int, ...] = ()
    island: int = 0


class Node(Frozen):
    """A candidate program in the experiment tree."""

    id: int
    parent_id: int | None
    round: int
    code: str
    code_hash: str
    motivation: str = ""
    edit: str = ""
    score: float | None = None
    score_spread: float | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    status: Status = Status.PENDING
    error: str | None = None
    analysis: str | None = None
    notes: str = ""  # what the framework did beyond the plan, e.g. why a score was re-run
    feedback: dict[str, str] = Field(default_factory=dict)  # see EvalResult.feedback
    private_metrics: dict[str, Any] = Field(default_factory=dict)  # never shown to the LLM
    island: int = 0
    visits: int = 0
    timings: dict[str, float] = Field(default_factory=dict)
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None

    def summary(self) -> NodeSummary:
        return NodeSummary(
            id=self.id, parent_id=self.parent_id, round=self.round, score=self.score,
            status=self.status, visits=self.visits, island=self.island, metrics=self.metrics,
        )


class Retrieved(Frozen):
    """A knowledge item or lesson found for a prompt."""

    kind: str  # "knowledge" or "lesson"
    title: str
    content: str
    node_id: int | None = None
    score: float | None = None


class LLMReply(Frozen):
    """Text and accounting of one LLM call."""

    text: str
    model: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None  # None when the provider's price is unknown, never 0 by default
    latency_s: float = 0.0
    rate_wait_s: float = 0.0  # waited for api rate limits before its requests (not part of latency_s)


class LLMCall(Frozen):
    """One LLM call made for a node: its reply, or the error it ended with."""

    purpose: str  # "propose" or "analyze"
    reply: LLMReply | None = None
    error: str | None = None


class Sampled(Frozen):
    """The sample step's result: the new node's id and what the proposer will see."""

    node_id: int
    round: int
    island: int
    parent: Node
    inspirations: tuple[Node, ...] = ()
    failures: tuple[Node, ...] = ()


class Candidate(Frozen):
    """The generate step's result: a pending node to evaluate, or a rejected one."""

    node: Node
    llm_calls: tuple[LLMCall, ...] = ()


class Scored(Frozen):
    """The evaluate step's result: the node's status and confirmed score."""

    status: Status
    score: float | None = None
    score_spread: float | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    notes: str = ""
    feedback: dict[str, str] = Field(default_factory=dict)
    private_metrics: dict[str, Any] = Field(default_factory=dict)
    attempts: tuple[EvalResult, ...] = ()
