"""Tests for the parent samplers: choices on hand-built records, determinism, islands and grid."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from evolveflow.records import NodeSummary, SampleChoice, Status
from evolveflow.samplers import (
    GreedySampler, IslandSampler, NoParentError, RandomSampler, Sampler, UCB1Sampler,
    eligible, make_sampler,
)
from evolveflow.samplers.grid import UNKNOWN_CELL, Descriptor, cell_of, elites, parse_descriptors


def node(id, score, status=Status.OK, visits=0, island=0, round=0, metrics=None):
    return NodeSummary(
        id=id, parent_id=None, round=round, score=score, status=status,
        visits=visits, island=island, metrics=metrics or {},
    )


def all_samplers():
    return [
        UCB1Sampler(), GreedySampler(), GreedySampler(top_k=3), RandomSampler(),
        IslandSampler(num_islands=1), IslandSampler(num_islands=1, descriptors=[("a", 0, 1, 4)]),
    ]


INELIGIBLE = [
    node(100, None, Status.PENDING, visits=0),
    node(101, 99.0, Status.INFRA_FAILED),
    node(102, 99.0, Status.REJECTED),
    node(103, 99.0, Status.CANDIDATE_ERROR),
    node(104, 99.0, Status.ABANDONED),
    node(105, None, Status.OK),
    node(106, float("nan"), Status.OK),
]


# ---------------------------------------------------------------- shared contract


def test_eligible_keeps_only_ok_nodes_with_a_finite_score():
    usable = node(1, 0.5)
    assert eligible([usable, *INELIGIBLE]) == [usable]


@pytest.mark.parametrize("sampler", all_samplers(), ids=repr)
def test_every_sampler_satisfies_the_protocol(sampler):
    assert isinstance(sampler, Sampler)


@pytest.mark.parametrize("sampler", all_samplers(), ids=repr)
def test_no_eligible_node_raises_no_parent_error_saying_why(sampler):
    nodes = [node(1, None, Status.PENDING), node(2, 1.0, Status.INFRA_FAILED), node(3, None, Status.PENDING)]
    with pytest.raises(NoParentError) as raised:
        sampler.choose(nodes, 2, random.Random(0), 0)
    assert str(raised.value) == (
        "no evaluated node with a score yet (1 infra_failed, 2 pending): "
        "the initial program must be evaluated first"
    )


@pytest.mark.parametrize("sampler", all_samplers(), ids=repr)
def test_empty_tree_raises_no_parent_error(sampler):
    with pytest.raises(NoParentError, match="no nodes at all: the initial program must be added"):
        sampler.choose([], 1, random.Random(0), 0)


@pytest.mark.parametrize("sampler", all_samplers(), ids=repr)
def test_n_below_one_is_rejected(sampler):
    with pytest.raises(ValueError, match=r"n must be at least 1 \(the parent itself\), got 0"):
        sampler.choose([node(1, 1.0)], 0, random.Random(0), 0)


@pytest.mark.parametrize("sampler", all_samplers(), ids=repr)
def test_negative_round_is_rejected(sampler):
    with pytest.raises(ValueError, match="round must be 0 or greater, got -1"):
        sampler.choose([node(1, 1.0)], 1, random.Random(0), -1)


@pytest.mark.parametrize("sampler", all_samplers(), ids=repr)
def test_n_beyond_the_available_nodes_gives_fewer_inspirations(sampler):
    nodes = [node(1, 1.0, metrics={"a": 0.1}), node(2, 2.0, metrics={"a": 0.9})]
    choice = sampler.choose(nodes, 10, random.Random(0), 0)
    assert {choice.parent_id, *choice.inspiration_ids} == {1, 2}
    assert len(choice.inspiration_ids) == 1


@pytest.mark.parametrize("sampler", all_samplers(), ids=repr)
def test_ineligible_nodes_are_never_chosen(sampler):
    nodes = [node(1, 1.0, metrics={"a": 0.1}), node(2, 2.0, metrics={"a": 0.9}), *INELIGIBLE]
    rng = random.Random(7)
    for round in range(200):
        choice = sampler.choose(nodes, 5, rng, round)
        assert {choice.parent_id, *choice.inspiration_ids} <= {1, 2}


@pytest.mark.parametrize("sampler", all_samplers(), ids=repr)
def test_choices_are_deterministic_under_a_seeded_rng(sampler):
    # Equal scores and visits make every choice hinge on the rng.
    nodes = [node(i, 1.0, metrics={"a": i / 10}) for i in range(10)]

    def draws(seed):
        rng = random.Random(seed)
        return [sampler.choose(nodes, 3, rng, round) for round in range(30)]

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)  # the rng really matters, so determinism is not vacuous


# ---------------------------------------------------------------- UCB1


def test_ucb1_values_match_hand_computed_golden_numbers():
    nodes = [node(1, 1.0, visits=0), node(2, 3.0, visits=4), node(3, 2.0, visits=1), *INELIGIBLE]
    # Worked by hand: N = 5, ln(6) = 1.791759; normalised scores 0, 1, 0.5.
    # 0 + sqrt(1.791759 / 1), 1 + sqrt(1.791759 / 5), 0.5 + sqrt(1.791759 / 2)
    expected = {1: 1.338566, 2: 1.598625, 3: 1.446509}
    values = UCB1Sampler(c=1.0).values(nodes)
    assert values.keys() == expected.keys()
    for node_id, value in expected.items():
        assert values[node_id] == pytest.approx(value, abs=1e-6)
    choice = UCB1Sampler(c=1.0).choose(nodes, 3, random.Random(0), 0)
    assert choice == SampleChoice(parent_id=2, inspiration_ids=(3, 1), island=0)


def test_ucb1_equal_scores_normalise_to_one_half():
    values = UCB1Sampler(c=0.0).values([node(1, 4.0), node(2, 4.0)])
    assert values == {1: 0.5, 2: 0.5}


def test_ucb1_large_c_explores_an_unvisited_lower_node():
    nodes = [node(1, 10.0, visits=50), node(2, 1.0, visits=0)]
    assert UCB1Sampler(c=5.0).choose(nodes, 1, random.Random(0), 0).parent_id == 2


def test_ucb1_zero_c_exploits_the_visited_high_node():
    nodes = [node(1, 10.0, visits=50), node(2, 1.0, visits=0)]
    assert UCB1Sampler(c=0.0).choose(nodes, 1, random.Random(0), 0).parent_id == 1


def test_ucb1_breaks_ties_with_the_rng():
    nodes = [node(1, 2.0), node(2, 2.0)]
    parents = {UCB1Sampler().choose(nodes, 1, random.Random(seed), 0).parent_id for seed in range(40)}
    assert parents == {1, 2}


def test_ucb1_child_stays_on_the_parent_island():
    choice = UCB1Sampler().choose([node(1, 1.0, island=3), node(2, 0.0, island=1)], 1, random.Random(0), 8)
    assert choice.island == 3


def test_ucb1_rejects_a_negative_exploration_constant():
    with pytest.raises(ValueError, match="c must be 0 or greater, got -1"):
        UCB1Sampler(c=-1)


# ---------------------------------------------------------------- greedy


def test_greedy_takes_the_best_and_the_next_best_as_inspirations():
    nodes = [node(1, 0.2), node(2, 0.9, island=2), node(3, 0.5), node(4, 0.7), *INELIGIBLE]
    choice = GreedySampler().choose(nodes, 3, random.Random(0), 0)
    assert choice == SampleChoice(parent_id=2, inspiration_ids=(4, 3), island=2)


def test_greedy_top_k_draws_the_parent_uniformly_from_the_top_k_only():
    nodes = [node(i, float(i)) for i in range(1, 7)]
    rng = random.Random(3)
    counts = Counter(GreedySampler(top_k=3).choose(nodes, 1, rng, 0).parent_id for _ in range(600))
    assert set(counts) == {4, 5, 6}
    assert all(150 <= count <= 250 for count in counts.values())


def test_greedy_top_k_inspirations_are_the_best_other_nodes():
    nodes = [node(i, float(i)) for i in range(1, 7)]
    for seed in range(20):
        choice = GreedySampler(top_k=3).choose(nodes, 3, random.Random(seed), 0)
        best_others = [i for i in (6, 5, 4, 3) if i != choice.parent_id][:2]
        assert choice.inspiration_ids == tuple(best_others)


def test_greedy_rejects_a_top_k_below_one():
    with pytest.raises(ValueError, match="greedy top_k must be 1 or greater, got 0"):
        GreedySampler(top_k=0)


# ---------------------------------------------------------------- random


def test_random_covers_every_eligible_node_and_inspirations_are_distinct():
    nodes = [node(i, float(i)) for i in range(8)] + INELIGIBLE
    rng = random.Random(11)
    parents = Counter()
    for _ in range(800):
        choice = RandomSampler().choose(nodes, 4, rng, 0)
        parents[choice.parent_id] += 1
        picked = [choice.parent_id, *choice.inspiration_ids]
        assert len(picked) == len(set(picked)) == 4
    assert set(parents) == set(range(8))
    assert min(parents.values()) > 60  # about 100 each when uniform


# ---------------------------------------------------------------- island: islands and migration


def test_island_breeds_on_round_modulo_num_islands():
    nodes = [node(i, float(i), island=i) for i in range(4)]
    sampler = IslandSampler(num_islands=4, migration_count=0)
    for round in range(8):
        choice = sampler.choose(nodes, 1, random.Random(0), round)
        assert choice.island == round % 4
        assert choice.parent_id == round % 4


def test_empty_island_is_seeded_from_the_global_best():
    nodes = [node(1, 5.0, island=0), node(2, 9.0, island=2), node(3, 1.0, island=0)]
    sampler = IslandSampler(num_islands=4)
    assert sampler.pool(nodes, 1) == []
    choice = sampler.choose(nodes, 3, random.Random(0), 1)
    assert choice == SampleChoice(parent_id=2, inspiration_ids=(), island=1)


def test_migration_brings_the_neighbours_best_at_an_epoch_and_not_before():
    sampler = IslandSampler(num_islands=2, migration_interval=10, migration_count=1)
    nodes = [
        node(1, 1.0, island=1, round=1),
        node(2, 9.0, island=0, round=3),  # neighbour of island 1 is island 0
        node(3, 5.0, island=0, round=4),
    ]
    assert [n.id for n in sampler.pool(nodes, 9)] == [1]
    assert [n.id for n in sampler.pool(nodes, 11)] == [1, 2]
    # Island 0's neighbour is island 1, whose best arrives at the same epoch.
    assert [n.id for n in sampler.pool(nodes, 10)] == [2, 3, 1]


def test_migration_only_considers_nodes_created_before_the_epoch():
    sampler = IslandSampler(num_islands=2, migration_interval=10, migration_count=1)
    nodes = [
        node(1, 1.0, island=1, round=1),
        node(2, 3.0, island=0, round=2),
        node(3, 9.0, island=0, round=12),  # better, but born after epoch 10
        node(4, 8.0, island=0, round=10),  # born in the epoch round itself: not yet evaluated then
    ]
    assert [n.id for n in sampler.pool(nodes, 19)] == [1, 2]
    # At epoch 20 the newer best arrives too; the earlier migrant stays.
    assert [n.id for n in sampler.pool(nodes, 21)] == [1, 2, 3]


def test_migration_count_takes_several_and_zero_disables_it():
    nodes = [node(1, 1.0, island=1)] + [node(10 + i, float(i), island=0, round=i) for i in range(5)]
    three = IslandSampler(num_islands=2, migration_interval=10, migration_count=3)
    assert sorted(n.id for n in three.pool(nodes, 11)) == [1, 12, 13, 14]
    none = IslandSampler(num_islands=2, migration_interval=10, migration_count=0)
    assert [n.id for n in none.pool(nodes, 11)] == [1]


def test_migration_choice_makes_the_migrant_a_possible_parent():
    # With descriptors the migrant sits in its own cell, so it is a parent about half the time.
    sampler = IslandSampler(num_islands=2, migration_interval=10, descriptors=[("a", 0, 1, 2)])
    nodes = [node(1, 1.0, island=1, metrics={"a": 0.1}), node(2, 9.0, island=0, round=3, metrics={"a": 0.9})]
    rng = random.Random(5)
    before = {sampler.choose(nodes, 1, rng, 9).parent_id for _ in range(50)}
    after = {sampler.choose(nodes, 1, rng, 11).parent_id for _ in range(50)}
    assert before == {1}
    assert after == {1, 2}


def test_nodes_on_islands_beyond_num_islands_wrap_around():
    sampler = IslandSampler(num_islands=4, migration_count=0)
    assert [n.id for n in sampler.pool([node(1, 1.0, island=5)], 1)] == [1]


# ---------------------------------------------------------------- island: MAP-Elites grid


def test_the_grid_drives_selection_not_the_crowd():
    crowd = [node(i, 10.0 + i, metrics={"a": 0.1}) for i in range(20)]
    loner = node(99, 0.5, metrics={"a": 0.9})
    nodes = crowd + [loner]
    sampler = IslandSampler(num_islands=1, descriptors=[("a", 0.0, 1.0, 4)])
    rng = random.Random(2024)
    picks = Counter(sampler.choose(nodes, 1, rng, round).parent_id for round in range(1000))
    assert 430 <= picks[99] <= 570
    # The crowd is represented by its elite only, never by its other members.
    assert set(picks) == {19, 99}
    greedy_rng = random.Random(2024)
    assert all(GreedySampler().choose(nodes, 1, greedy_rng, 0).parent_id != 99 for _ in range(1000))


def test_inspirations_are_other_elites():
    nodes = [
        node(1, 1.0, metrics={"a": 0.05}), node(2, 2.0, metrics={"a": 0.1}),
        node(3, 3.0, metrics={"a": 0.6}), node(4, 4.0, metrics={"a": 0.95}),
    ]
    sampler = IslandSampler(num_islands=1, descriptors=[("a", 0.0, 1.0, 4)])
    rng = random.Random(1)
    for _ in range(100):
        choice = sampler.choose(nodes, 3, rng, 0)
        picked = {choice.parent_id, *choice.inspiration_ids}
        assert len(picked) == 3 and picked <= {2, 3, 4}  # node 1 is beaten in its cell


def test_nodes_missing_descriptors_share_the_unknown_cell():
    descriptors = parse_descriptors([("a", 0, 1, 4), ("b", 0, 10, 2)])
    missing = node(1, 1.0, metrics={"a": 0.5})
    text = node(2, 3.0, metrics={"a": 0.5, "b": "fast"})
    flag = node(3, 2.0, metrics={"a": 0.5, "b": True})
    placed = node(4, 0.1, metrics={"a": 0.5, "b": 7})
    assert [cell_of(n, descriptors) for n in (missing, text, flag)] == [UNKNOWN_CELL] * 3
    assert cell_of(placed, descriptors) == (2, 1)
    assert [n.id for n in elites([missing, text, flag, placed], descriptors, random.Random(0))] == [2, 4]


def test_descriptor_bins_are_equal_and_clamped():
    descriptor = Descriptor("a", 0.0, 1.0, 4)
    assert [descriptor.bin_of(v) for v in (-3.0, 0.0, 0.24, 0.25, 0.5, 0.99, 1.0, 7.0)] == [
        0, 0, 0, 1, 2, 3, 3, 3,
    ]


def test_without_descriptors_the_parent_comes_from_a_tournament_in_the_pool():
    nodes = [node(i, float(i)) for i in range(1, 6)]
    sampler = IslandSampler(num_islands=1, tournament_size=2)
    rng = random.Random(9)
    parents = Counter(sampler.choose(nodes, 2, rng, 0).parent_id for _ in range(1000))
    # Binary tournament among 5: the worst node never wins, the best wins 40% of the time.
    assert 1 not in parents
    assert 330 <= parents[5] <= 470
    assert parents[5] > parents[4] > parents[3] > parents[2]
    choice = sampler.choose(nodes, 3, random.Random(0), 0)
    assert choice.inspiration_ids == tuple(i for i in (5, 4, 3, 2) if i != choice.parent_id)[:2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_islands": 0}, "num_islands must be a whole number >= 1, got 0"),
        ({"migration_interval": 0}, "migration_interval must be a whole number >= 1, got 0"),
        ({"migration_count": -1}, "migration_count must be a whole number >= 0, got -1"),
        ({"tournament_size": 0}, "tournament_size must be a whole number >= 1, got 0"),
        ({"descriptors": [("a", 1, 1, 4)]}, "descriptor 'a' needs finite bounds with lo < hi"),
        ({"descriptors": [("a", 0, 1, 0)]}, "descriptor 'a' needs a whole number of bins >= 1, got 0"),
        ({"descriptors": [("a", 0, 1)]}, r"descriptor #0 must be \(name, lo, hi, bins\)"),
        ({"descriptors": [{"name": "a", "lo": 0}]}, "descriptor #0 is missing bins, hi"),
        ({"descriptors": [("a", 0, 1, 2), ("a", 0, 5, 2)]}, "descriptor names must be distinct, repeated: a"),
        ({"descriptors": ("a", 0, 1, 2)}, r"descriptor #0 must be \(name, lo, hi, bins\), got 'a'"),
        ({"descriptors": {"name": "a"}}, "descriptors must be a list of .* got a single dict"),
    ],
)
def test_island_configuration_errors_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IslandSampler(**kwargs)


def test_descriptors_accept_mappings_from_config_files():
    sampler = IslandSampler(descriptors=[{"name": "a", "lo": 0, "hi": 2, "bins": 5}])
    assert sampler.descriptors == (Descriptor("a", 0, 2, 5),)


# ---------------------------------------------------------------- make_sampler


def test_make_sampler_builds_each_algorithm_with_its_parameters():
    assert make_sampler("ucb1", c=2.5).c == 2.5
    assert make_sampler("greedy", top_k=2).top_k == 2
    assert isinstance(make_sampler("random"), RandomSampler)
    island = make_sampler("island", num_islands=3, descriptors=[("a", 0, 1, 2)])
    assert island.num_islands == 3 and island.descriptors == (Descriptor("a", 0, 1, 2),)


def test_make_sampler_rejects_an_unknown_algorithm_listing_valid_names():
    with pytest.raises(ValueError) as raised:
        make_sampler("mcts")
    assert str(raised.value) == "unknown sampler algorithm 'mcts'; valid names: ucb1, greedy, random, island"


def test_make_sampler_rejects_an_unknown_parameter_listing_accepted_ones():
    with pytest.raises(ValueError) as raised:
        make_sampler("greedy", c=1.0)
    assert str(raised.value) == "sampler 'greedy' does not take c; it accepts: top_k"
    with pytest.raises(ValueError, match="sampler 'random' does not take top_k; it accepts: no parameters"):
        make_sampler("random", top_k=1)
