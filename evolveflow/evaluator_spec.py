"""The sandbox settings and contract of an experiment's evaluator, built from its config (light to import)."""
from __future__ import annotations

import os
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
        readable_paths=tuple((experiment.dir / Path(p).expanduser()).resolve() for p in ev.readable_paths),
        cascade=ev.cascade, cascade_thresholds=tuple(ev.cascade_thresholds), mean_excludes=tuple(ev.mean_excludes),
        experiment_dir=experiment.dir, feedback_max_chars=ev.feedback_max_chars,
        keep_files_max_bytes=ev.keep_files_max_bytes, max_result_bytes=ev.max_result_bytes,
        metrics_max_chars=ev.metrics_max_chars,
        hidden_paths=hidden_paths(experiment),
        max_file_mb=ev.max_file_mb, separate_user=ev.separate_user, network=ev.network,
        max_processes=ev.max_processes,
    )


# Credentials and histories in a home directory: hidden from evaluators under bwrap by default.
HOME_SECRETS = (".aws", ".ssh", ".gnupg", ".azure", ".kube", ".docker", ".netrc", ".git-credentials",
                ".pypirc", ".npmrc", ".huggingface", ".cache/huggingface", ".config/gcloud", ".config/gh",
                ".bash_history", ".zsh_history", ".python_history", ".psql_history", ".mysql_history")
SYSTEM_SECRETS = ("/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/sudoers.d", "/etc/ssl/private")


def hidden_paths(experiment: Experiment) -> tuple[Path, ...]:
    """Returns what the evaluator must not see under bwrap: evaluation.hidden_paths, and unless
    hide_defaults is off: the experiment's storage (its databases and the other candidates'
    results), the Prefect home (its database and settings), credential dot-files of the home
    directory, the system's secrets and the working directory's .env file."""
    ev = experiment.config.evaluation
    paths = [Path(p).expanduser() if p.startswith("~") else (experiment.dir / p).resolve() if not Path(p).is_absolute()
             else Path(p) for p in ev.hidden_paths]
    if ev.hide_defaults:
        home = Path.home()
        prefect_home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
        paths += [experiment.storage_dir, prefect_home, *(home / name for name in HOME_SECRETS),
                  *map(Path, SYSTEM_SECRETS), Path.cwd() / ".env"]
    return tuple(dict.fromkeys(p.absolute() for p in paths))
