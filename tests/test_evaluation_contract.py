"""Pure tests of how evaluator output is parsed and classified (no subprocesses)."""
import json
import math
import signal

import pytest

from evolveflow.evaluation.contract import (
    NO_RESULT,
    clean_metrics,
    interpret_result,
    judge,
    last_json_object,
    metrics_of,
    parse_result_text,
    score_problem,
    signal_of,
)
from evolveflow.records import Outcome


def run_judge(exit_code=0, result=NO_RESULT, killed_reason=None, result_problem=None, stderr=""):
    return judge(exit_code=exit_code, killed_reason=killed_reason, result=result,
                 result_problem=result_problem, stderr=stderr)


# --- finding the JSON object on stdout -------------------------------------------------------

def test_last_json_line_wins_over_logs_and_earlier_objects():
    stdout = 'starting\n{"score": 1}\nprogress 50%\n{"score": 2, "metrics": {"a": 1}}\ndone\n'
    assert last_json_object(stdout) == {"score": 2, "metrics": {"a": 1}}


def test_lines_that_are_not_objects_are_skipped():
    stdout = '{"score": 3}\n[1, 2]\n{not json}\n42\n"text"\n'
    assert last_json_object(stdout) == {"score": 3}


def test_trailing_pretty_printed_object_is_accepted():
    stdout = "log\n" + json.dumps({"score": 0.5, "metrics": {"x": [1, 2]}}, indent=2) + "\n"
    assert last_json_object(stdout) == {"score": 0.5, "metrics": {"x": [1, 2]}}


def test_pretty_object_followed_by_text_is_not_a_result():
    stdout = json.dumps({"score": 0.5}, indent=2) + "\ntrailing words\n"
    assert last_json_object(stdout) is None


def test_no_object_at_all_returns_none():
    assert last_json_object("") is None
    assert last_json_object("just logs\n\ufffd\ufffd broken bytes\n") is None


def test_result_file_that_is_not_json_names_its_source():
    value, problem = parse_result_text("score: 1", "results.json")
    assert value is NO_RESULT
    assert problem.startswith("results.json is not valid JSON")


def test_result_file_keeps_non_object_json_for_the_classifier():
    value, problem = parse_result_text("[1, 2]", "results.json")
    assert value == [1, 2] and problem is None


# --- scores ---------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["score", "eval_score", "combined_score"])
def test_each_score_key_is_accepted(key):
    verdict = interpret_result({key: 0.25})
    assert verdict.outcome is Outcome.OK and verdict.score == 0.25


def test_score_key_order_prefers_score():
    assert interpret_result({"combined_score": 1, "score": 2}).score == 2.0


def test_integer_score_becomes_float():
    verdict = interpret_result({"score": 3})
    assert verdict.score == 3.0 and isinstance(verdict.score, float)


@pytest.mark.parametrize("value, message", [
    (float("nan"), "score is NaN"),
    (float("inf"), "score is infinite (inf)"),
    (float("-inf"), "score is infinite (-inf)"),
    (True, "score is True (a JSON bool), not a number"),
    ("0.5", "score is '0.5' (a JSON str), not a number"),
    (None, "score is None (a JSON null), not a number"),
    ([1], "score is [1] (a JSON list), not a number"),
])
def test_unusable_scores_are_candidate_errors_with_a_reason(value, message):
    assert score_problem(value) == message
    verdict = interpret_result({"score": value, "metrics": {"n": 1}})
    assert verdict.outcome is Outcome.CANDIDATE_ERROR
    assert verdict.error == message
    assert verdict.score is None
    assert verdict.metrics == {"n": 1}


def test_nan_parsed_from_json_text_is_caught():
    result = json.loads('{"score": NaN}')
    assert interpret_result(result).error == "score is NaN"


def test_missing_score_is_explained():
    verdict = interpret_result({"metrics": {"a": 1}})
    assert verdict.outcome is Outcome.CANDIDATE_ERROR
    assert verdict.error == "no 'score' (or eval_score/combined_score) in the evaluator's result"
    assert verdict.metrics == {"a": 1}


def test_error_without_score_reports_the_evaluators_error_and_keeps_metrics():
    verdict = interpret_result({"error": "schedule infeasible", "metrics": {"violations": 3}})
    assert verdict.outcome is Outcome.CANDIDATE_ERROR
    assert verdict.error == "schedule infeasible"
    assert verdict.metrics == {"violations": 3}


def test_error_with_a_valid_score_is_ok_and_keeps_the_note():
    verdict = interpret_result({"combined_score": 0.0, "error": "penalised: too slow"})
    assert verdict.outcome is Outcome.OK and verdict.score == 0.0
    assert verdict.error == "penalised: too slow"


@pytest.mark.parametrize("value, kind", [([1, 2], "list"), (None, "null"), (3, "int")])
def test_result_that_is_not_an_object(value, kind):
    verdict = interpret_result(value)
    assert verdict.outcome is Outcome.CANDIDATE_ERROR
    assert verdict.error == f"the evaluator's result is a JSON {kind}, not an object"


