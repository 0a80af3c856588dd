"""Pure rules: validity flags, and each contract's reading of a result (no processes)."""
from pathlib import Path

import pytest

from evolveflow.evaluation.adapters.asi import read_asi_result
from evolveflow.evaluation.adapters.openevolve import fitness, read_openevolve_result
from evolveflow.evaluation.adapters.shinka import read_shinka_result
from evolveflow.evaluation.contract import NO_RESULT, interpret_result
from evolveflow.evaluation.validity import asks_retry, invalid_flag, invalid_reason
from evolveflow.records import Outcome


@pytest.mark.parametrize("result, flag", [
    ({"correct": False}, "correct: false"),
    ({"success": False, "eval_score": 0.0}, "success: false"),
    ({"metrics": {"valid": 0}}, "valid: 0"),
    ({"public": {"is_valid": False}}, "is_valid: false"),
    ({"validity": 0.0, "combined_score": 0.0}, "validity: 0.0"),
    ({"timeout": True}, "timeout: true"),
    ({"metrics": {"timed_out": True}}, "timed_out: true"),
])
def test_invalid_flags_are_found_at_the_top_and_one_level_down(result, flag):
    assert invalid_flag(result) == flag


@pytest.mark.parametrize("result", [
    {"correct": True}, {"success": True}, {"validity": 1.0}, {"timeout": False}, {"timeout": 0},
    {"score": 0.0}, {"metrics": {"validity": 0.5}}, [], None,
])
def test_valid_or_unflagged_results_pass(result):
    assert invalid_flag(result) is None


def test_invalid_reason_carries_the_stated_error():
    reason = invalid_reason({"success": False, "temp": {"error": "circle 3 outside"}})
    assert reason == "the evaluator marked the candidate invalid (success: false): circle 3 outside"


def test_native_result_with_a_validity_flag_is_never_ok_even_with_a_score():
    verdict = interpret_result({"score": 2.7, "metrics": {"correct": False}})
    assert verdict.outcome is Outcome.CANDIDATE_ERROR and verdict.score is None
    assert "correct: false" in verdict.error


def test_native_score_may_sit_inside_metrics():
    assert interpret_result({"metrics": {"combined_score": 1.5}}).score == 1.5


def test_retry_is_recognised_with_its_reason():
    assert asks_retry({"retry": True, "error": "GPU busy"}) == "GPU busy"
    assert asks_retry({"retry": "yes"}) is None


# ---- OpenEvolve --------------------------------------------------------------------------------

def test_fitness_is_combined_score_else_the_mean_of_numbers_without_bools_or_error():
    assert fitness({"combined_score": 0.25, "a": 9}) == 0.25
    assert fitness({"a": 1, "b": 3, "ok": True, "error": 7, "note": "x"}) == 2.0
    assert fitness({"note": "x"}) is None


@pytest.mark.parametrize("metrics, expected", [
    ({"combined_score": 0.0, "error": "All trials failed"}, "the evaluator reported an error: All trials failed"),
    ({"validity": 0.0, "combined_score": 0.0, "error": "Timeout"}, "invalid (validity: 0.0): Timeout"),
    ({"error": 0.0}, "OpenEvolve's failure shape"),
    ({"error": 0.0, "timeout": True}, "timeout: true"),
    ({"note": "no numbers"}, "no numeric metric"),
])
def test_openevolve_failure_shapes_are_candidate_errors(metrics, expected):
    verdict = read_openevolve_result({"metrics": metrics, "artifacts": {}, "cascade_stage": 0})
    assert verdict.outcome is Outcome.CANDIDATE_ERROR
    assert expected in verdict.error


def test_openevolve_ok_keeps_artifacts_as_feedback_and_records_the_stage():
    verdict = read_openevolve_result({"metrics": {"combined_score": 0.8, "error": ""},
                                      "artifacts": {"stderr": "warn", "blob": b"xx".decode()}, "cascade_stage": 2})
    assert (verdict.outcome, verdict.score) == (Outcome.OK, 0.8)
    assert verdict.metrics["cascade_stage"] == 2
    assert verdict.feedback == {"artifact:stderr": "warn", "artifact:blob": "xx"}


def test_openevolve_exception_in_a_later_stage_keeps_the_earlier_metrics():
    verdict = read_openevolve_result({"error": "ValueError: boom", "traceback": "...",
                                      "stage_result": {"metrics": {"combined_score": 0.6}, "artifacts": {},
                                                       "cascade_stage": 1}})
    assert verdict.outcome is Outcome.CANDIDATE_ERROR and verdict.error == "ValueError: boom"
    assert verdict.metrics == {"combined_score": 0.6, "cascade_stage": 1}


