"""Pure rules: when a search stops, and when a score must be re-run before it counts."""
import pytest

from evolveflow.config import OutlierConfig, StopConfig
from evolveflow.outliers import rerun_reason, robust_z
from evolveflow.stopping import Progress, stop_reason


def progress(**kw):
    base = dict(elapsed_s=10.0, cost_usd=0.5, tokens=1000, best_score=1.0, rounds_without_improvement=2)
    return Progress(**{**base, **kw})


@pytest.mark.parametrize("cfg, expected", [
    (StopConfig(), None),
    (StopConfig(target_score=1.0), "target score 1.0 reached"),
    (StopConfig(target_score=1.5), None),
    (StopConfig(max_wall_s=5), "wall-time budget of 5 s used"),
    (StopConfig(max_cost_usd=0.25), "cost budget of $0.25 used"),
    (StopConfig(max_tokens=1000), "token budget of 1000 used"),
    (StopConfig(patience=2), "no improvement for 2 rounds"),
    (StopConfig(patience=3), None),
])
def test_stop_rules(cfg, expected):
    reason = stop_reason(cfg, progress())
    assert (reason is None) if expected is None else reason.startswith(expected)


def test_unknown_cost_cannot_trigger_the_cost_budget():
    assert stop_reason(StopConfig(max_cost_usd=0.01), progress(cost_usd=None)) is None


def test_robust_z_and_zero_mad():
    assert robust_z(5.0, [1, 2, 3, 4, 5]) == pytest.approx(0.6745 * 2 / 1)
    assert robust_z(9.0, [2, 2, 2, 2, 2]) is None


def test_new_best_is_rerun_unless_within_margin():
    cfg = OutlierConfig()
    assert rerun_reason(2.0, 1.0, [], cfg).startswith("would be a new best")
    assert rerun_reason(1.0, 1.0, [], cfg) is None
    assert rerun_reason(1.0, None, [], cfg).startswith("first score of the search")
    assert rerun_reason(1.05, 1.0, [], OutlierConfig(new_best_margin=0.1)) is None
    assert rerun_reason(1.2, 1.0, [], OutlierConfig(new_best_margin=0.1)) is not None
    assert rerun_reason(5.0, 1.0, [], OutlierConfig(enabled=False)) is None


def test_lineage_outlier_below_the_best_is_still_rerun():
    lineage = [0.0, 0.1, 0.2, 0.1, 0.0, 0.1]
    assert rerun_reason(-3.0, 10.0, lineage, OutlierConfig(side="both")).startswith("outlier against its lineage")
    assert rerun_reason(0.15, 10.0, lineage, OutlierConfig()) is None
    assert rerun_reason(-3.0, 10.0, lineage[:3], OutlierConfig()) is None  # too short a lineage
