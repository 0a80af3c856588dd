"""Run the user's evaluator on a candidate in an isolated, killable subprocess and classify the result."""
from evolveflow.evaluation.contract import SCORE_KEYS, Verdict, judge
from evolveflow.evaluation.runner import (
    EvaluatorConfigError,
    EvaluatorSpec,
    Isolation,
    check_evaluator,
    isolation_for,
    run_evaluation,
    sandbox_level,
)
from evolveflow.evaluation.sandbox import bwrap_problem, make_undumpable, sweep_orphans

__all__ = [
    "SCORE_KEYS",
    "EvaluatorConfigError",
    "EvaluatorSpec",
    "Isolation",
    "Verdict",
    "bwrap_problem",
    "check_evaluator",
    "isolation_for",
    "judge",
    "make_undumpable",
    "run_evaluation",
    "sandbox_level",
    "sweep_orphans",
]
