"""Greedy parent selection: always build on the best-scoring nodes."""
from __future__ import annotations

import random
from typing import Sequence

from evolveflow.records import NodeSummary, SampleChoice
from evolveflow.samplers.base import by_score, check_request, rank, require_eligible


class GreedySampler:
    """Parent = the best-scoring eligible node; inspirations = the next best.

    With ``top_k`` set, the parent is instead drawn uniformly from the top_k
    nodes by score (ties in the ranking broken by the rng), which keeps some
    diversity without ever building on a poor node. Inspirations are then the
    best nodes other than the drawn parent. The child stays on the parent's
    island.
    """

    def __init__(self, top_k: int | None = None) -> None:
        if top_k is not None and top_k < 1:
            raise ValueError(
                f"greedy top_k must be 1 or greater, got {top_k}; "
                "leave it unset to always take the single best node"
            )
        self.top_k = top_k

    def choose(
        self, nodes: Sequence[NodeSummary], n: int, rng: random.Random, round: int
    ) -> SampleChoice:
        """Parent = best (or uniform among top_k); inspirations = next best n-1."""
        check_request(n, round)
        ranked = rank(require_eligible(nodes), by_score, rng)
        parent = ranked[0] if self.top_k is None else rng.choice(ranked[: self.top_k])
        others = [node for node in ranked if node is not parent]
        return SampleChoice(
            parent_id=parent.id,
            inspiration_ids=tuple(node.id for node in others[: n - 1]),
            island=parent.island,
        )

    def __repr__(self) -> str:
        return f"GreedySampler(top_k={self.top_k!r})"