# ---- ShinkaEvolve ------------------------------------------------------------------------------

def _shinka(metrics, correct):
    return read_shinka_result({"metrics_json": metrics, "correct_json": correct, "exit_status": 0})


def test_shinka_ok_separates_public_private_and_text_feedback():
    verdict = _shinka({"combined_score": 2.5, "public": {"n": 26}, "private": {"true_sum": 2.51},
                       "text_feedback": ["tighten the corners", "try hexagons"], "execution_time_mean": 0.1},
                      {"correct": True, "error": None})
    assert (verdict.outcome, verdict.score) == (Outcome.OK, 2.5)
    assert verdict.metrics == {"n": 26, "execution_time_mean": 0.1}
    assert verdict.private_metrics == {"true_sum": 2.51}
    assert verdict.feedback == {"text_feedback": "tighten the corners\ntry hexagons"}


def test_shinka_incorrect_is_a_candidate_error_even_with_a_high_score():
    verdict = _shinka({"combined_score": 9.9}, {"correct": False, "error": "circle 4 outside the square"})
    assert verdict.outcome is Outcome.CANDIDATE_ERROR and verdict.score is None
    assert verdict.error.endswith("correct: false): circle 4 outside the square")


@pytest.mark.parametrize("metrics, correct, expected", [
    (None, {"correct": True}, "no usable metrics.json"),
    ({"combined_score": 1.0}, None, "no usable correct.json"),
    ({"combined_score": "high"}, {"correct": True}, "combined_score is 'high'"),
    ({"public": {}}, {"correct": True}, "no combined_score"),
])
def test_shinka_missing_or_bad_files_are_candidate_errors(metrics, correct, expected):
    verdict = _shinka(metrics, correct)
    assert verdict.outcome is Outcome.CANDIDATE_ERROR and expected in verdict.error


# ---- ASI-Evolve --------------------------------------------------------------------------------

def test_asi_success_false_is_a_candidate_error_with_temp_error(tmp_path: Path):
    (tmp_path / "eval.log").write_text("Traceback ...\nZeroDivisionError: division by zero\n")
    verdict = read_asi_result({"success": False, "eval_score": 0.0, "temp": {"error": "Evaluation failed"}},
                              None, tmp_path, "")
    assert verdict.outcome is Outcome.CANDIDATE_ERROR
    assert verdict.error.startswith("the evaluator marked the candidate invalid (success: false): Evaluation failed")
    assert "ZeroDivisionError: division by zero" in verdict.error
    assert set(verdict.feedback) == {"temp", "eval.log"}


def test_asi_ok_needs_a_finite_eval_score(tmp_path: Path):
    ok = read_asi_result({"success": True, "eval_score": 2.6, "sum_radii": 2.6, "runtime": 1}, None, tmp_path, "")
    assert (ok.outcome, ok.score, ok.metrics) == (Outcome.OK, 2.6, {"sum_radii": 2.6})
    missing = read_asi_result({"success": True}, None, tmp_path, "")
    assert missing.outcome is Outcome.CANDIDATE_ERROR and "no eval_score" in missing.error
    nan = read_asi_result({"eval_score": float("nan")}, None, tmp_path, "")
    assert nan.outcome is Outcome.CANDIDATE_ERROR and "eval_score is NaN" in nan.error


def test_asi_without_results_json_quotes_results_txt(tmp_path: Path):
    (tmp_path / "results.txt").write_text("score maybe 3\n")
    verdict = read_asi_result(NO_RESULT, "eval.sh wrote no results.json in the step directory", tmp_path, "")
    assert verdict.outcome is Outcome.CANDIDATE_ERROR
    assert verdict.error == ("eval.sh wrote no results.json in the step directory; "
                             "results.txt says: score maybe 3")


def test_openevolve_mean_leaves_out_the_feature_dimensions():
    metrics = {"accuracy": 0.9, "latency_score": 0.5, "slope_changes": 134.0, "complexity": 700}
    assert fitness(metrics, ("slope_changes", "complexity")) == pytest.approx(0.7)
    verdict = read_openevolve_result({"metrics": metrics, "artifacts": {}}, ("slope_changes", "complexity"))
    assert verdict.score == pytest.approx(0.7)
