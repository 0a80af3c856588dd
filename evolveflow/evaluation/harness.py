"""Run a user's evaluator.py ``evaluate(program_path)`` and write its dict result as JSON to a file.

Usage: ``python -m evolveflow.evaluation.harness EVALUATOR_PY PROGRAM_PATH RESULT_PATH``
(evolveflow runs this file by path, so it imports only the standard library).
``python ... harness.py --check EVALUATOR_PY`` only verifies that ``evaluate`` can be called.

The result goes to a file, not stdout, so that whatever the candidate prints cannot corrupt it.
``seed=`` is passed when ``evaluate`` has a ``seed`` parameter and EVOLVEFLOW_SEED is set.
Exit status: 0 result written; 1 ``evaluate`` raised (``{"error", "traceback"}`` written);
75 the evaluator itself could not be loaded (an infrastructure problem, not the candidate's);
2 wrong usage.
"""
from __future__ import annotations

import importlib.util
import inspect
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

EXIT_RAISED = 1
EXIT_USAGE = 2
EXIT_EVALUATOR_UNUSABLE = 75
_TRACEBACK_LINES = 25


class EvaluatorLoadError(Exception):
    """The evaluator file cannot be imported or has no usable evaluate()."""


def load_evaluate(evaluator_path: Path) -> Callable[..., Any]:
    """Import the evaluator file by path and return its evaluate function."""
    if not evaluator_path.is_file():
        raise EvaluatorLoadError(f"evaluator {evaluator_path} does not exist")
    # Keep the file's own name (pickling, multiprocessing) unless it would replace a loaded module.
    name = evaluator_path.stem
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
        detail = "".join(traceback.format_exception(exc)[-_TRACEBACK_LINES:])
        raise EvaluatorLoadError(f"importing evaluator {evaluator_path} failed:\n{detail}") from exc
    evaluate = getattr(module, "evaluate", None)
    if not callable(evaluate):
        raise EvaluatorLoadError(
            f"evaluator {evaluator_path} has no function evaluate(program_path); define one that returns "
            '{"score": ..., "metrics": {...}}')
    try:
        inspect.signature(evaluate).bind("program.py")
    except TypeError as exc:
        raise EvaluatorLoadError(
            f"evaluate() in {evaluator_path} must accept the program path as its only required "
            f"argument; its signature is evaluate{inspect.signature(evaluate)}") from exc
    except ValueError:
        pass  # builtins without a signature: let the call decide
    return evaluate


def _accepts_seed(evaluate: Callable[..., Any]) -> bool:
    try:
        return "seed" in inspect.signature(evaluate).parameters
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


def write_json_atomically(path: Path, payload: Any) -> None:
    """Write payload as JSON to path via a temporary file, so a reader never sees half a result."""
    text = json.dumps(payload, default=_to_json)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def run(evaluator_path: Path, program_path: Path, result_path: Path) -> int:
    """Call evaluate(program_path[, seed=...]), write its result or error, and return the exit status."""
    try:
        evaluate = load_evaluate(evaluator_path)
    except EvaluatorLoadError as exc:
        print(f"evolveflow harness: {exc}", file=sys.stderr)
        return EXIT_EVALUATOR_UNUSABLE
    kwargs: dict[str, Any] = {}
    seed = os.environ.get("EVOLVEFLOW_SEED")
    if seed is not None and _accepts_seed(evaluate):
        kwargs["seed"] = int(seed)
    try:
        result = evaluate(str(program_path), **kwargs)
    except BaseException as exc:  # noqa: BLE001 - SystemExit/KeyboardInterrupt from a candidate count too
        lines = traceback.format_exception(exc)
        trace = "".join(lines[-_TRACEBACK_LINES:])
        sys.stderr.write(trace)
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        write_json_atomically(result_path, {"error": message, "traceback": trace})
        return EXIT_RAISED
    try:
        write_json_atomically(result_path, result)
    except (TypeError, ValueError) as exc:
        write_json_atomically(result_path, {"error": f"evaluate() returned a value that is not JSON-serializable: {exc}"})
        return EXIT_RAISED
    return 0


def check(evaluator_path: Path) -> int:
    """Verify that the evaluator imports and has a callable evaluate(program_path)."""
    try:
        load_evaluate(evaluator_path)
    except EvaluatorLoadError as exc:
        print(f"evolveflow harness: {exc}", file=sys.stderr)
        return EXIT_EVALUATOR_UNUSABLE
    return 0


def main(argv: list[str]) -> int:
    """Dispatch the command line: run mode or --check mode."""
    if len(argv) == 2 and argv[0] == "--check":
        return check(Path(argv[1]).absolute())
    if len(argv) != 3:
        print("usage: harness EVALUATOR_PY PROGRAM_PATH RESULT_PATH | harness --check EVALUATOR_PY",
              file=sys.stderr)
        return EXIT_USAGE
    return run(Path(argv[0]).absolute(), Path(argv[1]).absolute(), Path(argv[2]).absolute())


def _prepare_import_path(evaluator_arg: str) -> None:
    # Run by path, sys.path[0] is this package's folder, whose module names (runner, sandbox, ...)
    # would shadow the user's; the evaluator's own folder is what its imports expect instead.
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != Path(here)]
    sys.path.insert(0, str(Path(evaluator_arg).absolute().parent))


if __name__ == "__main__":
    args = sys.argv[1:]
    if args:
        _prepare_import_path(args[-1] if args[0] == "--check" else args[0])
    status = main(args)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # the candidate may have closed or replaced the stream
    # os._exit: threads the candidate left running must not keep the evaluation alive until timeout.
    os._exit(status)
