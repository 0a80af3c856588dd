"""UCB1 parent selection: balance a node's score against how rarely it was expanded."""
from __future__ import annotations

import math
import random
from typing import Sequence

from evolveflow.records import NodeSummary, SampleChoice
from evolveflow.samplers.base import check_request, rank, require_eligible


class UCB1Sampler:
    """Pick the node with the highest upper confidence bound.

    For every eligible node::

        value = normalised_score + c * sqrt(ln(N + 1) / (visits + 1))

    where ``normalised_score`` is min-max scaled over the eligible nodes (0.5
    for all when every score is equal), ``visits`` is how often the node was
    already chosen as a parent and ``N`` is the sum of visits over the eligible
    nodes. The ``+ 1`` terms keep unvisited nodes finite and give a zero bonus
    before anything was expanded. The parent is the argmax (ties broken by the
    rng), the inspirations the next best n-1 by the same value, and the child
    stays on the parent's island.
    """

    def __init__(self, c: float = 1.0) -> None:
        if not c >= 0:  # also rejects NaN
            raise ValueError(
                f"UCB1 exploration constant c must be 0 or greater, got {c}; "
                "use 0 for pure exploitation"
            )
        self.c = c

    def values(self, nodes: Sequence[NodeSummary]) -> dict[int, float]:
        """UCB1 value of every eligible node, keyed by node id."""
        return self._values(require_eligible(nodes))

    def _values(self, usable: list[NodeSummary]) -> dict[int, float]:
        scores = [node.score for node in usable]
        low, high = min(scores), max(scores)
        total_visits = sum(node.visits for node in usable)
        log_total = math.log(total_visits + 1)

        def normalised(score: float) -> float:
            return 0.5 if high == low else (score - low) / (high - low)

        return {
            node.id: normalised(node.score) + self.c * math.sqrt(log_total / (node.visits + 1))
            for node in usable
        }

    def choose(
        self, nodes: Sequence[NodeSummary], n: int, rng: random.Random, round: int
    ) -> SampleChoice:
        """Parent = highest UCB1 value; inspirations = the next n-1 by value."""
        check_request(n, round)
        usable = require_eligible(nodes)
        value_of = self._values(usable)
        ranked = rank(usable, lambda node: value_of[node.id], rng)
        parent = ranked[0]
        return SampleChoice(
            parent_id=parent.id,
            inspiration_ids=tuple(node.id for node in ranked[1:n]),
            island=parent.island,
        )

    def __repr__(self) -> str:
        return f"UCB1Sampler(c={self.c!r})"
