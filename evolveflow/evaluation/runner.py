"""Run the user's evaluator on one candidate program in a fresh, sandboxed working directory.

The contract (how the candidate is laid out, how the evaluator is launched and how its result is
read) comes from an adapter (evolveflow/evaluation/adapters/): evolveflow's own (an executable
called with the candidate's path, or an ``evaluate()`` in a .py file), ASI-Evolve's, OpenEvolve's or
ShinkaEvolve's. Python evaluators run under evolveflow's harness, which sends the result over a
private pipe once ``evaluate`` has returned: files and prints of the candidate cannot forge it.

The evaluator sees only an allow-listed environment (no API keys), HOME and TMPDIR inside the
working directory, and EVOLVEFLOW_PYTHON / EVOLVEFLOW_SEED. Classification: see contract.py.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import stat
import sys
import tempfile
import threading
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from evolveflow import caps
from evolveflow.evaluation import adapters, sandbox
from evolveflow.evaluation.adapters import CHANNEL_FD, EvaluatorAdapter, Finished
from evolveflow.evaluation.contract import Verdict, last_lines
from evolveflow.records import EvalResult, Outcome

HARNESS_PATH = Path(__file__).resolve().with_name("harness.py")
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
    max_file_mb: int | None = Field(default=4096, gt=0)  # RLIMIT_FSIZE: no file written may be larger
    # Process level, evolveflow running as root: run the evaluator as a fresh unprivileged uid.
    separate_user: bool = True
    network: Literal["none", "host"] = "none"  # none: only loopback of its own (where the kernel allows)
    contract: Literal["auto", "native", "asi", "openevolve", "shinka"] = "auto"
    python: str | None = None  # interpreter for Python evaluators; None: evolveflow's own
    pythonpath: tuple[Path, ...] = ()  # put on the evaluator's PYTHONPATH
    readable_paths: tuple[Path, ...] = ()  # bound back read-only under bwrap if a mask would hide them
    cascade: bool = True  # openevolve: run evaluate_stage1/2/3 when defined
    cascade_thresholds: tuple[float, ...] = (0.5, 0.75, 0.9)
    mean_excludes: tuple[str, ...] = ("complexity", "diversity")  # openevolve: not averaged into the score
    experiment_dir: Path | None = None  # asi: the folder copied for each evaluation (default: the script's)
    feedback_max_chars: int = Field(default=4000, ge=0)  # per feedback item
    keep_files_max_bytes: int = Field(default=2_000_000, ge=0)  # files kept from the results directory
    max_result_bytes: int = Field(default=50_000_000, gt=0)  # a result (stdout JSON, file, pipe) read whole
    metrics_max_chars: int = Field(default=caps.METRICS_MAX_CHARS, gt=0)  # per metric value kept, as JSON

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
        """True when the evaluator is a Python file run by evolveflow's harness."""
        return self.resolved_contract != "asi" and self.path.suffix == ".py"

    @functools.cached_property
    def resolved_contract(self) -> str:
        """The contract in use: the configured one, or the one detected from the evaluator file (read once)."""
        return adapters.detect_contract(self.path) if self.contract == "auto" else self.contract

    @property
    def interpreter(self) -> str:
        """The Python that runs the harness and Python evaluators."""
        return str(Path(self.python).expanduser()) if self.python else sys.executable


def adapter_for(spec: EvaluatorSpec) -> EvaluatorAdapter:
    """Return the adapter that follows the spec's evaluator contract."""
    contract = spec.resolved_contract
    if contract == "asi":
        experiment_dir = spec.experiment_dir or spec.path.parent
        return adapters.AsiEvaluator(script=spec.path, experiment_dir=experiment_dir,
                                     skip=frozenset(spec.hidden_paths))
    if contract == "openevolve":
        return adapters.OpenEvolveEvaluator(path=spec.path, python=spec.interpreter, harness=HARNESS_PATH,
                                            cascade=spec.cascade, cascade_thresholds=spec.cascade_thresholds,
                                            mean_excludes=spec.mean_excludes)
    if contract == "shinka":
        return adapters.ShinkaEvaluator(path=spec.path, python=spec.interpreter, harness=HARNESS_PATH)
    if spec.path.suffix == ".py":
        return adapters.NativePython(path=spec.path, python=spec.interpreter, harness=HARNESS_PATH)
    return adapters.NativeScript(path=spec.path)


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


