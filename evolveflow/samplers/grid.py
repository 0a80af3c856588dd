"""MAP-Elites grid: place nodes in cells by behaviour descriptors and keep each cell's best."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from numbers import Real
from typing import Any, Iterable, Literal, Mapping, Sequence, Union

from evolveflow.records import NodeSummary
from evolveflow.samplers.base import by_score, rank

UNKNOWN_CELL: Literal["unknown"] = "unknown"
Cell = Union[tuple[int, ...], Literal["unknown"]]


@dataclass(frozen=True)
class Descriptor:
    """One behaviour axis: metrics[name] cut into `bins` equal bins over [lo, hi]."""

    name: str
    lo: float
    hi: float
    bins: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"descriptor name must be a non-empty metric name, got {self.name!r}")
        if _numeric(self.lo) is None or _numeric(self.hi) is None or not (math.isfinite(self.lo) and math.isfinite(self.hi) and self.lo < self.hi):
            raise ValueError(
                f"descriptor {self.name!r} needs finite bounds with lo < hi, "
                f"got lo={self.lo!r}, hi={self.hi!r}"
            )
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) or self.bins < 1:
            raise ValueError(
                f"descriptor {self.name!r} needs a whole number of bins >= 1, got {self.bins!r}"
            )

    def bin_of(self, value: float) -> int:
        """Index of the bin holding value; values outside [lo, hi] clamp to the edge bins."""
        fraction = (value - self.lo) / (self.hi - self.lo)
        # min(...) puts value == hi into the last bin instead of one past it.
        return max(0, min(self.bins - 1, math.floor(fraction * self.bins)))


def parse_descriptors(spec: Iterable[Any]) -> tuple[Descriptor, ...]:
    """Descriptors from Descriptor objects, (name, lo, hi, bins) rows or mappings with those keys."""
    if isinstance(spec, (str, bytes, Mapping)):
        raise ValueError(
            "descriptors must be a list of (name, lo, hi, bins) entries, "
            f"got a single {type(spec).__name__}"
        )
    parsed = []
    for index, entry in enumerate(spec):
        if isinstance(entry, Descriptor):
            parsed.append(entry)
        elif isinstance(entry, Mapping):
            missing = {"name", "lo", "hi", "bins"} - set(entry)
            if missing:
                raise ValueError(
                    f"descriptor #{index} is missing {', '.join(sorted(missing))}; "
                    "each needs name, lo, hi and bins"
                )
            parsed.append(Descriptor(entry["name"], entry["lo"], entry["hi"], entry["bins"]))
        elif isinstance(entry, Sequence) and not isinstance(entry, str) and len(entry) == 4:
            parsed.append(Descriptor(*entry))
        else:
            raise ValueError(
                f"descriptor #{index} must be (name, lo, hi, bins), got {entry!r}"
            )
    names = [descriptor.name for descriptor in parsed]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"descriptor names must be distinct, repeated: {', '.join(repeated)}")
    return tuple(parsed)


def _numeric(value: Any) -> float | None:
    # bool is an int subclass, but a flag is not a position on a behaviour axis.
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    number = float(value)
    return None if math.isnan(number) else number


def cell_of(node: NodeSummary, descriptors: Sequence[Descriptor]) -> Cell:
    """The node's grid cell, or UNKNOWN_CELL when a descriptor metric is missing or not a number."""
    indices = []
    for descriptor in descriptors:
        value = _numeric(node.metrics.get(descriptor.name))
        if value is None:
            return UNKNOWN_CELL
        indices.append(descriptor.bin_of(value))
    return tuple(indices)


def elites(
    pool: Sequence[NodeSummary], descriptors: Sequence[Descriptor], rng: random.Random
) -> list[NodeSummary]:
    """Best node of each occupied cell (score ties broken by the rng), best-first."""
    seen: set[Cell] = set()
    best_per_cell = []
    # Walking the pool best-first, the first node met in a cell is its elite.
    for node in rank(pool, by_score, rng):
        cell = cell_of(node, descriptors)
        if cell not in seen:
            seen.add(cell)
            best_per_cell.append(node)
    return best_per_cell
