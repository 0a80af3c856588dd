"""Tests for the circle-packing demo's strict evaluator, initial program and eval.sh."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

EXPERIMENT_DIR = Path(__file__).resolve().parent.parent / "experiments" / "circle_packing"
INITIAL_PROGRAM = EXPERIMENT_DIR / "initial_program.py"


def _load_evaluator():
    """Import evaluator.py by path, as the framework's own script would be."""
    spec = importlib.util.spec_from_file_location("circle_packing_evaluator_under_test", EXPERIMENT_DIR / "evaluator.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


evaluator = _load_evaluator()


def grid_candidate(tmp_path: Path, *, radius: str = "0.1", changes: str = "", count: int = 26) -> Path:
    """Write a candidate: a valid 5x5 grid of radius-0.1 circles plus one small circle, then `changes`."""
    source = textwrap.dedent(
        f"""\
        def run_packing():
            centers = [(0.1 + 0.2 * i, 0.1 + 0.2 * j) for i in range(5) for j in range(5)]
            radii = [{radius}] * 25
            centers.append((0.2, 0.2))  # the gap between four grid circles
            radii.append(0.2 * 2 ** 0.5 / 2 - 0.1 - 1e-12)
        {textwrap.indent(textwrap.dedent(changes), '    ')}
            return centers[:{count}], radii[:{count}]
        """
    )
    path = tmp_path / "candidate.py"
    path.write_text(source)
    return path


def independent_score(centres, radii) -> float:
    """Recheck validity with complex-number geometry and return the sum of radii."""
    assert len(centres) == len(radii) == 26
    points = [complex(x, y) for x, y in centres]
    for p, r in zip(points, radii):
        assert r > 0 and r <= p.real <= 1 - r and r <= p.imag <= 1 - r
    for i in range(26):
        for j in range(i):
            assert abs(points[i] - points[j]) >= radii[i] + radii[j]
    return math.fsum(radii)


def test_initial_program_is_valid_and_scored_by_its_sum_of_radii(tmp_path):
    result = evaluator.evaluate(str(INITIAL_PROGRAM))
    spec = importlib.util.spec_from_file_location("initial_for_test", INITIAL_PROGRAM)
    program = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(program)
    centres, radii = program.run_packing()
    expected = independent_score(centres, radii)
    assert result["score"] == pytest.approx(expected, abs=1e-12)
    assert result["metrics"]["sum_radii"] == result["score"]
    assert 1.6 <= result["score"] <= 2.2  # room to climb towards the best known 2.63598
    for descriptor in ("radius_spread", "centre_mass", "min_radius_ratio"):
        assert 0.0 <= result["metrics"][descriptor] <= 1.0


def test_initial_radius_routine_is_strictly_valid_for_any_distinct_centres():
    spec = importlib.util.spec_from_file_location("initial_for_fuzz", INITIAL_PROGRAM)
    program = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(program)
    rng = random.Random(7)
    for trial in range(300):
        centres = [(rng.uniform(0.001, 0.999), rng.uniform(0.001, 0.999)) for _ in range(26)]
        if trial % 3 == 0:  # a nearly coincident pair must still get tiny, positive radii
            centres[5] = (centres[4][0] + 1e-7, centres[4][1])
        radii = program.largest_valid_radii(centres)
        independent_score(centres, radii)  # exact checks, no tolerance at all


def test_grid_candidate_is_accepted_with_descriptors(tmp_path):
    result = evaluator.evaluate(str(grid_candidate(tmp_path)))
    small = 0.2 * 2 ** 0.5 / 2 - 0.1 - 1e-12
    assert result["score"] == pytest.approx(2.5 + small, abs=1e-12)
    radii = [0.1] * 25 + [small]
    mean = sum(radii) / 26
    spread = math.sqrt(sum((r - mean) ** 2 for r in radii) / 26) / mean
    assert result["metrics"]["radius_spread"] == pytest.approx(spread)
    assert result["metrics"]["min_radius_ratio"] == pytest.approx(small / 0.1)


def test_overlapping_circles_are_rejected_with_indices_and_amount(tmp_path):
    path = grid_candidate(tmp_path, changes="centers[1] = (0.1, 0.29)")
    with pytest.raises(ValueError, match=r"circles 0 and 1 overlap by 1\.000e-02"):
        evaluator.evaluate(str(path))


def test_circle_outside_the_square_is_rejected(tmp_path):
    path = grid_candidate(tmp_path, changes="centers[24] = (0.95, 0.9)")
    with pytest.raises(ValueError, match=r"circle 24 .* crosses the right side of the unit square by 5\.000e-02"):
        evaluator.evaluate(str(path))


def test_twenty_five_circles_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="expected exactly 26 circles, got 25 centers and 25 radii"):
        evaluator.evaluate(str(grid_candidate(tmp_path, count=25)))