@dataclasses.dataclass(frozen=True)
class Isolation:
    """What the sandbox really gives this evaluator here (probed once per evaluator and level)."""

    level: str  # "bwrap" or "process"
    separate_user: bool  # runs as an unprivileged uid of its own
    own_network: bool  # only a loopback of its own: no route out, no DNS, not the host's 127.0.0.1
    why_not: tuple[str, ...] = ()  # why a protection asked for is missing

    def describe(self) -> str:
        """One line for the start of a search: the level, what it does, what it does not protect."""
        if self.level == "bwrap":
            gives = "read-only filesystem except its working directory, secrets and storage hidden, " \
                    "own pid and network namespaces, no capabilities"
            if self.separate_user:
                gives += ", an unprivileged uid"
            lacks = "CPU use up to the timeout, and reads of what the sandbox's user may read outside the hidden paths"
        else:
            gives = ", ".join(filter(None, [
                "scrubbed environment, rlimits (memory, file size, processes), whole-tree kill",
                "an unprivileged uid of its own (writes only its working directory, reads no other process's "
                "environment)" if self.separate_user else "",
                "no network (only its own loopback)" if self.own_network else ""]))
            lacks = "reads of world-readable files (the tree included)" if self.separate_user else \
                "writes anywhere this user can write (venv, storage), reads of this user's files and of other " \
                "processes' environments, signals to this user's processes" + \
                (" (as root: every process)" if os.geteuid() == 0 else "") + \
                ", a detached process that scrubs its environment outliving the evaluation"
            if not self.own_network:
                lacks += ", network access"
            if sandbox.bwrap_problem() is not None:
                lacks += " (install bubblewrap for more)"
        notes = f" [{'; '.join(self.why_not)}]" if self.why_not else ""
        return f"sandbox: {self.level} level: {gives}; NOT protected: {lacks}{notes}"


_ISOLATION: dict[tuple, Isolation] = {}
_PROBE = (
    "import json, os, socket, sys\n"
    "for p in sys.argv[1:]:\n"
    "    os.listdir(p) if os.path.isdir(p) else open(p, 'rb').close()\n"
    "print(json.dumps({'uid': os.getuid(), 'interfaces': sorted(n for _, n in socket.if_nameindex())}))"
)


def isolation_for(spec: EvaluatorSpec) -> Isolation:
    """Return what the sandbox gives spec's evaluator here; at the process level this is probed by
    running a tiny program the way the evaluator will run (once per evaluator per process)."""
    level = sandbox_level(spec)
    key = (level, spec.interpreter, spec.path, spec.experiment_dir, spec.pythonpath, spec.readable_paths,
           spec.separate_user, spec.network)
    if key not in _ISOLATION:
        _ISOLATION[key] = _probe(spec, level)
    return _ISOLATION[key]


def _probe(spec: EvaluatorSpec, level: str) -> Isolation:
    why_not: list[str] = []
    user = spec.separate_user and os.geteuid() == 0
    network = spec.network == "none" or level == "bwrap"
    needed = [str(p) for p in dict.fromkeys([spec.path, spec.path.parent, HARNESS_PATH, *spec.pythonpath,
                                             *spec.readable_paths,
                                             *([spec.experiment_dir] if spec.experiment_dir else [])])]
    for attempt in (True, False) if user else (False,):
        found = _run_probe(spec, level, needed, separate_user=attempt, own_network=network)
        if isinstance(found, dict):
            own_network = network and found.get("interfaces") == ["lo"]
            if network and not own_network:
                why_not.append("no network namespace here (needs root or user namespaces): the candidate has the host's network")
            return Isolation(level, separate_user=attempt, own_network=own_network, why_not=tuple(why_not))
        if attempt:
            why_not.append(f"cannot run it as a separate user: {found} (make the interpreter, the evaluator "
                           "and its folder reachable by other users, e.g. a Python outside /root, or install bubblewrap)")
    return Isolation(level, separate_user=False, own_network=level == "bwrap", why_not=tuple(why_not))


