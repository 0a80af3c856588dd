"""ASI-Evolve's contract: ``bash eval.sh`` (no argument) in ``steps/step_N/`` next to a file named ``code``.

Rules (the reference's Engineer, plus evolveflow's validity rules):

* Each evaluation gets a private copy of the experiment folder (``steps/``, run data and caches
  left out) with the candidate at ``<copy>/steps/step_N/code``; ``eval.sh`` runs there with bash (no
  executable bit needed), so its relative look-ups (``../../evaluator.py``) work. Under bwrap the
  copy is read-only but for the step directory (and TMPDIR outside it).
* A non-zero exit is a candidate error with the stderr tail (the reference ignores results.json then).
* The result is ``results.json`` in the step directory (``results.txt`` is only shown as the error:
  the reference cannot score it either). ``eval_score`` must be a finite number.
* ``success: false`` (or another validity flag) is a candidate error with the stated error
  (``error``, else ``temp.error``), never ``ok 0``. A missing ``success`` is accepted.
* ``temp`` and the tail of ``eval.log`` become feedback for the LLM; the other keys are metrics.
"""
from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolveflow.evaluation import contract
from evolveflow.evaluation.adapters.base import Finished, Launch
from evolveflow.evaluation.adapters.reading import read_result_file, read_text_nofollow, text_of
from evolveflow.evaluation.contract import NO_RESULT, Verdict, clean_metrics
from evolveflow.evaluation.validity import flagged, stated_error
from evolveflow.records import Outcome

# Folders of a reference experiment that hold run data, not inputs: never copied per evaluation.
SKIPPED_DIRS = frozenset({"steps", "runs", "logs", "cognition_data", "database_data", "best", ".git",
                          "__pycache__", ".venv", "venv", "node_modules", ".pytest_cache"})
MAX_COPY_BYTES = 200_000_000
_NOT_METRICS = frozenset({"eval_score", "success", "error", "temp", "score", "runtime"})
_LOG_TAIL_CHARS = 4000


class ExperimentCopyError(Exception):
    """The experiment folder is too large to copy for each evaluation."""


def _walk(source: Path, skip: frozenset[Path]):
    """Yield (folder, file names) of the experiment's inputs: run data, caches and symlinked dirs left out."""
    for root, dirs, files in os.walk(source):
        here = Path(root)
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and (here / d) not in skip
                   and not (here / d).is_symlink()]
        yield here, files


def check_copy_size(source: Path, skip: frozenset[Path] = frozenset()) -> None:
    """Raise ExperimentCopyError if the folder is too large to copy for each evaluation."""
    total = sum(os.lstat(here / name).st_size for here, files in _walk(source, skip) for name in files)
    if total > MAX_COPY_BYTES:
        raise ExperimentCopyError(
            f"{source} holds {total // 1_000_000} MB, more than the {MAX_COPY_BYTES // 1_000_000} MB that can "
            "be copied for every evaluation under the ASI-Evolve contract; move data out of the folder "
            "and read it by absolute path")


def copy_experiment(source: Path, target: Path, skip: frozenset[Path] = frozenset()) -> None:
    """Copy the experiment folder's regular files and folders (no symlinks followed, run data left out)."""
    check_copy_size(source, skip)
    for here, files in _walk(source, skip):
        destination = target / here.relative_to(source)
        destination.mkdir(parents=True, exist_ok=True)
        for name in files:
            path = here / name
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(path), destination / name)  # kept as a link, not followed
            elif stat.S_ISREG(info.st_mode):
                shutil.copy2(path, destination / name, follow_symlinks=False)


def _feedback(results: Any, step_dir: Path) -> dict[str, str]:
    feedback = {}
    if isinstance(results, dict) and results.get("temp") not in (None, "", {}):
        feedback["temp"] = text_of(results["temp"])
    log = read_text_nofollow(step_dir / "eval.log")
    if log and log.strip():
        feedback["eval.log"] = log[-_LOG_TAIL_CHARS:]
    return feedback


