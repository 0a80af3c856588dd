"""Uniform parent selection: a baseline that ignores scores entirely."""
from __future__ import annotations

import random
from typing import Sequence

from evolveflow.records import NodeSummary, SampleChoice
from evolveflow.samplers.base import check_request, require_eligible


class RandomSampler:
    """Parent and distinct inspirations drawn uniformly from the eligible nodes."""

    def choose(
        self, nodes: Sequence[NodeSummary], n: int, rng: random.Random, round: int
    ) -> SampleChoice:
        """Uniform parent; up to n-1 uniform inspirations distinct from it."""
        check_request(n, round)
        usable = require_eligible(nodes)
        parent = rng.choice(usable)
        others = [node for node in usable if node is not parent]
        inspirations = rng.sample(others, min(n - 1, len(others)))
        return SampleChoice(
            parent_id=parent.id,
            inspiration_ids=tuple(node.id for node in inspirations),
            island=parent.island,
        )

    def __repr__(self) -> str:
        return "RandomSampler()"
