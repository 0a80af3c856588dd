"""Each evaluator contract through run_evaluation: ok, failure shapes, infra errors, detection, imports, kept files.

The evaluators are written here (tests/support/contracts.py) to each framework's documented
contract; the expected scores are computed from that framework's own rules, not read back.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from evolveflow.evaluation import EvaluatorConfigError, EvaluatorSpec, bwrap_problem, check_evaluator, run_evaluation
from evolveflow.evaluation.adapters import detect_contract
from evolveflow.records import Outcome
from tests.support import contracts as c

BWRAP_PROBLEM = bwrap_problem()
needs_bwrap = pytest.mark.skipif(BWRAP_PROBLEM is not None, reason=f"bwrap unusable: {BWRAP_PROBLEM}")
LEVELS = ["process", pytest.param("bwrap", marks=needs_bwrap)]


def evaluate(code: str, path: Path, level: str, step: int = 3, **spec):
    return run_evaluation(code, EvaluatorSpec(path=path, sandbox=level, timeout_s=60, **spec), step=step)


def assert_candidate_error(result, *fragments: str) -> None:
    assert result.outcome == Outcome.CANDIDATE_ERROR, (result.outcome, result.score, result.error)
    assert result.score is None
    for fragment in fragments:
        assert fragment in result.error, (fragment, result.error)
    assert result.feedback["error"] == result.error  # the reason reaches the LLM


# ---- ASI-Evolve ----------------------------------------------------------------------------------

def asi(tmp_path: Path, eval_sh: str = c.ASI_EVAL_SH) -> Path:
    return c.write_asi_experiment(tmp_path / "experiment", eval_sh=eval_sh)


@pytest.mark.parametrize("level", LEVELS)
def test_asi_ok_runs_eval_sh_without_exec_bit_from_the_step_directory(tmp_path, level):
    script = asi(tmp_path)
    assert not os.access(script, os.X_OK)
    result = evaluate(c.program(1.5), script, level)
    assert result.outcome == Outcome.OK and result.score == 1.5 and result.error is None
    # eval_score / success / score / temp are bookkeeping, the other keys of results.json are metrics
    assert set(result.metrics) == {"value", "validity", "combined_score", "eval_time"}
    assert result.metrics["value"] == 1.5 and result.metrics["validity"] == 1.0
    assert "evaluation finished: eval_score 1.5" in result.feedback["eval.log"]
    assert result.private_metrics == {}


@pytest.mark.parametrize("level", LEVELS)
def test_asi_layout_is_the_references(tmp_path, level):
    """bash eval.sh with no argument, cwd = <copy>/steps/step_N, the candidate in ./code."""
    script = asi(tmp_path, eval_sh=(
        'printf \'{"eval_score": 1.0, "success": true, "argc": %s, "step": "%s", "parent": "%s", '
        '"experiment_copy": %s, "code": "%s"}\' "$#" "$(basename "$PWD")" "$(basename "$(dirname "$PWD")")" '
        '"$([ -f ../../evaluator.py ] && echo true || echo false)" "$(cat code)" > results.json\n'))
    result = evaluate("x = 1", script, level, step=7, contract="asi")
    assert result.outcome == Outcome.OK, result.error
    assert result.metrics == {"argc": 0, "step": "step_7", "parent": "steps", "experiment_copy": True, "code": "x = 1"}


@pytest.mark.parametrize("level", LEVELS)
def test_asi_success_false_is_a_candidate_error_with_the_stated_error(tmp_path, level):
    result = evaluate(c.program(-2.0), asi(tmp_path), level)
    assert_candidate_error(result, "success: false", "value -2.0 is not a finite number >= 0")
    assert result.metrics["validity"] == 0.0 and result.metrics["combined_score"] == 0.0


@pytest.mark.parametrize("level", LEVELS)
def test_asi_candidate_that_raises_is_a_candidate_error(tmp_path, level):
    result = evaluate(c.program("1 / 0"), asi(tmp_path), level)
    assert_candidate_error(result, "success: false", "ZeroDivisionError: division by zero")


@pytest.mark.parametrize("level", LEVELS)
def test_asi_exit_trap_result_is_a_candidate_error_with_temp_error(tmp_path, level):
    """The reference eval.sh turns any failure into success: false + temp.error and exit 0."""
    # empty code: eval.sh exits 1, its EXIT trap writes the failure result and exits 0
    result = evaluate("", asi(tmp_path), level, contract="asi")
    assert_candidate_error(result, "success: false", "Evaluation failed. See eval.log for details.")
    assert "Evaluation failed" in result.feedback["temp"]
    assert "no code to evaluate" in result.feedback["eval.log"]
    assert result.metrics == {"validity": 0.0}


@pytest.mark.parametrize("level", LEVELS)
def test_asi_results_txt_alone_is_shown_but_never_scored(tmp_path, level):
    result = evaluate("x = 1", asi(tmp_path, eval_sh="echo 'sum of radii: 2.6' > results.txt\n"), level, contract="asi")
    assert_candidate_error(result, "no results.json", "results.txt says: sum of radii: 2.6")


@pytest.mark.parametrize("level", LEVELS)
def test_asi_nonzero_exit_ignores_results_json(tmp_path, level):
    script = asi(tmp_path, eval_sh=(
        'echo \'{"eval_score": 5.0, "success": true}\' > results.json\necho "compiler crashed" >&2\nexit 3\n'))
    result = evaluate("x = 1", script, level, contract="asi")
    assert_candidate_error(result, "eval.sh exited with status 3", "compiler crashed")
    assert result.exit_code == 3


@pytest.mark.parametrize("level", LEVELS)
def test_asi_results_without_eval_score_or_with_a_bad_one(tmp_path, level):
    script = asi(tmp_path, eval_sh='echo \'{"success": true, "n": 3}\' > results.json\n')
    result = evaluate("x = 1", script, level, contract="asi")
    assert_candidate_error(result, "results.json has no eval_score")
    assert result.metrics == {"n": 3}
    script = asi(tmp_path, eval_sh='echo \'{"success": true, "eval_score": "high"}\' > results.json\n')
    assert_candidate_error(evaluate("x = 1", script, level, contract="asi"), "eval_score is 'high'")


@pytest.mark.parametrize("level", LEVELS)
def test_asi_missing_success_is_accepted(tmp_path, level):
    script = asi(tmp_path, eval_sh='echo \'{"eval_score": 2}\' > results.json\n')
    result = evaluate("x = 1", script, level, contract="asi")
    assert result.outcome == Outcome.OK and result.score == 2.0


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("eval_sh, reason", [
    ('echo "license server down" >&2\nexit 75\n', "license server down"),
    ('echo \'{"retry": true, "error": "GPU busy", "eval_score": 0.0}\' > results.json\n', "GPU busy"),
])
def test_asi_infra_errors(tmp_path, level, eval_sh, reason):
    result = evaluate("x = 1", asi(tmp_path, eval_sh=eval_sh), level, contract="asi")
    assert result.outcome == Outcome.INFRA_ERROR and result.score is None
    assert reason in result.error


# ---- OpenEvolve ----------------------------------------------------------------------------------

def openevolve(tmp_path: Path, text: str) -> Path:
    return c.write_file(tmp_path / "experiment", "evaluator.py", text)


@pytest.mark.parametrize("level", LEVELS)
def test_openevolve_dict_ok(tmp_path, level):
    result = evaluate(c.program(1.5), openevolve(tmp_path, c.OPENEVOLVE_DICT), level, contract="openevolve")
    assert result.outcome == Outcome.OK and result.score == 1.5 and result.error is None
    assert result.metrics == {"validity": 1.0, "combined_score": 1.5, "value": 1.5, "cascade_stage": 0}
    assert result.feedback == {} and result.private_metrics == {}


@pytest.mark.parametrize("level", LEVELS)
def test_openevolve_without_combined_score_scores_the_mean_of_numeric_metrics(tmp_path, level):
    metrics = {"accuracy": 0.5, "speed": 2.0, "compiled": True, "label": "fast"}
    path = openevolve(tmp_path, f"def evaluate(program_path):\n    return {metrics!r}\n")
    result = evaluate("x = 1", path, level, contract="openevolve")
    assert result.outcome == Outcome.OK
    assert result.score == pytest.approx(c.openevolve_fitness(metrics)) == 1.25  # the bool is not averaged
    assert result.metrics == {**metrics, "cascade_stage": 0}


@pytest.mark.parametrize("level", LEVELS)
def test_openevolve_evaluation_result_artifacts_become_feedback(tmp_path, level):
    result = evaluate(c.program(1.5), openevolve(tmp_path, c.OPENEVOLVE_RESULT), level)  # auto-detected
    assert result.outcome == Outcome.OK and result.score == 1.5
    assert result.metrics == {"combined_score": 1.5, "value": 1.5, "cascade_stage": 0}
    assert result.feedback["artifact:note"] == "value() returned 1.5"
    assert "artifact:raw" in result.feedback


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("shape, reason", [
    ({"combined_score": 0.0, "error": "no valid packing found"}, "no valid packing found"),
    ({"validity": 0.0, "combined_score": 0.0, "sum_radii": 2.0}, "validity: 0.0"),
    ({"timeout": True}, "timeout: true"),
    ({"error": 0.0, "timeout": True}, "timeout: true"),
    ({"error": 0.0}, "failure shape"),
    ({"runs_successfully": 0.0, "error": "Missing run_search function"}, "Missing run_search function"),
    ({"label": "nothing numeric"}, "no numeric metric"),
])
def test_openevolve_failure_shapes_are_candidate_errors(tmp_path, level, shape, reason):
    path = openevolve(tmp_path, f"def evaluate(program_path):\n    return {shape!r}\n")
    result = evaluate("x = 1", path, level, contract="openevolve")
    assert_candidate_error(result, reason)
    assert result.metrics == {**shape, "cascade_stage": 0}


@pytest.mark.parametrize("level", LEVELS)
def test_openevolve_exception_and_non_dict_are_candidate_errors(tmp_path, level):
    raising = openevolve(tmp_path, "def evaluate(program_path):\n    raise ValueError('Invalid shapes')\n")
    result = evaluate("x = 1", raising, level, contract="openevolve")
    assert_candidate_error(result, "ValueError: Invalid shapes")
    assert result.metrics == {}
    nothing = openevolve(tmp_path, "def evaluate(program_path):\n    return None\n")
    assert_candidate_error(evaluate("x = 1", nothing, level, contract="openevolve"), "null")


@pytest.mark.parametrize("level", LEVELS)
def test_openevolve_evaluation_result_failure_quotes_its_stderr_artifact(tmp_path, level):
    result = evaluate(c.program("1 / 0"), openevolve(tmp_path, c.OPENEVOLVE_RESULT), level)
    assert_candidate_error(result, "failure shape", "ZeroDivisionError: division by zero")
    assert result.feedback["artifact:failure_stage"] == "run"
    invalid = evaluate(c.program(-1.0), openevolve(tmp_path, c.OPENEVOLVE_RESULT), level)
    assert_candidate_error(invalid, "validity: 0.0")
    assert invalid.feedback["artifact:suggestion"] == "return a value >= 0"


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("value, stage", [(0.2, 1), (0.5, 2), (0.6, 2), (0.9, 3)])
def test_openevolve_cascade_stops_below_each_threshold(tmp_path, level, value, stage):
    path = openevolve(tmp_path, c.OPENEVOLVE_CASCADE)
    result = evaluate(c.program(value), path, level)
    expected_stage, expected_score = c.openevolve_cascade_expectation(value)
    assert expected_stage == stage
    assert result.outcome == Outcome.OK, result.error
    assert result.metrics["cascade_stage"] == stage
    assert result.score == pytest.approx(expected_score)
    assert ("stage2" in result.metrics) == (stage >= 2)
    assert ("artifact:stage2_note" in result.feedback) == (stage >= 2)


@pytest.mark.parametrize("level", LEVELS)
def test_openevolve_cascade_stage_that_raises_or_fails(tmp_path, level):
    path = openevolve(tmp_path, c.OPENEVOLVE_CASCADE)
    raised = evaluate(c.program(0.66), path, level)  # stage 2 raises for 0.66
    assert_candidate_error(raised, "RuntimeError: stage 2 blew up")
    assert raised.metrics == {"stage1": 0.66, "cascade_stage": 1}
    failed = evaluate(c.program("1 / 0"), path, level)  # stage 1 returns the circle-packing failure shape
    assert_candidate_error(failed, "validity: 0.0", "division by zero")
    assert failed.metrics["cascade_stage"] == 1
    negative = evaluate(c.program(-2.0), path, level)
    assert_candidate_error(negative, "validity: 0.0", "value -2.0 is negative")
    assert negative.metrics == {"validity": 0.0, "error": "value -2.0 is negative", "cascade_stage": 1}


@pytest.mark.parametrize("level", LEVELS)
def test_openevolve_cascade_off_calls_evaluate(tmp_path, level):
    result = evaluate(c.program(0.9), openevolve(tmp_path, c.OPENEVOLVE_CASCADE), level, cascade=False)
    assert result.outcome == Outcome.OK and result.score == -1.0
    assert result.metrics == {"combined_score": -1.0, "direct": 1.0, "cascade_stage": 0}


@pytest.mark.parametrize("level", LEVELS)
def test_openevolve_infra_errors(tmp_path, level):
    down = openevolve(tmp_path, "import os\n\ndef evaluate(program_path):\n    os._exit(75)\n")
    result = evaluate("x = 1", down, level, contract="openevolve")
    assert result.outcome == Outcome.INFRA_ERROR and "status 75" in result.error
    retry = openevolve(tmp_path, "def evaluate(program_path):\n    return {'retry': True, 'error': 'GPU busy'}\n")
    result = evaluate("x = 1", retry, level, contract="openevolve")
    assert result.outcome == Outcome.INFRA_ERROR and result.error == "GPU busy"


# ---- ShinkaEvolve --------------------------------------------------------------------------------

def shinka(tmp_path: Path, text: str = c.SHINKA_WRAPPED) -> Path:
    return c.write_file(tmp_path / "experiment", "evaluate.py", text)


@pytest.mark.parametrize("level", LEVELS)
def test_shinka_run_shinka_eval_ok_keeps_private_metrics_out_of_metrics(tmp_path, level):
    result = evaluate(c.program(1.5), shinka(tmp_path), level)
    assert result.outcome == Outcome.OK and result.score == 1.5 and result.error is None
    assert result.metrics["value"] == 1.5  # public metrics are shown
    assert {"num_valid_runs", "execution_time_mean"} <= set(result.metrics)
    assert not {"private", "secret_value", "public", "text_feedback", "combined_score"} & set(result.metrics)
    assert result.private_metrics == {"secret_value": 3.0}
    assert result.feedback == {"text_feedback": "value() returned 1.5"}


@pytest.mark.parametrize("level", LEVELS)
def test_shinka_validation_failure_is_a_candidate_error(tmp_path, level):
    result = evaluate(c.program(-2.0), shinka(tmp_path), level)
    assert_candidate_error(result, "correct: false", "Validation failed: value -2.0 is negative")
    assert result.private_metrics == {"secret_value": -4.0} and "secret_value" not in result.metrics
    assert result.metrics["num_invalid_runs"] == 1


@pytest.mark.parametrize("level", LEVELS)
def test_shinka_candidate_exception_is_correct_false_with_its_error(tmp_path, level):
    result = evaluate(c.program("1 / 0"), shinka(tmp_path), level)
    assert_candidate_error(result, "correct: false", "division by zero")
    assert result.metrics["num_successful_runs"] == 0 and result.private_metrics == {}


@pytest.mark.parametrize("level", LEVELS)
def test_shinka_script_writing_its_own_files(tmp_path, level):
    path = shinka(tmp_path, c.SHINKA_SELF)
    result = evaluate(c.program(1.5), path, level)
    assert result.outcome == Outcome.OK and result.score == 1.5
    assert result.metrics == {"value": 1.5} and result.private_metrics == {"cost": 0.5}
    assert result.feedback == {"text_feedback": "checked value()\ngot 1.5"}
    incorrect = evaluate(c.program(-2.0), path, level)
    assert_candidate_error(incorrect, "correct: false", "value -2.0 is negative")
    assert incorrect.private_metrics == {"cost": 0.5} and incorrect.metrics == {"value": -2.0}


SHINKA_WRITES = '''import argparse, json, os
parser = argparse.ArgumentParser()
parser.add_argument("--program_path")
parser.add_argument("--results_dir")
args = parser.parse_args()
def write(name, text):
    with open(os.path.join(args.results_dir, name), "w") as handle:
        handle.write(text)
'''


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("body, reason", [
    ("pass", "no usable metrics.json"),
    ("write('metrics.json', '{\"combined_score\": 1.0}')", "no usable correct.json"),
    ("write('correct.json', '{\"correct\": true}')", "no usable metrics.json"),
    ("write('metrics.json', '{\"public\": {\"n\": 1}}'); write('correct.json', '{\"correct\": true}')",
     "no combined_score"),
    ("write('metrics.json', '{\"combined_score\": 1.0, ')\nwrite('correct.json', '{\"correct\": true}')",
     "not valid JSON"),
    ("write('metrics.json', '{\"combined_score\": 1.0, \"public\": {\"validity\": 0}}'); "
     "write('correct.json', '{\"correct\": true}')", "validity: 0"),
    ("write('metrics.json', '{\"combined_score\": 1.0}'); write('correct.json', '{\"correct\": \"yes\"}')",
     "correct: false"),
])
def test_shinka_missing_or_unusable_files_are_candidate_errors(tmp_path, level, body, reason):
    path = shinka(tmp_path, SHINKA_WRITES + "if __name__ == '__main__':\n    " + body.replace("\n", "\n    ") + "\n")
    assert_candidate_error(evaluate("x = 1", path, level), reason)


@pytest.mark.parametrize("level", LEVELS)
def test_shinka_infra_errors(tmp_path, level):
    down = shinka(tmp_path, "import os\n\nif __name__ == '__main__':\n    os._exit(75)\n")
    result = evaluate("x = 1", down, level)
    assert result.outcome == Outcome.INFRA_ERROR and "status 75" in result.error
    retry = shinka(tmp_path, SHINKA_WRITES + (
        "if __name__ == '__main__':\n    write('metrics.json', json.dumps({'retry': True, 'error': 'GPU busy'}))\n"))
    result = evaluate("x = 1", retry, level)
    assert result.outcome == Outcome.INFRA_ERROR and result.error == "GPU busy"


# ---- native --------------------------------------------------------------------------------------

@pytest.mark.parametrize("level", LEVELS)
def test_native_script_ok_invalid_and_broken(tmp_path, level):
    script = c.write_native_script(tmp_path / "experiment")
    ok = evaluate(c.program(1.5), script, level)
    assert ok.outcome == Outcome.OK and ok.score == 1.5 and ok.metrics == {"value": 1.5}
    invalid = evaluate(c.program(-2.0), script, level)
    assert_candidate_error(invalid, "valid: false", "value -2.0 is negative")
    broken = evaluate(c.program("1 / 0"), script, level)
    assert_candidate_error(broken, "ZeroDivisionError: division by zero")
    assert broken.exit_code == 1


@pytest.mark.parametrize("level", LEVELS)
def test_native_python_ok_invalid_and_broken(tmp_path, level):
    path = c.write_file(tmp_path / "experiment", "evaluator.py", c.NATIVE_PYTHON)
    ok = evaluate(c.program(1.5), path, level)
    assert ok.outcome == Outcome.OK and ok.score == 1.5 and ok.metrics == {"value": 1.5}
    assert_candidate_error(evaluate(c.program(-2.0), path, level), "valid: false", "value -2.0 is negative")
    assert_candidate_error(evaluate(c.program("1 / 0"), path, level), "ZeroDivisionError: division by zero")


@pytest.mark.parametrize("level", LEVELS)
def test_native_infra_errors(tmp_path, level):
    script = c.write_file(tmp_path / "a", "eval.sh", '#!/bin/sh\necho "dataset mount missing" >&2\nexit 75\n')
    script.chmod(0o755)
    result = evaluate("x = 1", script, level)
    assert result.outcome == Outcome.INFRA_ERROR and "dataset mount missing" in result.error
    retry = c.write_file(tmp_path / "b", "eval.sh", '#!/bin/sh\necho \'{"retry": true, "error": "GPU busy"}\'\n')
    retry.chmod(0o755)
    assert evaluate("x = 1", retry, level).outcome == Outcome.INFRA_ERROR
    python = c.write_file(tmp_path / "c", "evaluator.py",
                          "def evaluate(program_path):\n    return {'retry': True, 'error': 'GPU busy', 'score': 0}\n")
    result = evaluate("x = 1", python, level)
    assert result.outcome == Outcome.INFRA_ERROR and result.error == "GPU busy"


# ---- auto-detection ------------------------------------------------------------------------------

@pytest.mark.parametrize("name, text, expected", [
    ("evaluate.py", c.SHINKA_WRAPPED, "shinka"),
    ("evaluate.py", c.SHINKA_SELF, "shinka"),
    ("judge.py", "from shinka.core import run_shinka_eval\n", "shinka"),
    ("judge.py", "import argparse\np = argparse.ArgumentParser()\np.add_argument('--results_dir')\n", "shinka"),
    ("evaluator.py", c.OPENEVOLVE_RESULT, "openevolve"),
    ("evaluator.py", c.OPENEVOLVE_CASCADE, "openevolve"),
    ("evaluator.py", "def evaluate_stage1(path):\n    return {'combined_score': 1.0}\n", "openevolve"),
    ("evaluator.py", c.NATIVE_PYTHON, "native"),
    ("evaluator.py", c.OPENEVOLVE_DICT, "openevolve"),  # names combined_score only: OpenEvolve's rules
    ("evaluator.py", "def evaluate(path):\n    return {'eval_score': 1.0}\n", "native"),
    ("eval.sh", c.ASI_EVAL_SH, "asi"),
    ("eval.sh", 'cd "$EXP/steps/step_1" && python3 judge.py "$1"\n', "asi"),
    ("eval.sh", "python3 ../../evaluator.py code > results.txt\n", "asi"),
    ("eval.sh", c.NATIVE_SCRIPT, "native"),
    ("eval.sh", '#!/bin/sh\npython3 judge.py "$@"\n', "native"),
    ("eval.sh", '#!/bin/sh\npython3 judge.py "${1}" > results.json\n', "native"),  # reads $1: not ASI
    ("run_judge", "#!/bin/sh\necho '{\"score\": 1}'\n", "native"),
])
def test_detect_contract(tmp_path, name, text, expected):
    path = c.write_file(tmp_path, name, text)
    assert detect_contract(path) == expected
    assert EvaluatorSpec(path=path).resolved_contract == expected
    assert EvaluatorSpec(path=path, contract="shinka").resolved_contract == "shinka"  # explicit wins


# ---- evaluation.python / evaluation.pythonpath ---------------------------------------------------

IMPORTS_MYLIB = {
    "native": ("evaluator.py", "import mylib\n" + c.NATIVE_PYTHON.replace(
        "return {\"score\": value,", "return {\"score\": value + mylib.BONUS,")),
    "openevolve": ("evaluator.py", "import mylib\n" + c.OPENEVOLVE_RESULT.replace(
        "metrics={\"combined_score\": value,", "metrics={\"combined_score\": value + mylib.BONUS,")),
    "shinka": ("evaluate.py", "import mylib\n" + c.SHINKA_WRAPPED.replace(
        "{\"combined_score\": value,", "{\"combined_score\": value + mylib.BONUS,")),
}


def mylib_setup(tmp_path: Path, contract: str) -> tuple[Path, Path]:
    """Write an evaluator importing `mylib` and the package in another folder; return (evaluator, lib)."""
    lib = tmp_path / "lib"
    c.write_file(lib / "mylib", "__init__.py", "BONUS = 0.5\n")
    name, text = IMPORTS_MYLIB[contract]
    assert "mylib.BONUS" in text
    return c.write_file(tmp_path / "experiment", name, text), lib


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("contract", ["native", "openevolve", "shinka"])
def test_pythonpath_makes_a_package_importable(tmp_path, level, contract):
    evaluator, lib = mylib_setup(tmp_path, contract)
    spec = EvaluatorSpec(path=evaluator, sandbox=level, pythonpath=(lib,))
    assert spec.resolved_contract == contract
    check_evaluator(spec)
    result = run_evaluation(c.program(1.5), spec)
    assert result.outcome == Outcome.OK and result.score == 2.0


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("contract", ["native", "openevolve", "shinka"])
def test_missing_package_is_one_clear_line_at_check_time(tmp_path, level, contract):
    evaluator, _ = mylib_setup(tmp_path, contract)
    with pytest.raises(EvaluatorConfigError) as caught:
        check_evaluator(EvaluatorSpec(path=evaluator, sandbox=level))
    message = str(caught.value)
    assert "\n" not in message, message
    assert f"evaluator {evaluator} cannot be used: it imports 'mylib', which {sys.executable} cannot import" in message
    assert "evaluation.python" in message and "evaluation.pythonpath" in message


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("contract", ["native", "openevolve", "shinka"])
def test_missing_package_at_run_time_is_an_infra_error(tmp_path, level, contract):
    evaluator, _ = mylib_setup(tmp_path, contract)
    result = run_evaluation(c.program(1.5), EvaluatorSpec(path=evaluator, sandbox=level))
    assert result.outcome == Outcome.INFRA_ERROR, (result.outcome, result.error)
    assert "mylib" in result.error and "evaluation.pythonpath" in result.error


@pytest.mark.parametrize("level", LEVELS)
def test_evaluation_python_picks_the_interpreter(tmp_path, level):
    evaluator, lib = mylib_setup(tmp_path, "openevolve")
    # An "interpreter that has mylib": a wrapper around ours that puts the library on its path.
    venv = tmp_path / "venv"
    c.write_file(venv / "lib" / "mylib", "__init__.py", "BONUS = 0.25\n")
    python = c.write_file(venv / "bin", "python",
                          f'#!/bin/sh\nPYTHONPATH="{venv / "lib"}" exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    spec = EvaluatorSpec(path=evaluator, sandbox=level, python=str(python))
    check_evaluator(spec)
    result = run_evaluation(c.program(1.5), spec)
    assert result.outcome == Outcome.OK and result.score == 1.75
    with pytest.raises(EvaluatorConfigError, match=r"evaluation.python = /no/such/python: no such executable"):
        check_evaluator(EvaluatorSpec(path=evaluator, sandbox=level, python="/no/such/python"))


# ---- kept files ----------------------------------------------------------------------------------

SHINKA_LEAVES_FILES = SHINKA_WRITES + '''
if __name__ == "__main__":
    write("metrics.json", json.dumps({"combined_score": 1.0}))
    write("correct.json", json.dumps({"correct": True}))
    write("notes.txt", "kept")
    write("big.bin", "x" * 5000)
    os.makedirs(os.path.join(args.results_dir, "plots"))
    write("plots/curve.txt", "also kept")
    write("shared.txt", "hard-linked")
    os.link(os.path.join(args.results_dir, "shared.txt"), os.path.join(args.results_dir, "shared_again.txt"))
    os.symlink("notes.txt", os.path.join(args.results_dir, "link.txt"))
    os.symlink("/etc/hostname", os.path.join(args.results_dir, "outside.txt"))
    os.symlink(os.path.dirname(args.program_path), os.path.join(args.results_dir, "linked_dir"))
'''


def kept(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("level", LEVELS)
def test_kept_files_are_regular_files_only_within_the_cap(tmp_path, level):
    target = tmp_path / "kept"
    spec = EvaluatorSpec(path=shinka(tmp_path, SHINKA_LEAVES_FILES), sandbox=level, keep_files_max_bytes=1000)
    result = run_evaluation("x = 1", spec, keep_files_to=target)
    assert result.outcome == Outcome.OK, result.error
    files = kept(target)
    # big.bin is over the cap (later, smaller files are still kept); links of either kind are not copied
    assert files == {"correct.json": '{"correct": true}', "metrics.json": '{"combined_score": 1.0}',
                     "notes.txt": "kept", "plots/curve.txt": "also kept"}
    assert not any(p.is_symlink() for p in target.rglob("*"))


@pytest.mark.parametrize("level", LEVELS)
def test_kept_files_of_an_asi_step_leave_the_candidate_out(tmp_path, level):
    target = tmp_path / "kept"
    run_evaluation(c.program(1.5), EvaluatorSpec(path=asi(tmp_path), sandbox=level), step=2, keep_files_to=target)
    files = kept(target)
    assert set(files) == {"results.json", "eval.log"}
    assert '"eval_score": 1.5' in files["results.json"]


def test_no_files_are_kept_when_the_cap_is_zero_or_no_target(tmp_path):
    path = shinka(tmp_path, SHINKA_LEAVES_FILES)
    target = tmp_path / "kept"
    run_evaluation("x = 1", EvaluatorSpec(path=path, sandbox="process", keep_files_max_bytes=0), keep_files_to=target)
    assert not target.exists()
    total = run_evaluation("x = 1", EvaluatorSpec(path=path, sandbox="process", keep_files_max_bytes=40),
                           keep_files_to=target)
    assert total.outcome == Outcome.OK
    assert sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) <= 40


@pytest.mark.parametrize("level", LEVELS)
def test_shinka_check_runs_only_the_scripts_imports(tmp_path, level):
    """A script without a __main__ guard must not run its evaluation when checked at start."""
    folder = tmp_path / "experiment"
    folder.mkdir()
    script = folder / "evaluate.py"
    script.write_text("import json\nimport sys\nraise SystemExit('this evaluation ran at check time')\n")
    check_evaluator(EvaluatorSpec(path=script, sandbox=level))
    script.write_text("import shinka_that_does_not_exist\n")
    with pytest.raises(EvaluatorConfigError, match="it imports 'shinka_that_does_not_exist'"):
        check_evaluator(EvaluatorSpec(path=script, sandbox=level))


@pytest.mark.parametrize("level", LEVELS)
def test_sys_exit_75_is_infra_only_from_the_evaluators_own_code(tmp_path, level):
    folder = tmp_path / "experiment"
    folder.mkdir()
    evaluator = folder / "evaluator.py"
    evaluator.write_text(
        "import importlib.util, sys\n"
        "def evaluate(program_path):\n"
        "    if 'license' in open(program_path).read():\n"
        "        sys.exit(75)\n"
        "    spec = importlib.util.spec_from_file_location('c', program_path)\n"
        "    module = importlib.util.module_from_spec(spec)\n"
        "    spec.loader.exec_module(module)\n"
        "    return {'score': 1.0}\n")
    spec = EvaluatorSpec(path=evaluator, sandbox=level)
    assert run_evaluation("# license server down\n", spec).outcome == Outcome.INFRA_ERROR
    from_candidate = run_evaluation("import sys\nsys.exit(75)\n", spec)
    assert (from_candidate.outcome, from_candidate.error) == (Outcome.CANDIDATE_ERROR, "SystemExit: 75")
    script = folder / "evaluate.py"
    script.write_text("import sys\nsys.exit(75)\n")
    assert run_evaluation("", EvaluatorSpec(path=script, sandbox=level)).outcome == Outcome.INFRA_ERROR
