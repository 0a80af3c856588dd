"""Find an experiment folder, merge its configuration and read its inputs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolveflow.config import Config, ConfigError, load_config


class ExperimentError(Exception):
    """The experiment folder is missing or incomplete; the message says what to add."""


@dataclass(frozen=True)
class Experiment:
    """An experiment folder and everything read from it."""

    name: str
    dir: Path
    config: Config
    problem: str
    initial_code: str
    evaluator_path: Path
    storage_dir: Path

    @property
    def tree_path(self) -> Path:
        return self.storage_dir / "tree.duckdb"

    @property
    def memory_path(self) -> Path:
        return self.storage_dir / "memory.lance"

    @property
    def report_path(self) -> Path:
        return self.storage_dir / "report.json"

    @property
    def lock_path(self) -> Path:
        return self.storage_dir / "search.lock"

    @property
    def knowledge_dir(self) -> Path:
        return self.dir / self.config.cognition.knowledge_dir


def find_experiment_dir(name_or_path: str, root: Path) -> Path:
    """Returns experiments/<name> under root, or the folder itself when given a path."""
    candidates = [root / "experiments" / name_or_path, Path(name_or_path)]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    raise ExperimentError(
        f"no experiment '{name_or_path}': looked for {candidates[0]} and {candidates[1].resolve()}. "
        f"Create one with: evolveflow init {Path(name_or_path).name}"
    )


def config_files(experiment_dir: Path, root: Path, extra: Path | None) -> list[Path]:
    """Returns the config files in merge order: root, experiment, then --config."""
    files = [p for p in (root / "config.yaml", experiment_dir / "config.yaml") if p.is_file()]
    if extra is not None:
        if not extra.is_file():
            raise ConfigError(f"--config {extra}: no such file")
        files.append(extra)
    return files


def _evaluator_path(config: Config, experiment_dir: Path) -> Path:
    declared = config.evaluation.script or config.evaluation.evaluator
    if declared:
        path = Path(declared)
        path = path if path.is_absolute() else experiment_dir / path
        if not path.is_file():
            key = "evaluation.script" if config.evaluation.script else "evaluation.evaluator"
            raise ExperimentError(f"{key} = {declared}: no such file ({path})")
        return path.resolve()
    for default in ("eval.sh", "evaluator.py"):
        if (experiment_dir / default).is_file():
            return (experiment_dir / default).resolve()
    raise ExperimentError(
        f"{experiment_dir} has no evaluator: add eval.sh (called with the candidate's path, prints "
        "JSON with a score) or evaluator.py (with evaluate(program_path) -> dict), or set "
        "evaluation.script / evaluation.evaluator"
    )


def load_experiment(
    name_or_path: str,
    root: Path | None = None,
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Experiment:
    """Returns the experiment with its merged config (root → experiment → --config → flags)."""
    root = (root or Path.cwd()).resolve()
    exp_dir = find_experiment_dir(name_or_path, root)
    config = load_config(config_files(exp_dir, root, config_file), overrides)
    problem_file = exp_dir / "input.md"
    if not problem_file.is_file():
        raise ExperimentError(f"{exp_dir} has no input.md: describe the problem for the LLM there")
    initial = exp_dir / config.initial_program
    if not initial.is_file():
        raise ExperimentError(f"{exp_dir}: initial program {config.initial_program} not found")
    storage = Path(config.storage.dir) if config.storage.dir else root / "runs" / exp_dir.name
    if not storage.is_absolute():
        storage = root / storage
    return Experiment(
        name=exp_dir.name,
        dir=exp_dir,
        config=config,
        problem=problem_file.read_text(),
        initial_code=initial.read_text(),
        evaluator_path=_evaluator_path(config, exp_dir),
        storage_dir=storage.resolve(),
    )
