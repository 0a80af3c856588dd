"""ShinkaEvolve's contract: ``python evaluate.py --program_path P --results_dir D`` writes metrics.json and correct.json.

Rules (ShinkaEvolve's, plus evolveflow's validity rules):

* The score is ``metrics.json``'s ``combined_score``; ``public`` metrics (and the other top-level
  numbers) are shown to the LLM, ``private`` metrics are stored but never shown,
  ``text_feedback`` becomes feedback for the LLM.
* ``correct.json`` ``{"correct": false, "error": ...}`` is a candidate error with that text, as is a
  missing ``correct.json`` or ``metrics.json`` or a missing / non-numeric ``combined_score``.
* evolveflow's harness runs the script as ``__main__`` and sends the two files only after it has
  finished: files a candidate forges and then ``os._exit()``s over are never read.
* The script's folder is first on ``sys.path`` (sibling modules import), but its cwd is the fresh
  working directory, not the example's folder as under ``cd examples/X; python run_evo.py``:
  data it opens by a relative path must be found from ``__file__`` instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolveflow.evaluation import contract
from evolveflow.evaluation.adapters.base import Finished, Launch
from evolveflow.evaluation.adapters.native import harness_launch, harness_payload, write_candidate
from evolveflow.evaluation.adapters.reading import text_of
from evolveflow.evaluation.contract import Verdict, clean_metrics
from evolveflow.evaluation.validity import flagged
from evolveflow.records import Outcome

RESULTS_DIR = "results"
NO_FINISH = ("evaluate.py did not finish: the evaluator process ended before its script returned "
             "(a crash, os._exit() in the candidate, or a kill), so its result files are not trusted")
_NOT_SHOWN = frozenset({"combined_score", "public", "private", "text_feedback"})


def read_shinka_result(payload: Any) -> Verdict:
    """Classify what the harness collected from the results directory (see the module docstring)."""
    if not isinstance(payload, dict) or "metrics_json" not in payload:
        error = payload.get("error") if isinstance(payload, dict) else None
        return Verdict(Outcome.CANDIDATE_ERROR, error=str(error or "evaluate.py sent no result"))
    metrics_json, correct_json = payload.get("metrics_json"), payload.get("correct_json")
    if not isinstance(metrics_json, dict):
        return Verdict(Outcome.CANDIDATE_ERROR, error="evaluate.py wrote no usable metrics.json in its results directory")
    if "__unreadable__" in metrics_json:
        return Verdict(Outcome.CANDIDATE_ERROR, error=metrics_json["__unreadable__"])
    public = metrics_json.get("public") if isinstance(metrics_json.get("public"), dict) else {}
    shown = {**{k: v for k, v in metrics_json.items() if k not in _NOT_SHOWN}, **public}
    metrics = clean_metrics(shown)
    private = clean_metrics(metrics_json["private"]) if isinstance(metrics_json.get("private"), dict) else {}
    feedback = {}
    if metrics_json.get("text_feedback"):
        feedback["text_feedback"] = text_of(metrics_json["text_feedback"])

    def failed(reason: str) -> Verdict:
        return Verdict(Outcome.CANDIDATE_ERROR, metrics=metrics, error=reason, feedback=feedback,
                       private_metrics=private)

    flag = flagged(metrics_json)
    if flag is not None and flag[0] == "infra_error":
        return Verdict(Outcome.INFRA_ERROR, metrics=metrics, error=flag[1], feedback=feedback, private_metrics=private)
    if not isinstance(correct_json, dict) or "__unreadable__" in correct_json:
        return failed("evaluate.py wrote no usable correct.json in its results directory (ShinkaEvolve "
                      "treats that as incorrect)")
    if correct_json.get("correct") is not True:
        error = correct_json.get("error")
        return failed("the evaluator marked the candidate incorrect (correct: false)"
                      + (f": {str(error)[:2000]}" if error else ""))
    if flag is not None:
        return failed(flag[1])
    if "combined_score" not in metrics_json:
        return failed("metrics.json has no combined_score")
    problem = contract.score_problem(metrics_json["combined_score"], "combined_score")
    if problem is not None:
        return failed(problem)
    return Verdict(Outcome.OK, score=float(metrics_json["combined_score"]), metrics=metrics,
                   feedback=feedback, private_metrics=private)


@dataclass(frozen=True)
class ShinkaEvaluator:
    """ShinkaEvolve's evaluate.py, run as a script by the harness in 'shinka' mode."""

    path: Path
    python: str
    harness: Path
    name: str = "shinka"

    def prepare(self, workdir: Path, code: str, filename: str, step: int) -> Launch:
        results = workdir / RESULTS_DIR
        results.mkdir()
        return harness_launch(self.python, self.harness, "shinka", {"results_dir": str(results)}, self.path,
                              write_candidate(workdir, code, filename), workdir, results_dir=results)

    def verdict(self, finished: Finished) -> Verdict:
        ended, payload = harness_payload(finished, NO_FINISH)
        return ended or read_shinka_result(payload)
