"""Run a user's Python evaluator inside the sandbox and send its raw result to evolveflow over a pipe.

Usage (evolveflow runs this file by path, so it imports only the standard library):

    python harness.py run MODE FD OPTIONS_JSON EVALUATOR PROGRAM
    python harness.py check MODE OPTIONS_JSON EVALUATOR

MODE is the evaluator contract:

* ``native``: ``evaluate(program_path[, seed=])`` from the evaluator file; its return value is sent.
* ``openevolve``: ``evaluate(program_path)``, or the cascade ``evaluate_stage1/2/3`` with
  ``OPTIONS["cascade_thresholds"]``; a dict or an object with ``.metrics`` / ``.artifacts`` is sent as
  ``{"metrics": ..., "artifacts": ..., "cascade_stage": N}``.
* ``shinka``: the evaluator file is run as ``__main__`` with ``--program_path PROGRAM --results_dir
  OPTIONS["results_dir"]``; once it has finished, ``metrics.json`` and ``correct.json`` are sent.

The result travels over the inherited pipe FD, never through a file in the candidate's working
directory or stdout, and only after the evaluator has *returned*: a candidate that writes fake
result files, prints score lines or calls ``os._exit(0)`` produces no result at all.
(A candidate imported into this process could still find the descriptor and write to it on purpose:
see docs/sandbox.md, "What a candidate in the evaluator's process can do".)

Exit status: 0 result sent; 1 the evaluator raised (``{"error", "traceback"}`` sent);
75 the evaluator itself could not be loaded (an infrastructure problem, not the candidate's);
2 wrong usage.
"""
from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import math
import os
import runpy
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

EXIT_RAISED = 1
EXIT_USAGE = 2
EXIT_EVALUATOR_UNUSABLE = 75
_TRACEBACK_LINES = 25
SHIMS_DIR = Path(__file__).resolve().parent / "shims"


class EvaluatorLoadError(Exception):
    """The evaluator file cannot be imported or lacks what its contract needs."""


def _format_exception(exc: BaseException) -> str:
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return "".join(lines[-_TRACEBACK_LINES:])


def _import_problem(evaluator_path: Path, exc: BaseException) -> str:
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return (f"it imports '{exc.name}', which {sys.executable} cannot import: "
                "set evaluation.python to an interpreter that has it, or add its folder to evaluation.pythonpath")
    return f"importing evaluator {evaluator_path} failed:\n{_format_exception(exc)}"


