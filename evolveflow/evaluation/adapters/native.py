"""evolveflow's own contracts: (a) an executable called with the candidate's path, (b) evaluate() in a .py file."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolveflow.evaluation import contract
from evolveflow.evaluation.adapters.base import CHANNEL_FD, Finished, Launch
from evolveflow.evaluation.adapters.reading import read_channel, read_result_file, too_large
from evolveflow.evaluation.contract import NO_RESULT, Verdict
from evolveflow.records import Outcome

RESULTS_JSON = "results.json"  # contract (a): fallback when stdout holds no JSON object
NO_RETURN = ("evaluate() did not return a result: the evaluator process ended before it returned "
             "(a crash, os._exit() or sys.exit() in the candidate, or a kill)")


def write_candidate(workdir: Path, code: str, filename: str) -> Path:
    """Write the candidate as workdir/filename and return its path."""
    program = workdir / filename
    program.write_text(code, encoding="utf-8")
    return program


@dataclass(frozen=True)
class NativeScript:
    """Contract (a): ``EXECUTABLE CANDIDATE_PATH`` prints ``{"score": ...}`` (else writes results.json)."""

    path: Path
    name: str = "native"

    def prepare(self, workdir: Path, code: str, filename: str, step: int) -> Launch:
        program = write_candidate(workdir, code, filename)
        return Launch(command=[str(self.path), str(program)], cwd=workdir, results_dir=None)

    def verdict(self, finished: Finished) -> Verdict:
        stdout = finished.stdout
        if finished.stdout_cut:  # the kept tail starts inside a line: that line is not a whole result
            stdout = stdout.partition("\n")[2]
        result, problem = contract.last_json_object(stdout), None
        if result is None:
            missing = "the evaluator printed no JSON object on stdout and wrote no results.json"
            if finished.stdout_cut:
                missing = (too_large("the evaluator's stdout", finished.stdout_bytes, finished.max_result_bytes)
                           + "; only the tail was read, and it holds no whole JSON object (and there is no results.json)")
            result, problem = read_result_file(finished.cwd / RESULTS_JSON, RESULTS_JSON, missing,
                                               finished.max_result_bytes)
        return contract.judge(exit_code=finished.exit_code, killed_reason=finished.killed_reason,
                              result=result, result_problem=problem, stderr=finished.stderr)


@dataclass(frozen=True)
class NativePython:
    """Contract (b): ``evaluate(program_path[, seed=]) -> dict``, run by the harness; result over a pipe."""

    path: Path
    python: str
    harness: Path
    name: str = "native"

    def prepare(self, workdir: Path, code: str, filename: str, step: int) -> Launch:
        return harness_launch(self.python, self.harness, "native", {}, self.path,
                              write_candidate(workdir, code, filename), workdir)

    def verdict(self, finished: Finished) -> Verdict:
        result, problem = read_channel(finished.channel, NO_RETURN, finished.max_result_bytes)
        return contract.judge(exit_code=finished.exit_code, killed_reason=finished.killed_reason,
                              result=result, result_problem=problem, stderr=finished.stderr)


def harness_launch(python: str, harness: Path, mode: str, options: dict, evaluator: Path, program: Path,
                   workdir: Path, results_dir: Path | None = None) -> Launch:
    """Return the launch of evolveflow's harness in `mode`, reporting over the private pipe."""
    command = [python, str(harness), "run", mode, CHANNEL_FD, json.dumps(options), str(evaluator), str(program)]
    return Launch(command=command, cwd=workdir, channel=True, results_dir=results_dir)


def harness_payload(finished: Finished, missing_reason: str) -> tuple[Verdict | None, Any]:
    """Return (a verdict decided by how the harness ended, or None; the payload it sent)."""
    payload, problem = read_channel(finished.channel, missing_reason, finished.max_result_bytes)
    ended = contract.process_verdict(exit_code=finished.exit_code, killed_reason=finished.killed_reason,
                                      stderr=finished.stderr)
    if ended is not None:
        return ended, payload
    if payload is NO_RESULT:
        detail = contract.last_lines(finished.stderr) if finished.exit_code else ""
        return Verdict(Outcome.CANDIDATE_ERROR, error=detail or problem), payload
    return None, payload