def read_asi_result(results: Any, problem: str | None, step_dir: Path, stderr: str) -> Verdict:
    """Classify an exit-0 evaluation's results.json (see the module docstring)."""
    feedback = _feedback(results, step_dir)
    if results is NO_RESULT:
        fallback = read_text_nofollow(step_dir / "results.txt")
        detail = f"; results.txt says: {fallback.strip()[-1000:]}" if fallback and fallback.strip() else ""
        return Verdict(Outcome.CANDIDATE_ERROR, error=(problem or "no results.json") + detail, feedback=feedback)
    if not isinstance(results, dict):
        return Verdict(Outcome.CANDIDATE_ERROR, error="results.json is not a JSON object", feedback=feedback)
    metrics = clean_metrics({k: v for k, v in results.items() if k not in _NOT_METRICS})

    def failed(reason: str) -> Verdict:
        log_tail = contract.last_lines(feedback.get("eval.log", ""), 5)
        if log_tail:  # the reference's eval.sh says only "see eval.log": say what it says
            reason = f"{reason}\neval.log ends with:\n{log_tail}"
        return Verdict(Outcome.CANDIDATE_ERROR, metrics=metrics, error=reason, feedback=feedback)

    flag = flagged(results)
    if flag is not None:
        outcome, reason = flag
        return failed(reason) if outcome == "candidate_error" else \
            Verdict(Outcome.INFRA_ERROR, metrics=metrics, error=reason, feedback=feedback)
    if "eval_score" not in results:
        return failed(stated_error(results) or "results.json has no eval_score")
    problem = contract.score_problem(results["eval_score"], "eval_score")
    if problem is not None:
        return failed(stated_error(results) or problem)
    return Verdict(Outcome.OK, score=float(results["eval_score"]), metrics=metrics, feedback=feedback)


@dataclass(frozen=True)
class AsiEvaluator:
    """ASI-Evolve's eval.sh, run with bash in a step directory of a private copy of the experiment."""

    script: Path
    experiment_dir: Path
    skip: frozenset[Path] = frozenset()  # e.g. the search's storage, if it lives in the experiment folder
    name: str = "asi"

    def _copied_script(self, copy: Path) -> Path:
        try:
            return copy / self.script.relative_to(self.experiment_dir)
        except ValueError:
            return self.script  # a script outside the experiment folder is run where it is

    def prepare(self, workdir: Path, code: str, filename: str, step: int) -> Launch:
        copy = workdir / self.experiment_dir.name
        copy_experiment(self.experiment_dir, copy, self.skip)
        step_dir = copy / "steps" / f"step_{step}"
        step_dir.mkdir(parents=True, exist_ok=True)
        (step_dir / "code").write_text(code, encoding="utf-8")
        bash = shutil.which("bash") or "/bin/bash"  # the launcher execs a path, not a command name
        # The copy (eval.sh, evaluator.py, ...) is read-only under bwrap: a candidate could otherwise
        # rewrite the eval.sh that bash is still reading, or the evaluator, and forge the result.
        return Launch(command=[bash, str(self._copied_script(copy))], cwd=step_dir, results_dir=step_dir,
                      skip_files=frozenset({"code"}), frozen=(copy,), writable=(step_dir,))

    def verdict(self, finished: Finished) -> Verdict:
        ended = contract.process_verdict(exit_code=finished.exit_code, killed_reason=finished.killed_reason,
                                          stderr=finished.stderr)
        if ended is not None:
            return ended
        if finished.exit_code != 0:
            detail = contract.last_lines(finished.stderr) or "nothing on stderr"
            return Verdict(Outcome.CANDIDATE_ERROR, error=f"eval.sh exited with status {finished.exit_code}: {detail}",
                           feedback=_feedback(None, finished.cwd))
        results, problem = read_result_file(finished.cwd / "results.json", "results.json",
                                            "eval.sh wrote no results.json in the step directory",
                                            finished.max_result_bytes)
        return read_asi_result(results, problem, finished.cwd, finished.stderr)