def _run_probe(spec: EvaluatorSpec, level: str, needed: list[str], *, separate_user: bool,
               own_network: bool) -> dict | str:
    with tempfile.TemporaryDirectory(prefix="evolveflow-probe-") as workdir:
        done = sandbox.run_sandboxed(
            [spec.interpreter, "-I", "-S", "-c", _PROBE, *needed], workdir=Path(workdir),
            env=evaluator_environment(Path(workdir), None, spec), level=level,
            limits=_limits(spec, timeout_s=_CHECK_TIMEOUT_S), separate_user=separate_user, own_network=own_network,
            readable=_readable_paths(spec), hidden=spec.hidden_paths)
    try:
        return json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return last_lines(done.stderr.decode("utf-8", "replace")) or done.killed_reason or f"exit {done.exit_code}"


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
    if spec.python and not os.access(spec.interpreter, os.X_OK):
        raise EvaluatorConfigError(f"evaluation.python = {spec.python}: no such executable")
    level = sandbox_level(spec)
    contract = spec.resolved_contract
    if contract == "asi":
        if shutil.which("bash") is None:
            raise EvaluatorConfigError(f"evaluator {path} is an ASI-Evolve eval.sh, which needs bash on PATH")
        try:
            adapters.check_copy_size(spec.experiment_dir or path.parent, frozenset(spec.hidden_paths))
        except adapters.ExperimentCopyError as exc:
            raise EvaluatorConfigError(str(exc)) from None
        return
    if not spec.is_python:
        _check_executable(path)
        return
    with tempfile.TemporaryDirectory(prefix="evolveflow-check-") as workdir:
        done = sandbox.run_sandboxed(
            [spec.interpreter, str(HARNESS_PATH), "check", contract, "{}", str(path)], workdir=Path(workdir),
            env=evaluator_environment(Path(workdir), None, spec), level=level,
            limits=_limits(spec, timeout_s=max(spec.timeout_s, _CHECK_TIMEOUT_S)),
            readable=_readable_paths(spec), hidden=spec.hidden_paths, **_isolation_args(spec),
        )
    if done.exit_code != 0:
        detail = contract_check_detail(done)
        raise EvaluatorConfigError(f"evaluator {path} cannot be used: {detail}")


def contract_check_detail(done: sandbox.Completed) -> str:
    """Return the harness's one explanation of an unusable evaluator (its own line, else stderr)."""
    text = done.stderr.decode("utf-8", "replace")
    ours = [line for line in text.splitlines() if line.startswith("evolveflow harness: ")]
    if ours:
        first = ours[-1][len("evolveflow harness: "):]
        rest = text[text.rindex(ours[-1]) + len(ours[-1]):].strip()
        return first + (f"\n{rest}" if rest and not first.endswith("evaluation.pythonpath") else "")
    if done.exit_code is None or done.killed_reason:
        return done.killed_reason or "the check did not finish"
    return last_lines(text) or f"exit status {done.exit_code}"


def _check_executable(path: Path) -> None:
    if not os.access(path, os.X_OK):
        raise EvaluatorConfigError(f"evaluator {path} is not executable; run: chmod +x {path}")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if not (magic.startswith(b"#!") or magic == b"\x7fELF"):
        raise EvaluatorConfigError(
            f"evaluator {path} has no '#!' line, so it cannot be executed directly; "
            "add one such as '#!/bin/sh' as its first line (or name a Python evaluator *.py)")