# --- metrics --------------------------------------------------------------------------------

def test_metrics_prefer_metrics_then_metadata_then_flat_keys():
    assert metrics_of({"score": 1, "metrics": {"a": 1}, "metadata": {"b": 2}}) == {"a": 1}
    assert metrics_of({"score": 1, "metadata": {"b": 2}}) == {"b": 2}
    flat = {"combined_score": 1, "accuracy": 0.9, "error": "x", "retry": False, "traceback": "t"}
    assert metrics_of(flat) == {"accuracy": 0.9}


def test_non_finite_metrics_become_strings_at_any_depth():
    cleaned = clean_metrics({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": float("-inf")}})
    assert cleaned == {"a": "NaN", "b": [1.0, "Infinity"], "c": {"d": "-Infinity"}}
    json.dumps(cleaned, allow_nan=False)  # storage must accept it


# --- exit status and signals ------------------------------------------------------------------

def test_signal_of_reads_negative_codes_and_shell_style_statuses():
    assert signal_of(-9) is signal.SIGKILL
    assert signal_of(137) is signal.SIGKILL
    assert signal_of(139) is signal.SIGSEGV
    assert signal_of(0) is None and signal_of(1) is None and signal_of(128) is None
    assert signal_of(None) is None and signal_of(200) is None


def test_ok_needs_exit_zero_and_a_score():
    verdict = run_judge(result={"score": 1.5, "metrics": {"m": 2}})
    assert (verdict.outcome, verdict.score, verdict.metrics, verdict.error) == (Outcome.OK, 1.5, {"m": 2}, None)


def test_our_kill_is_a_candidate_error_whatever_the_status():
    verdict = run_judge(exit_code=-9, killed_reason="timed out after 2.0 s")
    assert verdict.outcome is Outcome.CANDIDATE_ERROR and verdict.error == "timed out after 2.0 s"


@pytest.mark.parametrize("code", [-9, 137, -15, 143, -2, -1])
def test_stop_signals_we_did_not_send_are_infra_errors(code):
    verdict = run_judge(exit_code=code)
    assert verdict.outcome is Outcome.INFRA_ERROR
    assert "which evolveflow did not send" in verdict.error


@pytest.mark.parametrize("code, name", [(-11, "SIGSEGV"), (134, "SIGABRT"), (-24, "SIGXCPU")])
def test_crash_signals_are_candidate_errors(code, name):
    verdict = run_judge(exit_code=code, stderr="Fatal Python error: Segmentation fault\n")
    assert verdict.outcome is Outcome.CANDIDATE_ERROR
    assert verdict.error == f"evaluator died from {name}: Fatal Python error: Segmentation fault"


def test_exit_75_is_infra_with_stderr_detail():
    verdict = run_judge(exit_code=75, stderr="GPU busy\n")
    assert verdict.outcome is Outcome.INFRA_ERROR
    assert verdict.error == "evaluator exited with status 75 (EX_TEMPFAIL, temporary failure): GPU busy"


def test_retry_request_is_infra_even_with_nonzero_exit():
    verdict = run_judge(exit_code=1, result={"retry": True, "error": "license server down"})
    assert verdict.outcome is Outcome.INFRA_ERROR and verdict.error == "license server down"
    assert run_judge(result={"retry": True}).error == "the evaluator asked for a retry ('retry': true)"


def test_retry_false_changes_nothing():
    assert run_judge(result={"retry": False, "score": 2}).outcome is Outcome.OK


def test_nonzero_exit_prefers_the_results_error_field():
    verdict = run_judge(exit_code=1, result={"error": "ValueError: bad", "metrics": {"k": 1}},
                        stderr="Traceback...\nValueError: bad\n")
    assert verdict.outcome is Outcome.CANDIDATE_ERROR
    assert verdict.error == "ValueError: bad" and verdict.metrics == {"k": 1}


def test_nonzero_exit_falls_back_to_last_stderr_lines():
    stderr = "\n".join(f"line {i}" for i in range(40)) + "\n\n"
    verdict = run_judge(exit_code=2, stderr=stderr)
    assert verdict.error == "\n".join(f"line {i}" for i in range(25, 40))


def test_nonzero_exit_with_silent_stderr_says_so():
    assert run_judge(exit_code=3).error == "evaluator exited with status 3 and printed nothing on stderr"


def test_nonzero_exit_ignores_a_score():
    verdict = run_judge(exit_code=1, result={"score": 5})
    assert verdict.outcome is Outcome.CANDIDATE_ERROR and verdict.score is None


def test_missing_result_uses_the_given_reason():
    verdict = run_judge(result_problem="the evaluator printed no JSON object on stdout and wrote no results.json")
    assert verdict.outcome is Outcome.CANDIDATE_ERROR
    assert verdict.error == "the evaluator printed no JSON object on stdout and wrote no results.json"


def test_score_is_float_and_finite_on_ok():
    verdict = run_judge(result={"score": 10**6})
    assert math.isfinite(verdict.score)