@pytest.mark.parametrize("bad", ["float('nan')", "float('inf')"])
def test_non_finite_radius_is_rejected(tmp_path, bad):
    path = grid_candidate(tmp_path, changes=f"radii[3] = {bad}")
    with pytest.raises(ValueError, match="radius of circle 3 must be finite"):
        evaluator.evaluate(str(path))


def test_nan_coordinate_is_rejected(tmp_path):
    path = grid_candidate(tmp_path, changes="centers[7] = (0.3, float('nan'))")
    with pytest.raises(ValueError, match="y of circle 7 must be finite"):
        evaluator.evaluate(str(path))


def test_non_positive_radius_is_rejected(tmp_path):
    path = grid_candidate(tmp_path, changes="radii[5] = 0.0")
    with pytest.raises(ValueError, match="circle 5 has non-positive radius 0.0"):
        evaluator.evaluate(str(path))


@pytest.mark.parametrize(
    "changes",
    [
        "radii[0] = 0.1 + {excess}",  # crosses the left and bottom walls, overlaps circle 1
        "centers[24] = (0.9 + {excess}, 0.9)",  # crosses the right wall
        "centers[1] = (0.1, 0.3 - {excess})",  # overlaps circle 0
    ],
)
def test_tolerance_is_exactly_one_nanometre_scale(tmp_path, changes):
    tiny = grid_candidate(tmp_path, changes=changes.format(excess="1e-10"))
    evaluator.evaluate(str(tiny))  # within 1e-9: accepted
    too_much = grid_candidate(tmp_path, changes=changes.format(excess="1e-8"))
    with pytest.raises(ValueError, match=r"by 1\.000e-08|by 1\.00\de-08"):
        evaluator.evaluate(str(too_much))


def test_candidate_without_run_packing_is_rejected(tmp_path):
    path = tmp_path / "empty.py"
    path.write_text("x = 1\n")
    with pytest.raises(ValueError, match="does not define a callable run_packing"):
        evaluator.evaluate(str(path))


def test_eval_sh_prints_one_json_line_for_a_valid_candidate(tmp_path):
    env = {**os.environ, "EVOLVEFLOW_PYTHON": sys.executable}
    noisy = grid_candidate(tmp_path, changes="print('candidate chatter')")
    completed = subprocess.run(
        [str(EXPERIMENT_DIR / "eval.sh"), str(noisy)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert len(lines) == 1
    payload = json.loads(lines[0])
    assert set(payload) == {"score", "metrics"}
    assert payload["score"] == pytest.approx(evaluator.evaluate(str(noisy))["score"])
    assert "candidate chatter" in completed.stderr


def test_eval_sh_reports_an_invalid_candidate_as_error_json(tmp_path):
    env = {**os.environ, "EVOLVEFLOW_PYTHON": sys.executable}
    path = grid_candidate(tmp_path, count=25)
    completed = subprocess.run(
        [str(EXPERIMENT_DIR / "eval.sh"), str(path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 1
    payload = json.loads(completed.stdout.strip())
    assert list(payload) == ["error"]
    assert "expected exactly 26 circles" in payload["error"]