def load_module(evaluator_path: Path, run_name: str | None = None) -> Any:
    """Import the evaluator file by path and return the module."""
    if not evaluator_path.is_file():
        raise EvaluatorLoadError(f"evaluator {evaluator_path} does not exist")
    # Keep the file's own name (pickling, multiprocessing) unless it would replace a loaded module.
    name = run_name or evaluator_path.stem
    if not name.isidentifier() or name in sys.modules:
        name = "_evolveflow_user_evaluator"
    spec = importlib.util.spec_from_file_location(name, evaluator_path)
    if spec is None or spec.loader is None:
        raise EvaluatorLoadError(f"evaluator {evaluator_path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001 - any failure to import is the evaluator's problem
        raise EvaluatorLoadError(_import_problem(evaluator_path, exc)) from exc
    return module


def _function(module: Any, name: str, evaluator_path: Path, required: bool = True) -> Callable[..., Any] | None:
    function = getattr(module, name, None)
    if not callable(function):
        if not required:
            return None
        raise EvaluatorLoadError(
            f"evaluator {evaluator_path} has no function {name}(program_path); define one that returns "
            '{"score": ..., "metrics": {...}}')
    try:
        inspect.signature(function).bind("program.py")
    except TypeError as exc:
        raise EvaluatorLoadError(
            f"{name}() in {evaluator_path} must accept the program path as its only required "
            f"argument; its signature is {name}{inspect.signature(function)}") from exc
    except ValueError:
        pass  # builtins without a signature: let the call decide
    return function


def _accepts_seed(function: Callable[..., Any]) -> bool:
    try:
        return "seed" in inspect.signature(function).parameters
    except ValueError:
        return False


def _to_json(value: Any) -> Any:
    # numpy scalars and arrays have item()/tolist(); anything else is shown as text.
    for method in ("item", "tolist"):
        if callable(getattr(value, method, None)):
            try:
                return getattr(value, method)()
            except Exception:  # noqa: BLE001 - fall through to str()
                pass
    return str(value)


def as_plain(result: Any) -> Any:
    """Return a dict for a result object with .metrics (OpenEvolve's EvaluationResult), else result."""
    metrics = getattr(result, "metrics", None)
    if not isinstance(result, dict) and isinstance(metrics, dict):
        artifacts = getattr(result, "artifacts", None)
        return {"metrics": dict(metrics), "artifacts": dict(artifacts) if isinstance(artifacts, dict) else {}}
    return result


# ---- native ------------------------------------------------------------------------------------

def run_native(evaluator_path: Path, program: Path, options: dict) -> Any:
    """Call evaluate(program[, seed=]) and return its (plain) result."""
    module = load_module(evaluator_path)
    evaluate = _function(module, "evaluate", evaluator_path)
    kwargs: dict[str, Any] = {}
    seed = os.environ.get("EVOLVEFLOW_SEED")
    if seed is not None and _accepts_seed(evaluate):
        kwargs["seed"] = int(seed)
    return as_plain(_call(evaluate, str(program), **kwargs))


class _TempFail(Exception):
    """The evaluator's own code called sys.exit(75) (EX_TEMPFAIL): an infrastructure failure."""


class _Raised(Exception):
    """evaluate() raised: the candidate's failure (carries the original)."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


def _call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return function(*args, **kwargs)
    except SystemExit as exc:
        # exit 75 means "temporary failure" only from the evaluator's own code, never from the candidate.
        if exc.code == EXIT_EVALUATOR_UNUSABLE and _raised_at(exc, Path(function.__code__.co_filename)
                                                             if hasattr(function, "__code__") else Path("")):
            raise _TempFail(f"the evaluator called sys.exit({exc.code}) (temporary failure)") from exc
        raise _Raised(exc) from exc
    except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt from a candidate counts too
        raise _Raised(exc) from exc


# ---- openevolve --------------------------------------------------------------------------------

def _stage_result(result: Any, stage: int) -> dict:
    plain = as_plain(result)
    if not isinstance(plain, dict):
        kind = "null" if plain is None else type(plain).__name__
        return {"metrics": {}, "artifacts": {}, "not_an_object": kind}
    if "metrics" in plain and isinstance(plain["metrics"], dict) and set(plain) <= {"metrics", "artifacts"}:
        return {"metrics": plain["metrics"], "artifacts": plain.get("artifacts") or {}}
    return {"metrics": plain, "artifacts": {}}


def stage_score(metrics: dict) -> float:
    """Return the number a cascade threshold is compared with: combined_score, else the numeric mean."""
    value = metrics.get("combined_score")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    numbers = [float(v) for k, v in metrics.items()
               if k != "error" and isinstance(v, (int, float)) and math.isfinite(float(v))]
    return sum(numbers) / len(numbers) if numbers else 0.0


def run_openevolve(evaluator_path: Path, program: Path, options: dict) -> Any:
    """Run evaluate(), or the cascade evaluate_stage1/2/3 with thresholds, as OpenEvolve does."""
    module = load_module(evaluator_path)
    stage1 = _function(module, "evaluate_stage1", evaluator_path, required=False)
    if not (options.get("cascade", True) and stage1):
        return {**_stage_result(_call(_function(module, "evaluate", evaluator_path), str(program)), 0),
                "cascade_stage": 0}
    thresholds = list(options.get("cascade_thresholds") or [])
    merged = _stage_result(_call(stage1, str(program)), 1)
    stage = 1
    for number in (2, 3):
        threshold = thresholds[number - 2] if len(thresholds) >= number - 1 else None
        following = _function(module, f"evaluate_stage{number}", evaluator_path, required=False)
        if following is None or threshold is None or stage_score(merged["metrics"]) < threshold:
            break
        try:
            current = _stage_result(_call(following, str(program)), number)
        except _Raised as raised:
            raised.stage_result = {**merged, "cascade_stage": stage}  # type: ignore[attr-defined]
            raise
        merged = {"metrics": {**merged["metrics"], **current["metrics"]},
                  "artifacts": {**merged["artifacts"], **current["artifacts"]}}
        stage = number
    return {**merged, "cascade_stage": stage}


# ---- shinka ------------------------------------------------------------------------------------

def _read_json_file(path: Path) -> Any:
    if path.is_symlink() or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except ValueError as exc:
        return {"__unreadable__": f"{path.name} is not valid JSON ({exc})"}


def _deepest_frame_in(exc: BaseException, path: Path) -> str | None:
    """Return the name of the innermost traceback frame that runs code of `path` (None: no such frame)."""
    name, tb, target = None, exc.__traceback__, str(path)
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == target:
            name = tb.tb_frame.f_code.co_name
        tb = tb.tb_next
    return name


def _raised_at(exc: BaseException, path: Path) -> str | None:
    """Return the function of `path` in which exc was raised itself (not deeper), else None."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None and tb.tb_frame.f_code.co_filename == str(path):
        return tb.tb_frame.f_code.co_name
    return None


def run_shinka(evaluator_path: Path, program: Path, options: dict) -> Any:
    """Run the evaluate.py script as __main__ with Shinka's flags; return the files it wrote.

    The files are trusted only when the script itself finished: it returned, or it called
    sys.exit() in its own code. A SystemExit from anywhere else (the candidate, imported by
    run_shinka_eval, which catches only Exception) is the candidate ending the evaluation early.
    An ImportError of the script's own top-level imports means the evaluator is unusable here.
    """
    results_dir = Path(options["results_dir"])
    results_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("metrics.json", "correct.json"):
        (results_dir / stale).unlink(missing_ok=True)
    sys.argv = [str(evaluator_path), "--program_path", str(program), "--results_dir", str(results_dir)]
    exit_status: Any = 0
    try:
        runpy.run_path(str(evaluator_path), run_name="__main__")
    except SystemExit as exc:
        if _raised_at(exc, evaluator_path) is None:
            raise _Raised(RuntimeError(
                f"the evaluation ended with SystemExit({exc.code!r}) raised outside {evaluator_path.name} "
                "(by the candidate?) before the script finished, so its result files are not trusted")) from exc
        exit_status = exc.code if exc.code is not None else 0
        if exit_status == EXIT_EVALUATOR_UNUSABLE:
            raise _TempFail(f"{evaluator_path.name} called sys.exit(75) (temporary failure)") from exc
    except ImportError as exc:
        if _deepest_frame_in(exc, evaluator_path) == "<module>":
            raise EvaluatorLoadError(_import_problem(evaluator_path, exc)) from exc
        raise _Raised(exc) from exc
    except BaseException as exc:  # noqa: BLE001
        raise _Raised(exc) from exc
    return {"metrics_json": _read_json_file(results_dir / "metrics.json"),
            "correct_json": _read_json_file(results_dir / "correct.json"),
            "exit_status": exit_status if isinstance(exit_status, int) else str(exit_status)}


def check_shinka(evaluator_path: Path) -> None:
    """Compile the script and run only its top-level imports (not its main block, not its code)."""
    try:
        tree = ast.parse(evaluator_path.read_text(encoding="utf-8"), filename=str(evaluator_path))
    except (OSError, SyntaxError, ValueError) as exc:
        raise EvaluatorLoadError(f"{evaluator_path} cannot be compiled: {exc}") from exc
    imports = ast.Module(body=[n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], type_ignores=[])
    try:
        exec(compile(imports, str(evaluator_path), "exec"), {"__name__": "_evolveflow_shinka_check"})  # noqa: S102
    except BaseException as exc:  # noqa: BLE001 - any failure to import is the evaluator's problem
        raise EvaluatorLoadError(_import_problem(evaluator_path, exc)) from exc


MODES: dict[str, Callable[[Path, Path, dict], Any]] = {
    "native": run_native, "openevolve": run_openevolve, "shinka": run_shinka,
}


def send(fd: int, payload: Any) -> None:
    """Write payload as JSON to the result pipe and close it."""
    try:
        data = json.dumps(payload, default=_to_json, allow_nan=True).encode("utf-8")
    except (TypeError, ValueError) as exc:
        data = json.dumps({"error": f"the evaluator returned a value that is not JSON-serializable: {exc}"}).encode()
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.close(fd)


def run(mode: str, fd: int, options: dict, evaluator_path: Path, program: Path) -> int:
    """Run the evaluator in the given mode and send its result (or error) to fd."""
    os.set_inheritable(fd, False)  # processes the evaluator starts never get the channel
    try:
        result = MODES[mode](evaluator_path, program, options)
    except (EvaluatorLoadError, _TempFail) as exc:
        print(f"evolveflow harness: {exc}", file=sys.stderr)
        return EXIT_EVALUATOR_UNUSABLE
    except _Raised as raised:
        exc = raised.original
        trace = _format_exception(exc)
        sys.stderr.write(trace)
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        payload = {"error": message, "traceback": trace}
        if hasattr(raised, "stage_result"):
            payload["stage_result"] = raised.stage_result
        send(fd, payload)
        return EXIT_RAISED
    send(fd, result)
    return 0


def check(mode: str, evaluator_path: Path) -> int:
    """Verify that the evaluator imports and has what its contract needs."""
    try:
        if mode == "shinka":
            check_shinka(evaluator_path)
        else:
            module = load_module(evaluator_path)
            has_stage1 = mode == "openevolve" and callable(getattr(module, "evaluate_stage1", None))
            _function(module, "evaluate_stage1" if has_stage1 else "evaluate", evaluator_path)
    except EvaluatorLoadError as exc:
        print(f"evolveflow harness: {exc}", file=sys.stderr)
        return EXIT_EVALUATOR_UNUSABLE
    return 0


def main(argv: list[str]) -> int:
    """Dispatch the command line: run mode or check mode."""
    if len(argv) == 6 and argv[0] == "run" and argv[1] in MODES:
        return run(argv[1], int(argv[2]), json.loads(argv[3]), Path(argv[4]).absolute(), Path(argv[5]).absolute())
    if len(argv) == 4 and argv[0] == "check" and argv[1] in MODES:
        return check(argv[1], Path(argv[3]).absolute())
    print("usage: harness run MODE FD OPTIONS_JSON EVALUATOR PROGRAM | harness check MODE OPTIONS_JSON EVALUATOR",
          file=sys.stderr)
    return EXIT_USAGE


def _prepare_import_path(evaluator_arg: str, mode: str) -> None:
    # Run by path, sys.path[0] is this package's folder, whose module names (runner, sandbox, ...)
    # would shadow the user's; the evaluator's own folder is what its imports expect instead.
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != Path(here)]
    sys.path.insert(0, str(Path(evaluator_arg).absolute().parent))
    if mode in ("openevolve", "shinka"):
        # Stand-ins for the frameworks' helper modules, used only when the real one is not installed.
        sys.path.append(str(SHIMS_DIR / mode))


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) >= 4 and args[1] in MODES:
        _prepare_import_path(args[-1] if args[0] == "check" else args[4], args[1])
    status = main(args)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # the candidate may have closed or replaced the stream
    # os._exit: threads the candidate left running must not keep the evaluation alive until timeout.
    os._exit(status)
