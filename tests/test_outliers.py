"""The MAD rule re-runs only results that would mislead: better than the lineage suggests."""
import pytest

from evolveflow.config import OutlierConfig
from evolveflow.outliers import rerun_reason

LINEAGE = [0.0, 0.1, 0.2, 0.1, 0.0, 0.1]  # median 0.1, MAD 0.05: z = 13.49 * (x - 0.1)
K = 0.6745 / 0.05
BEST = 10.0  # far above: the new-best rule stays out of the way


def test_by_default_a_clearly_worse_child_is_not_rerun():
    assert OutlierConfig().side == "better"
    assert rerun_reason(-3.0, BEST, LINEAGE, OutlierConfig()) is None


def test_by_default_a_suspiciously_good_child_is_rerun():
    reason = rerun_reason(3.0, BEST, LINEAGE, OutlierConfig())
    assert reason == "outlier against its lineage (robust z = 39.12, threshold 3.5)"


@pytest.mark.parametrize("score, side, rerun", [
    (-3.0, "both", True), (3.0, "both", True), (0.15, "both", False),
    # Just inside and just outside the threshold, on each side.
    (0.1 + 3.4 / K, "better", False), (0.1 + 3.6 / K, "better", True),
    (0.1 - 3.6 / K, "better", False), (0.1 - 3.6 / K, "both", True),
])
def test_side_decides_which_tail_is_rerun(score, side, rerun):
    assert (rerun_reason(score, BEST, LINEAGE, OutlierConfig(side=side)) is not None) is rerun


def test_the_new_best_rule_does_not_depend_on_side():
    for side in ("better", "both"):
        assert rerun_reason(11.0, BEST, LINEAGE, OutlierConfig(side=side)).startswith("would be a new best")
