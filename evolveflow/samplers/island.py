"""Island model with a MAP-Elites grid per island, computed purely from the node records."""
from __future__ import annotations

import random
from typing import Any, Iterable, Sequence

from evolveflow.records import NodeSummary, SampleChoice
from evolveflow.samplers.base import by_score, check_request, rank, require_eligible
from evolveflow.samplers.grid import elites, parse_descriptors


def _migration_order(node: NodeSummary) -> tuple[float, int, int]:
    # Migration must not depend on the rng (it is a fact about the records), so
    # equal scores go to the older node, then the lower id.
    return (-by_score(node), node.round, node.id)


class IslandSampler:
    """Breed each round on one island, choosing the parent uniformly over its grid's elites.

    Islands. The round's island is ``round % num_islands``; a node belongs to
    island ``node.island % num_islands`` (so lowering num_islands mid-run keeps
    old nodes reachable). The child is assigned to the round's island.

    Migration, as a pure function of the records. Epochs fall at rounds
    ``migration_interval, 2*migration_interval, ...``. At each epoch ``e`` up to
    the current round, island ``i`` receives the best ``migration_count``
    eligible nodes of its ring neighbour ``(i - 1) % num_islands`` among those
    created in a round before ``e`` (score ties go to the older node). Migrants
    stay in the pool afterwards, as they would after a real copy. The cut-off is
    strict (``round < e``) because a node of round ``e`` is not evaluated yet
    when round ``e`` samples, so ``<=`` would let the migrant set change later
    within the same epoch.

    Pool. The island's own eligible nodes plus its migrants. An empty pool (all
    islands start empty) is seeded with the global best eligible node, so the
    island fills up with that node's children.

    Grid. With ``descriptors`` given as ``(metric_name, lo, hi, bins)`` rows,
    each pool node sits in the cell given by binning its metrics over [lo, hi]
    (values outside are clamped); a node missing a descriptor metric, or whose
    value is not a number, sits in one shared "unknown" cell. The elites are
    the best node of each occupied cell. The parent is drawn uniformly over
    the elites, so a crowded region of behaviour space cannot dominate
    selection; inspirations are other elites drawn by the rng.

    Without descriptors the grid has a single cell, whose elite would always be
    the island's best. To keep the island exploring, the parent is then the
    winner of a tournament among ``tournament_size`` pool nodes drawn by the
    rng (1 = uniform, pool size = pure elitism), and the inspirations are the
    best other pool nodes.
    """

    def __init__(
        self,
        num_islands: int = 4,
        migration_interval: int = 10,
        migration_count: int = 1,
        descriptors: Iterable[Any] = (),
        tournament_size: int = 2,
    ) -> None:
        _require_at_least("num_islands", num_islands, 1)
        _require_at_least("migration_interval", migration_interval, 1)
        _require_at_least("migration_count", migration_count, 0)
        _require_at_least("tournament_size", tournament_size, 1)
        self.num_islands = num_islands
        self.migration_interval = migration_interval
        self.migration_count = migration_count
        self.descriptors = parse_descriptors(descriptors)
        self.tournament_size = tournament_size

    def island_for_round(self, round: int) -> int:
        """The island that breeds in this round."""
        return round % self.num_islands

    def pool(self, nodes: Sequence[NodeSummary], round: int) -> list[NodeSummary]:
        """Eligible nodes the round's island may breed from: its own plus migrants (may be empty)."""
        island = self.island_for_round(round)
        usable = require_eligible(nodes)
        own = [node for node in usable if node.island % self.num_islands == island]
        own_ids = {node.id for node in own}
        return own + [node for node in self._migrants(usable, island, round) if node.id not in own_ids]

    def _migrants(
        self, usable: list[NodeSummary], island: int, round: int
    ) -> list[NodeSummary]:
        if self.num_islands == 1 or self.migration_count == 0:
            return []
        neighbour = (island - 1) % self.num_islands
        arrivals = sorted(
            (node for node in usable if node.island % self.num_islands == neighbour),
            key=lambda node: node.round,
        )
        latest_epoch = (round // self.migration_interval) * self.migration_interval
        migrants: dict[int, NodeSummary] = {}
        best: list[NodeSummary] = []
        next_arrival = 0
        for epoch in range(self.migration_interval, latest_epoch + 1, self.migration_interval):
            grew = False
            while next_arrival < len(arrivals) and arrivals[next_arrival].round < epoch:
                best.append(arrivals[next_arrival])
                next_arrival += 1
                grew = True
            if grew:  # the neighbour's top nodes only change when it gained nodes
                best = sorted(best, key=_migration_order)[: self.migration_count]
                migrants.update((node.id, node) for node in best)
        return list(migrants.values())

    def choose(
        self, nodes: Sequence[NodeSummary], n: int, rng: random.Random, round: int
    ) -> SampleChoice:
        """Parent uniform over the island's grid elites; inspirations other elites."""
        check_request(n, round)
        pool = self.pool(nodes, round) or [rank(require_eligible(nodes), by_score, rng)[0]]
        if self.descriptors:
            candidates = elites(pool, self.descriptors, rng)
            parent = rng.choice(candidates)
            others = [node for node in candidates if node is not parent]
            inspirations = rng.sample(others, min(n - 1, len(others)))
        else:
            contenders = rng.sample(pool, min(self.tournament_size, len(pool)))
            parent = rank(contenders, by_score, rng)[0]
            inspirations = [node for node in rank(pool, by_score, rng) if node is not parent][: n - 1]
        return SampleChoice(
            parent_id=parent.id,
            inspiration_ids=tuple(node.id for node in inspirations),
            island=self.island_for_round(round),
        )

    def __repr__(self) -> str:
        return (
            f"IslandSampler(num_islands={self.num_islands}, "
            f"migration_interval={self.migration_interval}, "
            f"migration_count={self.migration_count}, descriptors={self.descriptors!r}, "
            f"tournament_size={self.tournament_size})"
        )


def _require_at_least(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"island sampler {name} must be a whole number >= {minimum}, got {value!r}")
