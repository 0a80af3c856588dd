"""The Sampler protocol and the helpers every parent sampler shares."""
from __future__ import annotations

import math
import random
from collections import Counter
from typing import Callable, Protocol, Sequence, runtime_checkable

from evolveflow.records import NodeSummary, SampleChoice, Status


class NoParentError(Exception):
    """No node is eligible to be a parent, so no child can be proposed."""


@runtime_checkable
class Sampler(Protocol):
    """Choose a parent and up to n-1 inspirations among the eligible nodes."""

    def choose(
        self, nodes: Sequence[NodeSummary], n: int, rng: random.Random, round: int
    ) -> SampleChoice: ...


def eligible(nodes: Sequence[NodeSummary]) -> list[NodeSummary]:
    """Nodes that may be parents: evaluated OK with a finite score."""
    # A NaN score cannot be ordered and an infinite one breaks min-max
    # normalisation, so such nodes are treated as having no usable score.
    return [
        node for node in nodes
        if node.status == Status.OK and node.score is not None and math.isfinite(node.score)
    ]


def require_eligible(nodes: Sequence[NodeSummary]) -> list[NodeSummary]:
    """Return the eligible nodes, or raise NoParentError saying why there are none."""
    usable = eligible(nodes)
    if usable:
        return usable
    if not nodes:
        raise NoParentError(
            "no nodes at all: the initial program must be added and evaluated first"
        )
    by_status = Counter(_describe_ineligible(node) for node in nodes)
    breakdown = ", ".join(f"{count} {what}" for what, count in sorted(by_status.items()))
    raise NoParentError(
        f"no evaluated node with a score yet ({breakdown}): "
        "the initial program must be evaluated first"
    )


def _describe_ineligible(node: NodeSummary) -> str:
    if node.status != Status.OK:
        return node.status.value
    return "ok but without a finite score"


def check_request(n: int, round: int) -> None:
    """Reject a nonsensical request before any sampling happens."""
    if n < 1:
        raise ValueError(
            f"n must be at least 1 (the parent itself), got {n}; "
            "use n=1 for a parent without inspirations"
        )
    if round < 0:
        raise ValueError(f"round must be 0 or greater, got {round}")


def rank(
    nodes: Sequence[NodeSummary], key: Callable[[NodeSummary], float], rng: random.Random
) -> list[NodeSummary]:
    """Nodes sorted best-first by key, equal keys ordered by the rng."""
    # One draw per node, in input order, keeps the result a pure function of
    # (nodes, rng state) while making ties fair rather than id- or order-biased.
    tie_breaks = [rng.random() for _ in nodes]
    order = sorted(range(len(nodes)), key=lambda i: (-key(nodes[i]), tie_breaks[i]))
    return [nodes[i] for i in order]


def by_score(node: NodeSummary) -> float:
    """Sort key for eligible nodes: their score (higher is better)."""
    assert node.score is not None, "by_score is only meant for eligible nodes"
    return node.score