def evaluator_environment(workdir: Path, seed: int | None, spec: EvaluatorSpec) -> dict[str, str]:
    """Build the evaluator's environment from an allow-list: never the parent's secrets."""
    python_dir = str(Path(spec.interpreter).parent)  # so `python3` in a script is the configured one
    inherited_path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    env = {
        "PATH": os.pathsep.join([python_dir, inherited_path]),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "HOME": str(workdir),
        "TMPDIR": str(workdir / "tmp"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "EVOLVEFLOW_PYTHON": spec.interpreter,
    }
    if spec.pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in spec.pythonpath)
    if "LC_ALL" in os.environ:
        env["LC_ALL"] = os.environ["LC_ALL"]
    if seed is not None:
        env["EVOLVEFLOW_SEED"] = str(int(seed))
    env.update(spec.extra_env)
    return env


def _isolation_args(spec: EvaluatorSpec) -> dict[str, bool]:
    isolation = isolation_for(spec)
    return {"separate_user": isolation.separate_user, "own_network": isolation.own_network}


def _limits(spec: EvaluatorSpec, timeout_s: float | None = None) -> sandbox.Limits:
    return sandbox.Limits(
        timeout_s=timeout_s or spec.timeout_s, memory_mb=spec.memory_mb,
        max_output_bytes=spec.max_output_bytes, kill_output_bytes=spec.kill_output_bytes,
        max_processes=spec.max_processes, max_file_mb=spec.max_file_mb, max_result_bytes=spec.max_result_bytes,
    )


def _readable_paths(spec: EvaluatorSpec) -> list[Path]:
    # What must stay visible even if it lives under a masked directory such as /tmp.
    interpreter = Path(spec.interpreter)
    paths = [spec.path.parent, Path(sys.executable).parent, Path(sys.prefix), Path(sys.base_prefix),
             interpreter.parent, interpreter.resolve().parent.parent, HARNESS_PATH.parent, *spec.pythonpath,
             *spec.readable_paths]
    return list(dict.fromkeys(paths))


def run_evaluation(code: str, spec: EvaluatorSpec, *, seed: int | None = None, filename: str = "program.py",
                   step: int = 0, keep_files_to: Path | None = None,
                   cancel: threading.Event | None = None) -> EvalResult:
    """Lay the candidate out as the evaluator's contract wants, run the evaluator, classify the result.

    step numbers the ASI-Evolve step directory; keep_files_to receives the files the evaluator
    left in its results directory (regular files only, up to spec.keep_files_max_bytes).
    cancel: set it to kill the evaluator; Aborted is raised (an abort is no outcome of the candidate).
    """
    if not filename or Path(filename).name != filename or filename in (".", ".."):
        raise ValueError(f"filename must be a plain file name such as 'program.py', got {filename!r}")
    level = sandbox_level(spec)
    adapter = adapter_for(spec)
    workdir = Path(tempfile.mkdtemp(prefix="evolveflow-eval-"))
    try:
        (workdir / "tmp").mkdir()
        try:
            launch = adapter.prepare(workdir, code, filename, step)
        except adapters.ExperimentCopyError as exc:
            return EvalResult(outcome=Outcome.INFRA_ERROR, error=str(exc))
        channel = os.pipe() if launch.channel else None
        command = [str(channel[1]) if part == CHANNEL_FD and channel else part for part in launch.command]
        try:
            done = sandbox.run_sandboxed(
                command, workdir=workdir, cwd=launch.cwd, env=evaluator_environment(workdir, seed, spec),
                level=level, limits=_limits(spec), readable=_readable_paths(spec), hidden=spec.hidden_paths,
                channel=channel, frozen=launch.frozen, writable=launch.writable, cancel=cancel,
                **_isolation_args(spec),
            )
        except OSError as exc:
            return EvalResult(outcome=Outcome.INFRA_ERROR, error=f"could not start the evaluator: {exc}")
        stdout = done.stdout.decode("utf-8", "replace")
        stderr = done.stderr.decode("utf-8", "replace")
        verdict = distrust_leftovers(adapter.verdict(Finished(
            exit_code=done.exit_code, killed_reason=done.killed_reason, stdout=stdout, stderr=stderr,
            channel=done.channel, cwd=launch.cwd, results_dir=launch.results_dir, stdout_bytes=done.stdout_bytes,
            stdout_cut=done.stdout_bytes > len(done.stdout), max_result_bytes=spec.max_result_bytes)),
            done.leftovers)
        if keep_files_to is not None and launch.results_dir is not None and spec.keep_files_max_bytes:
            keep_files(launch.results_dir, keep_files_to, spec.keep_files_max_bytes, launch.skip_files)
    finally:
        _remove_tree(workdir)
    # Metrics enter the tree (and from there reports and prompts) cut here, once; the score is apart.
    return EvalResult(
        outcome=verdict.outcome, score=verdict.score, metrics=caps.cap_metrics(verdict.metrics, spec.metrics_max_chars),
        error=caps.cut_text(verdict.error, spec.metrics_max_chars, keep="tail") if verdict.error else verdict.error,
        exit_code=done.exit_code, duration_s=round(done.duration_s, 4),
        stdout_tail=stdout[-_TAIL_CHARS:], stderr_tail=stderr[-_TAIL_CHARS:],
        feedback=feedback_of(verdict, stderr, spec.feedback_max_chars),
        private_metrics=caps.cap_metrics(verdict.private_metrics, spec.metrics_max_chars),
    )


