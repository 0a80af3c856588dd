"""OpenEvolve's contract: ``evaluate(program_path)`` (or the cascade ``evaluate_stage1/2/3``) in evaluator.py.

Rules (OpenEvolve's, plus evolveflow's validity rules):

* ``evaluate`` may return a dict (all of it is metrics) or an object with ``.metrics`` and
  ``.artifacts`` (``EvaluationResult``); artifacts become feedback for the LLM.
* The score is ``combined_score``, else the mean of the numeric metrics (booleans, ``error`` and
  ``evaluation.mean_excludes`` -- OpenEvolve's ``database.feature_dimensions``, by default
  ``complexity`` and ``diversity`` -- left out), as OpenEvolve computes fitness.
* Cascade (``evaluation.cascade``, on by default when ``evaluate_stage1`` exists): stage 1 runs;
  stage 2 only if stage 1's score reaches ``cascade_thresholds[0]``, stage 3 only if the merged
  score reaches ``cascade_thresholds[1]``; later stages' metrics overwrite earlier ones. The stage
  reached is recorded as the metric ``cascade_stage``. A stage that raises is a candidate error.
* Invalid (``candidate_error``): an exception; a non-empty ``error`` text, or OpenEvolve's own
  failure shape ``{"error": 0.0}``; ``timeout: true``; ``validity: 0``; ``correct``/``success``
  false; no numeric metric at all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from evolveflow.evaluation import contract
from evolveflow.evaluation.adapters.base import Finished, Launch
from evolveflow.evaluation.adapters.native import NO_RETURN, harness_launch, harness_payload, write_candidate
from evolveflow.evaluation.adapters.reading import text_of
from evolveflow.evaluation.contract import Verdict, clean_metrics
from evolveflow.evaluation.validity import flagged, stated_error
from evolveflow.records import Outcome


def fitness(metrics: dict[str, Any], exclude: Sequence[str] = ()) -> float | None:
    """Return combined_score, else the mean of numeric non-boolean metrics (not 'error' nor `exclude`)."""
    value = metrics.get("combined_score")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    numbers = [float(v) for k, v in metrics.items()
               if k != "error" and k not in exclude and isinstance(v, (int, float)) and not isinstance(v, bool)]
    numbers = [n for n in numbers if math.isfinite(n)]
    return sum(numbers) / len(numbers) if numbers else None


def _artifacts_feedback(artifacts: Any) -> dict[str, str]:
    if not isinstance(artifacts, dict):
        return {}
    feedback = {}
    for key, value in artifacts.items():
        shown = f"<{len(value)} bytes>" if isinstance(value, (bytes, bytearray)) else text_of(value)
        feedback[f"artifact:{key}"] = shown
    return feedback


def read_openevolve_result(payload: Any, mean_excludes: Sequence[str] = ()) -> Verdict:
    """Classify the harness's openevolve payload (see the module docstring)."""
    if not isinstance(payload, dict):
        kind = "null" if payload is None else type(payload).__name__
        return Verdict(Outcome.CANDIDATE_ERROR, error=f"the evaluator's result is a JSON {kind}, not an object")
    if "metrics" not in payload:  # the harness reports an exception as {"error", "traceback"}
        stage = payload.get("stage_result") or {}
        metrics = clean_metrics({**(stage.get("metrics") or {}), "cascade_stage": stage.get("cascade_stage", 0)})
        return Verdict(Outcome.CANDIDATE_ERROR, metrics=metrics if stage else {},
                       error=str(payload.get("error") or "the evaluator raised"),
                       feedback=_artifacts_feedback(stage.get("artifacts")))
    if payload.get("not_an_object"):
        return Verdict(Outcome.CANDIDATE_ERROR,
                       error=f"the evaluator's result is a JSON {payload['not_an_object']}, not an object")
    raw = payload["metrics"] if isinstance(payload["metrics"], dict) else {}
    metrics = clean_metrics({**raw, "cascade_stage": payload.get("cascade_stage", 0)})
    feedback = _artifacts_feedback(payload.get("artifacts"))

    def failed(reason: str) -> Verdict:
        return Verdict(Outcome.CANDIDATE_ERROR, metrics=metrics, error=reason, feedback=feedback)

    flag = flagged(raw)
    if flag is not None:
        outcome, reason = flag
        return failed(reason) if outcome == "candidate_error" else \
            Verdict(Outcome.INFRA_ERROR, metrics=metrics, error=reason, feedback=feedback)
    error = stated_error(raw)
    if error is not None:
        return failed(f"the evaluator reported an error: {error}")
    if "error" in raw and isinstance(raw["error"], (int, float)):
        detail = feedback.get("artifact:stderr") or feedback.get("artifact:error_message") or ""
        return failed("the evaluator reported an error (its result is OpenEvolve's failure shape "
                      "{'error': ...})" + (f": {detail[:500]}" if detail else ""))
    score = fitness(raw, mean_excludes)
    if score is None:
        return failed("the evaluator's result has no numeric metric (no combined_score and nothing to average)")
    problem = contract.score_problem(score, "combined_score")
    if problem is not None:
        return failed(problem)
    return Verdict(Outcome.OK, score=score, metrics=metrics, feedback=feedback)


@dataclass(frozen=True)
class OpenEvolveEvaluator:
    """OpenEvolve's evaluator.py, run by the harness in 'openevolve' mode."""

    path: Path
    python: str
    harness: Path
    cascade: bool = True
    cascade_thresholds: tuple[float, ...] = (0.5, 0.75, 0.9)
    mean_excludes: tuple[str, ...] = ("complexity", "diversity")
    name: str = "openevolve"

    def prepare(self, workdir: Path, code: str, filename: str, step: int) -> Launch:
        options = {"cascade": self.cascade, "cascade_thresholds": list(self.cascade_thresholds)}
        return harness_launch(self.python, self.harness, "openevolve", options, self.path,
                              write_candidate(workdir, code, filename), workdir)

    def verdict(self, finished: Finished) -> Verdict:
        ended, payload = harness_payload(finished, NO_RETURN)
        return ended or read_openevolve_result(payload, self.mean_excludes)
