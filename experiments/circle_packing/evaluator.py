"""Strict judge for the 26-circle packing demo: validates a candidate and scores its sum of radii.

Usage: ``python evaluator.py PROGRAM_PATH`` prints one JSON line, either
``{"score": ..., "metrics": {...}}`` or ``{"error": "..."}`` (exit status 1).

The candidate module must define ``run_packing() -> (centers, radii)``. A packing is valid when
there are exactly 26 circles, every value is a finite number, every radius is positive, every
circle lies inside the unit square and no two circles overlap, all checked with an absolute
tolerance of 1e-9 and no looser.

Metrics:
- ``sum_radii``: the score, the sum of the 26 radii (best known is about 2.63598).
- ``radius_spread``: coefficient of variation of the radii (population standard deviation over
  mean), clipped to [0, 1]. 0 means all circles are equal; good packings mix sizes and sit
  around 0.1-0.3; 1 or more means a few huge circles among specks.
- ``centre_mass``: radius-weighted mean distance of the centres from the square's middle,
  divided by sqrt(0.5) (the distance to a corner), in [0, 1]. Small values mean the large
  circles sit in the middle; large values mean the mass is pushed to the edges and corners.
- ``min_radius_ratio``: the smallest radius divided by the largest, in (0, 1].
- ``n_circles``: always 26 for a valid packing.
"""
from __future__ import annotations

import importlib.util
import contextlib
import json
import math
import numbers
import sys
import uuid
from pathlib import Path

N_CIRCLES = 26
TOLERANCE = 1e-9


def load_program(program_path: str):
    """Import the candidate file at program_path as a fresh module and return it."""
    path = Path(program_path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"candidate program not found: {path}")
    # A unique module name keeps two candidates evaluated in one process from sharing state.
    spec = importlib.util.spec_from_file_location(f"candidate_{uuid.uuid4().hex}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import candidate program from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _as_finite_float(value, what: str) -> float:
    """Return value as a float, or raise ValueError if it is not a finite real number."""
    # numbers.Real also admits numpy scalars, which candidates often return.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a real number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {number!r}")
    return number


def _sequence(value, what: str) -> list:
    """Return value as a list, or raise ValueError if it is not a sequence (list, tuple, array)."""
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__len__"):
        raise ValueError(f"{what} must be a list or tuple, got {type(value).__name__}")
    return list(value)


def parse_packing(result) -> tuple[list[tuple[float, float]], list[float]]:
    """Check the shape and types of run_packing()'s return value; return (centres, radii)."""
    pair = _sequence(result, "run_packing() result")
    if len(pair) != 2:
        raise ValueError(f"run_packing() must return (centers, radii), got {len(pair)} items")
    raw_centres = _sequence(pair[0], "centers")
    raw_radii = _sequence(pair[1], "radii")
    if len(raw_centres) != N_CIRCLES or len(raw_radii) != N_CIRCLES:
        raise ValueError(
            f"expected exactly {N_CIRCLES} circles, got {len(raw_centres)} centers and "
            f"{len(raw_radii)} radii"
        )
    centres = []
    for index, raw in enumerate(raw_centres):
        point = _sequence(raw, f"center {index}")
        if len(point) != 2:
            raise ValueError(f"center {index} must be an (x, y) pair, got {len(point)} values")
        centres.append(
            (_as_finite_float(point[0], f"x of circle {index}"),
             _as_finite_float(point[1], f"y of circle {index}"))
        )
    radii = [_as_finite_float(raw, f"radius of circle {index}") for index, raw in enumerate(raw_radii)]
    return centres, radii


def validate_packing(centres: list[tuple[float, float]], radii: list[float]) -> None:
    """Raise ValueError naming the first offending circle(s) if the packing is not valid."""
    for index, ((x, y), radius) in enumerate(zip(centres, radii)):
        if radius <= 0:
            raise ValueError(f"circle {index} has non-positive radius {radius!r}")
        sides = {
            "left": radius - x,
            "right": x + radius - 1,
            "bottom": radius - y,
            "top": y + radius - 1,
        }
        for side, excess in sides.items():
            if excess > TOLERANCE:
                raise ValueError(
                    f"circle {index} (center ({x!r}, {y!r}), radius {radius!r}) crosses the "
                    f"{side} side of the unit square by {excess:.3e}"
                )
    for i in range(N_CIRCLES):
        for j in range(i + 1, N_CIRCLES):
            gap = math.dist(centres[i], centres[j]) - (radii[i] + radii[j])
            if gap < -TOLERANCE:
                raise ValueError(
                    f"circles {i} and {j} overlap by {-gap:.3e} (distance between centers "
                    f"{math.dist(centres[i], centres[j])!r} < sum of radii {radii[i] + radii[j]!r})"
                )


def describe_packing(centres: list[tuple[float, float]], radii: list[float]) -> dict:
    """Return the metrics of a valid packing (see the module docstring)."""
    total = sum(radii)
    mean = total / len(radii)
    spread = math.sqrt(sum((r - mean) ** 2 for r in radii) / len(radii)) / mean
    mass = sum(r * math.dist((x, y), (0.5, 0.5)) for (x, y), r in zip(centres, radii)) / total
    return {
        "sum_radii": total,
        "radius_spread": min(spread, 1.0),
        "centre_mass": min(mass / math.sqrt(0.5), 1.0),
        "min_radius_ratio": min(radii) / max(radii),
        "n_circles": len(radii),
    }


def evaluate(program_path: str) -> dict:
    """Run the candidate at program_path and return {"score": sum_of_radii, "metrics": {...}}.

    Raises ValueError with a precise message if the packing is invalid; any exception raised
    by the candidate itself propagates unchanged.
    """
    module = load_program(program_path)
    run_packing = getattr(module, "run_packing", None)
    if not callable(run_packing):
        raise ValueError(f"{program_path} does not define a callable run_packing()")
    centres, radii = parse_packing(run_packing())
    validate_packing(centres, radii)
    metrics = describe_packing(centres, radii)
    return {"score": metrics["sum_radii"], "metrics": metrics}


def main(argv: list[str]) -> int:
    """Command-line entry: evaluate argv[1], print one JSON line, return the exit status."""
    if len(argv) != 2:
        print(json.dumps({"error": "usage: evaluator.py PROGRAM_PATH"}))
        return 2
    try:
        # The candidate may print; keep stdout for the single JSON line the framework parses.
        with contextlib.redirect_stdout(sys.stderr):
            result = evaluate(argv[1])
    except Exception as error:  # any failure is the candidate's; report it as one JSON line
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
