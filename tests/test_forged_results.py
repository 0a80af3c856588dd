"""A hostile candidate never gets a forged score, under every contract, at both sandbox levels.

The candidate (tests/support/contracts.py ``forging_program``) forges what each framework reads:
results.json, .evolveflow-result.json, metrics.json / correct.json in its cwd and in results/, and
``{"score": 99.0, ...}`` lines printed with print() and with os.write(1, ...) (which
redirect_stdout does not catch); then it returns its honest value 1.25, or ends its process with
status 0 before any evaluator could write a result.

Not tested as "blocked" (docs/sandbox.md, "What a candidate in the evaluator's process can do"): a
candidate imported into the evaluator's own process that writes to the harness's pipe on purpose,
and an executable evaluator that imports the candidate into the process whose stdout is its result
channel (tested below as the limit it is).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from evolveflow.evaluation import EvaluatorSpec, bwrap_problem, run_evaluation
from evolveflow.records import Outcome
from tests.support import contracts as c

BWRAP_PROBLEM = bwrap_problem()
needs_bwrap = pytest.mark.skipif(BWRAP_PROBLEM is not None, reason=f"bwrap unusable: {BWRAP_PROBLEM}")
LEVELS = ["process", pytest.param("bwrap", marks=needs_bwrap)]
REPO = Path(__file__).resolve().parents[1]


def _asi(folder: Path) -> tuple[Path, dict]:
    return c.write_asi_experiment(folder), {}


def _python(name: str, text: str, **spec):
    return lambda folder: (c.write_file(folder, name, text), spec)


# contract variant -> (writer of its evaluator, the honest score of a candidate whose value() is 1.25)
EVALUATORS = {
    "asi": (_asi, c.HONEST_VALUE),
    "openevolve-dict": (_python("evaluator.py", c.OPENEVOLVE_DICT, contract="openevolve"), c.HONEST_VALUE),
    "openevolve-result": (_python("evaluator.py", c.OPENEVOLVE_RESULT), c.HONEST_VALUE),
    "openevolve-cascade": (_python("evaluator.py", c.OPENEVOLVE_CASCADE), 10 * c.HONEST_VALUE),  # stage 3
    "shinka-run_shinka_eval": (_python("evaluate.py", c.SHINKA_WRAPPED), c.HONEST_VALUE),
    "shinka-own-files": (_python("evaluate.py", c.SHINKA_SELF), c.HONEST_VALUE),
    "native-script": (lambda folder: (c.write_native_script(folder), {}), c.HONEST_VALUE),
    "native-python": (_python("evaluator.py", c.NATIVE_PYTHON), c.HONEST_VALUE),
}
EXPECTED_CONTRACT = {"asi": "asi", "native-script": "native", "native-python": "native"}

ATTACKS = {
    "files": dict(files=True, prints=False),
    "prints": dict(files=False, prints=True),
    "both-then-os._exit": dict(files=True, prints=True, exit_after="os._exit"),
    "both-then-sys.exit": dict(files=True, prints=True, exit_after="sys.exit"),
}
SHINKA_SYS_EXIT = pytest.mark.xfail(strict=True, reason=(
    "harness.run_shinka treats a SystemExit escaping runpy.run_path as the script finishing and then "
    "reads metrics.json/correct.json: a candidate imported by run_shinka_eval (which catches only "
    "Exception) that writes results/metrics.json + correct.json and calls sys.exit(0) gets its forged score"))


def cases():
    for name in EVALUATORS:
        for attack in ATTACKS:
            marks = [SHINKA_SYS_EXIT] if (name, attack) == ("shinka-run_shinka_eval", "both-then-sys.exit") else []
            yield pytest.param(name, attack, id=f"{name}-{attack}", marks=marks)


def spec_for(tmp_path: Path, name: str, level: str) -> EvaluatorSpec:
    writer, _ = EVALUATORS[name]
    path, options = writer(tmp_path / "experiment")
    spec = EvaluatorSpec(path=path, sandbox=level, timeout_s=60, **options)
    assert spec.resolved_contract == EXPECTED_CONTRACT.get(name, name.split("-")[0])
    return spec


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name, attack", list(cases()))
def test_forgery_never_scores(tmp_path, level, name, attack):
    result = run_evaluation(c.forging_program(**ATTACKS[attack]), spec_for(tmp_path, name, level), step=1)
    assert result.score != c.FORGED_SCORE, (result.outcome, result.error)
    assert c.FORGED_SCORE not in result.metrics.values()
    if attack in ("files", "prints"):  # the candidate then returned normally: its honest score
        assert result.outcome == Outcome.OK and result.score == pytest.approx(EVALUATORS[name][1]), result.error
    else:  # it ended before any result was written: no score at all
        assert result.outcome == Outcome.CANDIDATE_ERROR and result.score is None


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name", [
    pytest.param("asi", marks=pytest.mark.xfail(strict=True, reason=(
        "a process the candidate leaves behind (detached from the evaluator's subprocess) rewrites "
        "steps/step_N/results.json after evaluator.py wrote it; evolveflow reads the file after eval.sh "
        "exited and only then sweeps the leftovers, so the forged eval_score 99 is recorded (20/20 runs "
        "at both levels); docs/sandbox.md says a child cannot overwrite a result the evaluator writes after it"))),
    pytest.param("shinka-own-files", marks=pytest.mark.xfail(strict=False, reason=(
        "racy (about 3 runs in 4): a leftover process of the candidate's child rewrites results/metrics.json "
        "and correct.json between evaluate.py writing them and the harness reading them"))),
    pytest.param("shinka-run_shinka_eval", marks=pytest.mark.xfail(strict=False, reason=(
        "racy (about 1 run in 2): same as shinka-own-files, from a process forked by the imported candidate"))),
    "openevolve-dict", "openevolve-cascade", "native-script", "native-python",
])
def test_processes_left_behind_cannot_rewrite_the_result(tmp_path, level, name):
    spec = spec_for(tmp_path, name, level)
    for _ in range(8 if name.startswith("shinka") else 1):
        result = run_evaluation(c.lingering_forger_program(), spec, step=1)
        assert result.score != c.FORGED_SCORE, result.metrics
        assert result.outcome == Outcome.OK and result.score == pytest.approx(EVALUATORS[name][1])


@pytest.mark.parametrize("level", LEVELS)
def test_executable_that_imports_the_candidate_into_its_own_process_is_forgeable(tmp_path, level):
    """The documented limit of native (a): stdout is the channel, and the candidate shares it.

    Such a judge (the candidate imported, its print()s redirected to stderr) keeps the honest score
    against fake files and printed lines, but a forged line written to fd 1 followed by os._exit(0)
    is the last JSON on stdout, and it is what evolveflow reads.
    """
    spec = EvaluatorSpec(path=c.write_native_script(tmp_path / "experiment", c.NATIVE_JUDGE_IN_PROCESS),
                         sandbox=level)
    for attack in ("files", "prints"):
        result = run_evaluation(c.forging_program(**ATTACKS[attack]), spec)
        assert result.outcome == Outcome.OK and result.score == c.HONEST_VALUE
    forged = run_evaluation(c.forging_program(**ATTACKS["both-then-os._exit"]), spec)
    assert forged.outcome == Outcome.OK and forged.score == c.FORGED_SCORE  # not blocked: see the docstring


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("evaluator", ["evaluator.py", "eval.sh"])
def test_circle_packing_demo_evaluators_refuse_the_demo_forgery(tmp_path, level, evaluator):
    demo = tmp_path / "circle_packing"
    shutil.copytree(REPO / "experiments" / "circle_packing", demo)
    honest = (demo / "initial_program.py").read_text()
    spec = EvaluatorSpec(path=demo / evaluator, sandbox=level, timeout_s=60)
    assert spec.resolved_contract == "native"
    baseline = run_evaluation(honest, spec)
    assert baseline.outcome == Outcome.OK and baseline.score == pytest.approx(1.736, abs=1e-3)
    result = run_evaluation(c.with_demo_forgery(honest), spec)
    assert result.outcome == Outcome.CANDIDATE_ERROR and result.score is None, (result.score, result.error)
