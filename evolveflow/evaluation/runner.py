"""Run the user's evaluator on one candidate program in a fresh, sandboxed working directory.

Two evaluator contracts, chosen by the evaluator's suffix:

* an executable (``eval.sh``, any file with a ``#!`` line) called as ``EXECUTABLE CANDIDATE_PATH``
  that prints ``{"score": ..., "metrics": {...}}``; the last JSON object on stdout counts,
  else ``results.json`` in the working directory;
* an ``evaluator.py`` with ``evaluate(program_path) -> dict``, run by evolveflow's harness in a
  subprocess, which writes the dict to a private file (candidate prints cannot corrupt it).

The evaluator sees only an allow-listed environment (no API keys), HOME and TMPDIR inside the
working directory, and EVOLVEFLOW_PYTHON / EVOLVEFLOW_SEED. Classification: see contract.py.
"""
from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from evolveflow.evaluation import contract, sandbox
from evolveflow.evaluation.contract import NO_RESULT
from evolveflow.records import EvalResult, Outcome

HARNESS_PATH = Path(__file__).resolve().with_name("harness.py")
RESULT_FILE = ".evolveflow-result.json"  # contract (b): written by the harness
RESULTS_JSON = "results.json"  # contract (a): fallback when stdout holds no JSON object
_MAX_RESULT_FILE_BYTES = 16_000_000
_TAIL_CHARS = 2000
_CHECK_TIMEOUT_S = 120.0


class EvaluatorConfigError(Exception):
    """The evaluator itself is unusable (missing, not executable, no evaluate(), sandbox unavailable)."""


