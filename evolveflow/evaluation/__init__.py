"""Run the user's evaluator on a candidate in an isolated, killable subprocess and classify the result."""
from evolveflow.evaluation.contract import SCORE_KEYS, Verdict, judge
from evolveflow.evaluation.runner import (
    EvaluatorConfigError,
    EvaluatorSpec,
    check_evaluator,
    run_evaluation,
    sandbox_level,
)
from evolveflow.evaluation.sandbox import bwrap_problem, sweep_orphans

__all__ = [
    "SCORE_KEYS",
    "EvaluatorConfigError",
    "EvaluatorSpec",
    "Verdict",
    "bwrap_problem",
    "check_evaluator",
    "judge",
    "run_evaluation",
    "sandbox_level",
    "sweep_orphans",
]
