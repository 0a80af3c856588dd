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
def cases():
    for name in EVALUATORS:
        for attack in ATTACKS:
            yield pytest.param(name, attack, id=f"{name}-{attack}")


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
@pytest.mark.parametrize("name", ["asi", "shinka-own-files", "shinka-run_shinka_eval", "openevolve-dict",
                                  "openevolve-cascade", "native-script", "native-python"])
def test_processes_left_behind_cannot_rewrite_the_result(tmp_path, level, name):
    """A process still alive when the evaluator exits voids the result: it could have rewritten it."""
    spec = spec_for(tmp_path, name, level)
    for _ in range(8 if name.startswith("shinka") else 1):
        result = run_evaluation(c.lingering_forger_program(), spec, step=1)
        assert result.score != c.FORGED_SCORE, result.metrics
        assert result.outcome == Outcome.CANDIDATE_ERROR, (result.outcome, result.score)
        assert "were still running when the evaluator exited" in result.error


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


REWRITE_THE_JUDGE = r'''
import json, os, shlex
step = os.getcwd()  # the step directory: <copy of the experiment>/steps/step_N
script = os.path.join(os.path.dirname(os.path.dirname(step)), "eval.sh")
forged = json.dumps({"success": True, "eval_score": 99.0})
try:
    with open(script, "r+") as handle:  # same file, same inode: bash reads on from its offset
        text = handle.read()
        cut = text.index("\n", text.index('python3 "$EVALUATOR_PY"')) + 1
        handle.seek(cut)
        handle.write(f'echo {shlex.quote(forged)} > "$RESULT_JSON"; exit 0\n')
        handle.truncate()
except OSError as exc:
    print("could not rewrite eval.sh:", exc)

def value():
    return 1.25
'''


@pytest.mark.skipif(bwrap_problem() is not None, reason=f"bubblewrap unavailable: {bwrap_problem()}")
def test_an_asi_candidate_cannot_rewrite_the_copied_eval_sh_or_evaluator_under_bwrap(tmp_path):
    """The per-evaluation copy of the experiment is read-only under bwrap, but for the step directory."""
    script = c.write_asi_experiment(tmp_path / "experiment")
    result = run_evaluation(REWRITE_THE_JUDGE, EvaluatorSpec(path=script, sandbox="bwrap"), step=1)
    assert (result.outcome, result.score) == (Outcome.OK, 1.25), result.error


def test_at_the_process_level_the_copy_is_not_protected(tmp_path):
    """Documented: the process level does not stop writes, so the copied eval.sh can be rewritten."""
    script = c.write_asi_experiment(tmp_path / "experiment")
    result = run_evaluation(REWRITE_THE_JUDGE, EvaluatorSpec(path=script, sandbox="process"), step=1)
    assert result.score == c.FORGED_SCORE