class EvaluatorSpec(BaseModel):
    """Where the user's evaluator is and how to confine it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path  # an executable (contract a) or a file ending in .py (contract b)
    timeout_s: float = Field(default=60.0, gt=0)
    memory_mb: int | None = Field(default=4096, gt=0)  # RLIMIT_AS: address space, not resident memory
    max_output_bytes: int = Field(default=1_000_000, ge=0)  # tail kept per stream
    kill_output_bytes: int = Field(default=64_000_000, gt=0)  # printing more than this is a failure
    sandbox: Literal["auto", "bwrap", "process"] = "auto"
    extra_env: dict[str, str] = Field(default_factory=dict)
    hidden_paths: tuple[Path, ...] = ()  # under bwrap: replaced by an empty tmpfs (dirs) or /dev/null
    max_processes: int | None = Field(default=512, gt=0)  # RLIMIT_NPROC headroom; ignored for root

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, value: Path) -> Path:
        # The evaluator runs with cwd = a temporary directory, so a relative path would break.
        return value.expanduser().absolute()

    @field_validator("hidden_paths")
    @classmethod
    def _absolute_hidden(cls, value: tuple[Path, ...]) -> tuple[Path, ...]:
        relative = [str(p) for p in value if not p.is_absolute()]
        if relative:
            raise ValueError(f"hidden_paths must be absolute, got {relative}")
        return value

    @property
    def is_python(self) -> bool:
        """True when the evaluator follows contract (b): a .py file with evaluate()."""
        return self.path.suffix == ".py"


def sandbox_level(spec: EvaluatorSpec) -> str:
    """Return the sandbox level that will be used for spec: 'bwrap' or 'process'."""
    if spec.sandbox == "process":
        return "process"
    problem = sandbox.bwrap_problem()
    if problem is None:
        return "bwrap"
    if spec.sandbox == "bwrap":
        raise EvaluatorConfigError(
            f"sandbox='bwrap' was requested for evaluator {spec.path} but {problem}; "
            "use sandbox='auto' or 'process' to run without it")
    return "process"


def check_evaluator(spec: EvaluatorSpec) -> None:
    """Raise EvaluatorConfigError now (at search start) if the evaluator cannot possibly work."""
    path = spec.path
    if not path.exists():
        raise EvaluatorConfigError(f"evaluator {path} does not exist")
    if not path.is_file():
        raise EvaluatorConfigError(f"evaluator {path} is not a file")
    for hidden in spec.hidden_paths:
        if path == hidden or hidden in path.parents:
            raise EvaluatorConfigError(
                f"evaluator {path} is inside hidden path {hidden}, so the sandbox would hide it too; "
                "remove that entry from hidden_paths or move the evaluator")
    level = sandbox_level(spec)
    if not spec.is_python:
        _check_executable(path)
        return
    with tempfile.TemporaryDirectory(prefix="evolveflow-check-") as workdir:
        done = sandbox.run_sandboxed(
            [sys.executable, str(HARNESS_PATH), "--check", str(path)], workdir=Path(workdir),
            env=evaluator_environment(Path(workdir), None, spec.extra_env), level=level,
            limits=_limits(spec, timeout_s=max(spec.timeout_s, _CHECK_TIMEOUT_S)),
            readable=_readable_paths(spec), hidden=spec.hidden_paths,
        )
    if done.exit_code != 0:
        detail = contract.last_lines(done.stderr.decode("utf-8", "replace")) or done.killed_reason
        raise EvaluatorConfigError(f"evaluator {path} cannot be used: {detail}")


def _check_executable(path: Path) -> None:
    if not os.access(path, os.X_OK):
        raise EvaluatorConfigError(f"evaluator {path} is not executable; run: chmod +x {path}")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if not (magic.startswith(b"#!") or magic == b"\x7fELF"):
        raise EvaluatorConfigError(
            f"evaluator {path} has no '#!' line, so it cannot be executed directly; "
            "add one such as '#!/bin/sh' as its first line (or name a Python evaluator *.py)")


def evaluator_environment(workdir: Path, seed: int | None, extra_env: dict[str, str]) -> dict[str, str]:
    """Build the evaluator's environment from an allow-list: never the parent's secrets."""
    python_dir = str(Path(sys.executable).parent)
    inherited_path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    env = {
        "PATH": os.pathsep.join([python_dir, inherited_path]),  # so `python3` is evolveflow's
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "HOME": str(workdir),
        "TMPDIR": str(workdir / "tmp"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "EVOLVEFLOW_PYTHON": sys.executable,
    }
    if "LC_ALL" in os.environ:
        env["LC_ALL"] = os.environ["LC_ALL"]
    if seed is not None:
        env["EVOLVEFLOW_SEED"] = str(int(seed))
    env.update(extra_env)
    return env


def _limits(spec: EvaluatorSpec, timeout_s: float | None = None) -> sandbox.Limits:
    return sandbox.Limits(
        timeout_s=timeout_s or spec.timeout_s, memory_mb=spec.memory_mb,
        max_output_bytes=spec.max_output_bytes, kill_output_bytes=spec.kill_output_bytes,
        max_processes=spec.max_processes,
    )


def _readable_paths(spec: EvaluatorSpec) -> list[Path]:
    # What must stay visible even if it lives under a masked directory such as /tmp.
    paths = [spec.path.parent, Path(sys.executable).parent, Path(sys.prefix), Path(sys.base_prefix)]
    return paths + [HARNESS_PATH.parent] if spec.is_python else paths


def run_evaluation(code: str, spec: EvaluatorSpec, *, seed: int | None = None,
                   filename: str = "program.py") -> EvalResult:
    """Write code to a fresh working directory, run the evaluator on it and classify the result."""
    if not filename or Path(filename).name != filename or filename in (".", ".."):
        raise ValueError(f"filename must be a plain file name such as 'program.py', got {filename!r}")
    level = sandbox_level(spec)
    workdir = Path(tempfile.mkdtemp(prefix="evolveflow-eval-"))
    try:
        (workdir / "tmp").mkdir()
        program = workdir / filename
        program.write_text(code, encoding="utf-8")
        if spec.is_python:
            command = [sys.executable, str(HARNESS_PATH), str(spec.path), str(program), str(workdir / RESULT_FILE)]
        else:
            command = [str(spec.path), str(program)]
        try:
            done = sandbox.run_sandboxed(
                command, workdir=workdir, env=evaluator_environment(workdir, seed, spec.extra_env),
                level=level, limits=_limits(spec), readable=_readable_paths(spec), hidden=spec.hidden_paths,
            )
        except OSError as exc:
            return EvalResult(outcome=Outcome.INFRA_ERROR, error=f"could not start the evaluator: {exc}")
        stdout = done.stdout.decode("utf-8", "replace")
        stderr = done.stderr.decode("utf-8", "replace")
        result, problem = _find_result(spec, workdir, stdout)
    finally:
        _remove_tree(workdir)
    verdict = contract.judge(exit_code=done.exit_code, killed_reason=done.killed_reason,
                             result=result, result_problem=problem, stderr=stderr)
    return EvalResult(
        outcome=verdict.outcome, score=verdict.score, metrics=verdict.metrics, error=verdict.error,
        exit_code=done.exit_code, duration_s=round(done.duration_s, 4),
        stdout_tail=stdout[-_TAIL_CHARS:], stderr_tail=stderr[-_TAIL_CHARS:],
    )


def _find_result(spec: EvaluatorSpec, workdir: Path, stdout: str) -> tuple[object, str | None]:
    if spec.is_python:
        return _read_result_file(workdir / RESULT_FILE, "the harness's result file",
                                 "evaluate() returned no result (the process ended before it returned)")
    found = contract.last_json_object(stdout)
    if found is not None:
        return found, None
    return _read_result_file(workdir / RESULTS_JSON, RESULTS_JSON,
                             "the evaluator printed no JSON object on stdout and wrote no results.json")


def _read_result_file(path: Path, label: str, missing_reason: str) -> tuple[object, str | None]:
    try:
        if path.is_symlink():  # evolveflow reads it unsandboxed: never follow the candidate's links
            return NO_RESULT, f"{label} is a symbolic link, which evolveflow does not follow"
        if not path.is_file():
            return NO_RESULT, missing_reason
        if path.stat().st_size > _MAX_RESULT_FILE_BYTES:
            return NO_RESULT, f"{label} is larger than {_MAX_RESULT_FILE_BYTES} bytes"
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return NO_RESULT, f"{label} could not be read: {exc}"
    return contract.parse_result_text(text, label)


def _remove_tree(path: Path) -> None:
    def make_writable_and_retry(function, target, _error):
        # A candidate may leave read-only directories behind; non-root users cannot delete into them.
        try:
            os.chmod(os.path.dirname(target), stat.S_IRWXU)
            os.chmod(target, stat.S_IRWXU)
            function(target)
        except OSError:
            pass
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=make_writable_and_retry)
    else:
        shutil.rmtree(path, onerror=make_writable_and_retry)


__all__ = [
    "EvaluatorConfigError", "EvaluatorSpec", "check_evaluator", "evaluator_environment",
    "run_evaluation", "sandbox_level",
]
