"""Evaluator contracts behind one seam: evolveflow's own and those of ASI-Evolve, OpenEvolve and ShinkaEvolve.

``detect_contract`` picks one from the evaluator file when ``evaluation.contract`` is ``auto``:

* ``shinka``: a Python file named ``evaluate.py``, or one that mentions ``run_shinka_eval`` or
  takes ``--results_dir``;
* ``openevolve``: a Python file that mentions ``openevolve``, ``EvaluationResult`` or
  ``evaluate_stage1``;
* ``native``: another Python file that names a ``"score"`` or ``"eval_score"`` key;
* ``openevolve``: any other Python file (``combined_score``, or the mean of its metrics);
* ``asi``: a script that mentions ``steps/step_``, or never reads its first argument (``$1``, ``$@``)
  but names ``results.json`` or ``code`` (the reference's step-directory files);
* ``native``: any other script (called with the candidate's path).
"""
from __future__ import annotations

import re
from pathlib import Path

from evolveflow.evaluation.adapters.asi import AsiEvaluator, ExperimentCopyError, check_copy_size, copy_experiment
from evolveflow.evaluation.adapters.base import CHANNEL_FD, EvaluatorAdapter, Finished, Launch
from evolveflow.evaluation.adapters.native import NativePython, NativeScript
from evolveflow.evaluation.adapters.openevolve import OpenEvolveEvaluator
from evolveflow.evaluation.adapters.shinka import ShinkaEvaluator

CONTRACTS = ("native", "asi", "openevolve", "shinka")
_READS_FIRST_ARGUMENT = re.compile(r"\$\{?[1@*]")
_NAMES_NATIVE_SCORE = re.compile(r"""["'](score|eval_score)["']""")


def detect_contract(evaluator: Path) -> str:
    """Return the contract an evaluator file follows (see the module docstring)."""
    try:
        text = evaluator.read_text(encoding="utf-8", errors="replace")[:200_000]
    except OSError:
        text = ""
    if evaluator.suffix == ".py":
        if evaluator.name == "evaluate.py" or "run_shinka_eval" in text or "--results_dir" in text:
            return "shinka"
        if any(marker in text for marker in ("openevolve", "EvaluationResult", "evaluate_stage1")):
            return "openevolve"
        # evolveflow's own evaluators name their score "score" or "eval_score"; OpenEvolve's name
        # combined_score or nothing at all (the mean of the metrics is the score).
        return "native" if _NAMES_NATIVE_SCORE.search(text) else "openevolve"
    reads_argument = bool(_READS_FIRST_ARGUMENT.search(text))
    asi_files = any(marker in text for marker in ("results.json", "/code", "results.txt"))
    if "steps/step_" in text or (not reads_argument and asi_files):
        return "asi"
    return "native"


__all__ = [
    "CHANNEL_FD", "CONTRACTS", "AsiEvaluator", "EvaluatorAdapter", "ExperimentCopyError", "Finished", "Launch",
    "NativePython", "NativeScript", "OpenEvolveEvaluator", "ShinkaEvaluator", "check_copy_size", "copy_experiment",
    "detect_contract",
]
