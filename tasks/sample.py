"""sample: choose the parent and inspirations for a round from the experiment tree."""
from __future__ import annotations

import random

from prefect import task
from prefect.cache_policies import NO_CACHE

from evolveflow.records import Sampled
from evolveflow.runtime import Runtime, get_runtime


def choose(rt: Runtime, round_no: int) -> Sampled:
    """Returns the round's parent, inspirations and recent failures, and counts the visit."""
    config = rt.config
    rng = random.Random(f"{config.pipeline.seed}:sample:{round_no}")
    with rt.tree_lock:  # global UCB statistics: the next worker sees this visit
        rt.check_abort()
        choice = rt.sampler.choose(rt.tree.summaries(), config.pipeline.sample_n, rng, round_no)
        rt.tree.add_visit(choice.parent_id)
        node_id = rt.next_node_id()
        parent, *inspirations = rt.tree.nodes([choice.parent_id, *choice.inspiration_ids])
        sampled = Sampled(
            node_id=node_id, round=round_no, island=choice.island, parent=parent,
            inspirations=tuple(inspirations), failures=tuple(rt.tree.failed_children(parent.id)),
        )
        rt.in_flight[node_id] = sampled  # until persisted: an abort records it as abandoned
    return sampled


@task(name="sample", cache_policy=NO_CACHE)
def sample(search_id: str, round_no: int) -> Sampled:
    """Chooses the parent and inspirations for this round."""
    return choose(get_runtime(search_id), round_no)