def distrust_leftovers(verdict: Verdict, leftovers: int | None) -> Verdict:
    """Return a candidate_error instead of an ok verdict when processes outlived the evaluator.

    A process still running after the evaluator exited could have rewritten the result after the
    evaluator wrote it (or printed after it); such a result is never trusted.
    """
    if verdict.outcome != Outcome.OK or not leftovers:
        return verdict
    return dataclasses.replace(
        verdict, outcome=Outcome.CANDIDATE_ERROR, score=None,
        error=(f"{leftovers} process(es) of this evaluation were still running when the evaluator exited; "
               "they could have rewritten its result, so it is not trusted (make the program and the "
               "evaluator wait for every process they start)"))


def feedback_of(verdict: Verdict, stderr: str, max_chars: int) -> dict[str, str]:
    """Return the attempt's feedback for the LLM: the adapter's, its error text and stderr's tail, capped."""
    items = dict(verdict.feedback)
    if verdict.error:
        items["error"] = verdict.error
    if stderr.strip():
        items["stderr"] = stderr
    if max_chars == 0:
        return {}
    # Errors and logs say the most at their end; keep the tail of long items.
    return {key: value if len(value) <= max_chars else "[...] " + value[-max_chars:] for key, value in items.items()}


def keep_files(source: Path, target: Path, max_bytes: int, skip: frozenset[str] = frozenset()) -> int:
    """Copy regular files (never symlinks, devices or hard links) from source to target, up to max_bytes."""
    kept = 0
    for root, dirs, files in os.walk(source):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        for name in sorted(files):
            path = Path(root) / name
            if path.relative_to(source).as_posix() in skip:
                continue
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or kept + info.st_size > max_bytes:
                continue
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            with os.fdopen(fd, "rb") as handle, open(destination, "wb") as out:
                shutil.copyfileobj(handle, out)
            kept += info.st_size
    return kept


def make_writable_and_retry(function, target, _error) -> None:
    """rmtree's error handler: a candidate may leave read-only folders behind, which a non-root
    evolveflow cannot delete into. Never through a symlink: a chmod that followed one would change
    a file outside the working directory (follow_symlinks=False fails on a symlink instead)."""
    for each in (os.path.dirname(target), target):
        try:
            os.chmod(each, stat.S_IRWXU, follow_symlinks=False)
        except (OSError, NotImplementedError):
            pass
    try:
        function(target)
    except OSError:
        pass


def _remove_tree(path: Path) -> None:
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=make_writable_and_retry)
    else:
        shutil.rmtree(path, onerror=make_writable_and_retry)


__all__ = [
    "EvaluatorConfigError", "EvaluatorSpec", "Isolation", "isolation_for", "adapter_for", "check_evaluator", "evaluator_environment",
    "keep_files", "run_evaluation", "sandbox_level",
]
