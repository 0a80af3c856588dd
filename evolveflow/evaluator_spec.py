"""The sandbox settings and contract of an experiment's evaluator, built from its config (light to import)."""
from __future__ import annotations

import shutil
from pathlib import Path

from evolveflow.evaluation import EvaluatorSpec
from evolveflow.experiment import Experiment


def evaluator_spec(experiment: Experiment) -> EvaluatorSpec:
    """Returns how the experiment's evaluator is run: contract, interpreter, limits and hidden paths."""
    ev = experiment.config.evaluation
    python = ev.python
    if python and "/" in python and not Path(python).expanduser().is_absolute():
        python = str((experiment.dir / python).resolve())  # a path relative to the experiment folder
    elif python and "/" not in python:
        python = shutil.which(python) or python  # a command name such as python3.12
    return EvaluatorSpec(
        path=experiment.evaluator_path, timeout_s=ev.timeout_s, memory_mb=ev.memory_mb,
        max_output_bytes=ev.max_output_bytes, kill_output_bytes=ev.kill_output_bytes,
        sandbox=ev.sandbox, contract=ev.contract, python=python,
        pythonpath=tuple((experiment.dir / p).resolve() for p in ev.pythonpath),
        cascade=ev.cascade, cascade_thresholds=tuple(ev.cascade_thresholds), mean_excludes=tuple(ev.mean_excludes),
        experiment_dir=experiment.dir, feedback_max_chars=ev.feedback_max_chars,
        keep_files_max_bytes=ev.keep_files_max_bytes, max_result_bytes=ev.max_result_bytes,
        metrics_max_chars=ev.metrics_max_chars,
        # Under bwrap candidates cannot even read the search's databases (they cannot write
        # anywhere but their working directory at that level anyway).
        hidden_paths=(experiment.storage_dir,),
    )
