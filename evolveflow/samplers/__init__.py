"""Parent samplers: pure choices over immutable node records, built by name from config."""
from __future__ import annotations

import inspect
from typing import Any

from evolveflow.samplers.base import NoParentError, Sampler, eligible
from evolveflow.samplers.greedy import GreedySampler
from evolveflow.samplers.island import IslandSampler
from evolveflow.samplers.random_ import RandomSampler
from evolveflow.samplers.ucb1 import UCB1Sampler

SAMPLERS: dict[str, type] = {
    "ucb1": UCB1Sampler,
    "greedy": GreedySampler,
    "random": RandomSampler,
    "island": IslandSampler,
}


def make_sampler(algorithm: str, **params: Any) -> Sampler:
    """Build the sampler named `algorithm` with its parameters, rejecting unknown names and parameters."""
    try:
        sampler_class = SAMPLERS[algorithm]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown sampler algorithm {algorithm!r}; valid names: {', '.join(SAMPLERS)}"
        ) from None
    accepted = [
        name for name in inspect.signature(sampler_class).parameters if name != "self"
    ]
    unexpected = sorted(set(params) - set(accepted))
    if unexpected:
        # Checked here rather than left to a TypeError so a typo in the config
        # names both the culprit and what would have been accepted.
        raise ValueError(
            f"sampler {algorithm!r} does not take {', '.join(unexpected)}; "
            f"it accepts: {', '.join(accepted) or 'no parameters'}"
        )
    return sampler_class(**params)


__all__ = [
    "GreedySampler", "IslandSampler", "NoParentError", "RandomSampler", "SAMPLERS",
    "Sampler", "UCB1Sampler", "eligible", "make_sampler",
]
