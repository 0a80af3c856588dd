"""Strict judge for the 26-circle packing demo: validates a candidate and scores its sum of radii.

Usage: ``python evaluator.py PROGRAM_PATH`` prints one JSON line, either
``{"score": ..., "metrics": {...}}`` or ``{"error": "..."}`` (exit status 1).

The candidate module must define ``run_packing() -> (centers, radii)``. It runs in a child process
of its own, which hands back only the numbers (its prints go to stderr); this
process validates and scores them. So a candidate cannot forge the score by printing a JSON line,
writing result files or exiting early: only a packing that passes every check is scored. A packing is valid when
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

import builtins
import contextlib
import ctypes
import importlib.util
import json
import math
import numbers
import os
import signal
import subprocess
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


# Runs in the child: import the candidate, call run_packing(), send the numbers over fd DATA_FD.
_CHILD = r"""
import importlib.util, json, os, sys
fd = int(sys.argv[2])
def send(payload):
    os.write(fd, json.dumps(payload, allow_nan=True,
             default=lambda v: v.tolist() if hasattr(v, "tolist") else repr(v)).encode())
try:
    spec = importlib.util.spec_from_file_location("candidate", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run_packing = getattr(module, "run_packing", None)
    if not callable(run_packing):
        send({"error": "ValueError", "message": sys.argv[1] + " does not define a callable run_packing()"})
    else:
        send({"result": run_packing()})
except BaseException as exc:
    send({"error": type(exc).__name__, "message": str(exc)})
os._exit(0)
"""
CHILD_TIMEOUT_S = 600


def _refuse_inspection() -> None:
    """Make this process non-dumpable: its children cannot open /proc/<our pid>/fd/1 and write our stdout."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0


def run_candidate(program_path: str):
    """Run the candidate's run_packing() in a child process and return its raw result (as JSON data).

    An exception inside the candidate is raised here again as the same built-in type with its message.
    """
    path = Path(program_path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"candidate program not found: {path}")
    _refuse_inspection()
    read_end, write_end = os.pipe()
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), str(write_end)], pass_fds=(write_end,),
        # The candidate's prints (even os.write(1, ...)) land on our stderr, never our stdout.
        stdin=subprocess.DEVNULL, stdout=2, stderr=2,
        start_new_session=True,
    )
    os.close(write_end)
    chunks = []
    try:
        with os.fdopen(read_end, "rb") as data:
            chunks.append(data.read())
        child.wait(timeout=CHILD_TIMEOUT_S)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)  # whatever the candidate left running
        child.wait()
    try:
        payload = json.loads(b"".join(chunks).decode("utf-8", "replace"))
    except ValueError:
        raise RuntimeError("the candidate's process ended before run_packing() returned "
                           "(a crash, os._exit() or a kill)") from None
    if "error" in payload:
        kind = getattr(builtins, str(payload["error"]), None)
        kind = kind if isinstance(kind, type) and issubclass(kind, Exception) else RuntimeError
        raise kind(payload.get("message") or payload["error"])
    return payload["result"]


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

    Raises ValueError with a precise message if the packing is invalid; an exception raised by
    the candidate itself is raised again with its type (built-in types) and message.
    """
    centres, radii = parse_packing(run_candidate(program_path))
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
