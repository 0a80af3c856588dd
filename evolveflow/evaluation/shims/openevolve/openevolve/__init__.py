"""evolveflow's stand-in for the `openevolve` package: only what evaluators import (EvaluationResult)."""
from openevolve.evaluation_result import EvaluationResult

__all__ = ["EvaluationResult"]
