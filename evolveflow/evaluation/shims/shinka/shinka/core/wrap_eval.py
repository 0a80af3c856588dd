"""run_shinka_eval as ShinkaEvolve's evaluate.py scripts call it (evolveflow stand-in, same contract).

Loads the program, calls its experiment function `num_runs` times, validates and aggregates the
results, and writes `metrics.json` and `correct.json` to `results_dir`. Any exception becomes
`correct: false` with the error text and zeroed default metrics, as the framework documents.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pickle
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

DEFAULT_METRICS_ON_ERROR: Dict[str, Any] = {
    "combined_score": 0.0, "execution_time_mean": 0.0, "execution_time_std": 0.0,
    "num_successful_runs": 0, "num_valid_runs": 0, "num_invalid_runs": 0, "all_validation_errors": [],
}


def load_program(program_path: str) -> Any:
    """Imports the candidate program from its path as module 'program'."""
    spec = importlib.util.spec_from_file_location("program", program_path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load program from {program_path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_json_results(results_dir: str, metrics: Dict[str, Any], correct: bool,
                      error: Optional[str] = None) -> None:
    """Writes correct.json and metrics.json into results_dir."""
    os.makedirs(results_dir, exist_ok=True)
    with open(os.path.join(results_dir, "correct.json"), "w") as handle:
        json.dump({"correct": correct, "error": error}, handle, indent=4)
    with open(os.path.join(results_dir, "metrics.json"), "w") as handle:
        json.dump(metrics, handle, indent=4, default=str)


def run_shinka_eval(
    program_path: str,
    results_dir: str,
    experiment_fn_name: str,
    num_runs: int,
    get_experiment_kwargs: Optional[Callable[[int], Dict[str, Any]]] = None,
    aggregate_metrics_fn: Optional[Callable[[List[Any]], Dict[str, Any]]] = None,
    validate_fn: Optional[Callable[[Any], Tuple[bool, Optional[str]]]] = None,
    plotting_fn: Optional[Callable[..., Any]] = None,
    default_metrics_on_error: Optional[Dict[str, Any]] = None,
    **_ignored: Any,
) -> Tuple[Dict[str, Any], bool, Optional[str]]:
    """Runs the experiment function num_runs times and writes the results; returns them too."""
    correct, first_error = True, None
    validation_errors: List[str] = []
    try:
        module = load_program(program_path)
        experiment = getattr(module, experiment_fn_name, None)
        if not callable(experiment):
            raise AttributeError(f"Experiment function '{experiment_fn_name}' not found in {program_path}")
        results, times, valid_runs = [], [], 0
        for index in range(num_runs):
            kwargs = get_experiment_kwargs(index) if get_experiment_kwargs else {"seed": index + 1}
            started = time.perf_counter()
            result = experiment(**kwargs)
            times.append(time.perf_counter() - started)
            results.append(result)
            if validate_fn is not None:
                ok, message = validate_fn(result)
                if ok:
                    valid_runs += 1
                else:
                    correct = False
                    text = f"Validation failed: {message}"
                    first_error = first_error or text
                    if message and str(message) not in validation_errors:
                        validation_errors.append(str(message))
        metrics = dict(aggregate_metrics_fn(results)) if aggregate_metrics_fn else {
            "num_successful_runs": len(results)}
        metrics["execution_time_mean"] = statistics.fmean(times) if times else 0.0
        metrics["execution_time_std"] = statistics.pstdev(times) if len(times) > 1 else 0.0
        if validate_fn is not None:
            metrics.update(num_valid_runs=valid_runs, num_invalid_runs=num_runs - valid_runs,
                           all_validation_errors=validation_errors)
    except Exception as exc:  # noqa: BLE001 - the framework records any failure as incorrect
        print(f"Evaluation error: {exc}")
        defaults = default_metrics_on_error or {}
        metrics = {key: defaults.get(key, value) for key, value in DEFAULT_METRICS_ON_ERROR.items()}
        if validate_fn is not None:
            metrics["all_validation_errors"] = [str(exc)]
        correct, first_error = False, str(exc)
    os.makedirs(results_dir, exist_ok=True)
    if "extra_data" in metrics:
        with open(os.path.join(results_dir, "extra.pkl"), "wb") as handle:
            pickle.dump(metrics.pop("extra_data"), handle)
    save_json_results(results_dir, metrics, correct, first_error)
    return metrics, correct, first_error
