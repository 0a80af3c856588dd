"""Find an experiment folder, merge its configuration and read its inputs.

Folders laid out for ASI-Evolve, OpenEvolve or ShinkaEvolve are read as they are: their config
files are translated (evolveflow/foreign_config.py), their initial program, problem statement,
evaluator and knowledge are found under their own names, and `notices` says what was used.
"""
from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolveflow.config import OFFLINE_MODEL, Config, ConfigError, load_config_layers
from evolveflow.foreign_config import notice as foreign_notice
from storage.asi_cognition import COGNITION_STORE, INIT_COGNITION, read_cognition_script, read_cognition_store

DEFAULT_INITIAL = "initial_program.py"
GENERIC_PROBLEM = (
    "Improve the program so that the evaluator's score increases. Keep its interface (the names, "
    "arguments and return values of the functions the evaluator calls) unchanged so the evaluator "
    "can still run it."
)


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
    initial_path: Path | None = None
    knowledge_items: tuple[dict, ...] = ()  # read from the folder besides knowledge/ (init_cognition.py)
    notices: tuple[str, ...] = ()  # what was recognised in a peer framework's folder; not errors

    @property
    def program_file(self) -> str:
        """The candidate's file name in its working directory (evaluation.program_file, else derived)."""
        if self.config.evaluation.program_file:
            return self.config.evaluation.program_file
        suffix = self.initial_path.suffix if self.initial_path is not None else ""
        return f"program{suffix or '.py'}"

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
    looked = list(dict.fromkeys(str(c.resolve()) for c in candidates))  # an absolute path is both
    raise ExperimentError(
        f"no experiment '{name_or_path}': looked for {' and '.join(looked)}. "
        f"Create one with: evolveflow init {Path(name_or_path).name}"
    )


def experiment_config_file(experiment_dir: Path) -> tuple[Path | None, list[Path]]:
    """Returns the experiment's config file and the other candidates that were passed over.

    config.yaml; else the first config*.yaml by name (OpenEvolve's config_phase_1.yaml); else
    ShinkaEvolve's shinka_small.yaml (its run_evo.py default), shinka.yaml, or the first shinka*.yaml.
    """
    own = experiment_dir / "config.yaml"
    if own.is_file():
        return own, []
    def found(pattern: str) -> list[Path]:
        return sorted(p for suffix in ("yaml", "yml") for p in experiment_dir.glob(f"{pattern}.{suffix}")
                      if p.is_file())
    for group in (found("config*"), found("shinka*")):
        preferred = [p for p in group if p.name in ("shinka_small.yaml", "shinka.yaml")]
        if group:
            chosen = (preferred or group)[0]
            return chosen, [p for p in group if p != chosen]
    return None, []


def config_files(experiment_dir: Path, root: Path, extra: Path | None) -> list[Path]:
    """Returns the config files in merge order: root, experiment, then --config."""
    files = [p for p in (root / "config.yaml", experiment_config_file(experiment_dir)[0]) if p and p.is_file()]
    if extra is not None:
        if not extra.is_file():
            raise ConfigError(f"--config {extra}: no such file")
        files.append(extra)
    return files


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


_EVALUATORS = ("eval.sh", "evaluator.py", "evaluate.py")  # ours and ASI-Evolve, ours and OpenEvolve, ShinkaEvolve


def _evaluator_path(config: Config, experiment_dir: Path) -> Path:
    declared = config.evaluation.script or config.evaluation.evaluator
    if declared:
        path = Path(declared)
        path = path if path.is_absolute() else experiment_dir / path
        if not path.is_file():
            key = "evaluation.script" if config.evaluation.script else "evaluation.evaluator"
            raise ExperimentError(f"{key} = {declared}: no such file ({path})")
        return path.resolve()
    for default in _EVALUATORS:
        if (experiment_dir / default).is_file():
            return (experiment_dir / default).resolve()
    raise ExperimentError(
        f"{experiment_dir} has no evaluator: add eval.sh (called with the candidate's path, prints "
        "JSON with a score) or evaluator.py (with evaluate(program_path) -> dict), or ShinkaEvolve's "
        "evaluate.py, or set evaluation.script / evaluation.evaluator"
    )


def _initial_program(config: Config, experiment_dir: Path) -> tuple[Path, bool]:
    """Returns the initial program, and whether it was found under a peer framework's name."""
    declared = experiment_dir / config.initial_program
    if declared.is_file():
        return declared, False
    if config.initial_program == DEFAULT_INITIAL:
        def variants(stem: str) -> list[Path]:  # .py first, then other languages by name
            return sorted((p for p in experiment_dir.glob(f"{stem}.*") if p.is_file() and p.suffix != ".pyc"),
                          key=lambda p: (p.suffix != ".py", p.name))
        # ASI-Evolve: `initial_program` without extension; ShinkaEvolve: initial.<ext>; OpenEvolve:
        # initial_program.<ext>.
        peers = [experiment_dir / "initial_program", *variants("initial"), *variants("initial_program")]
        for candidate in peers:
            if candidate.is_file():
                return candidate, True
    raise ExperimentError(
        f"{experiment_dir}: initial program {config.initial_program} not found"
        + (" (nor initial_program, initial.* or initial_program.*)" if config.initial_program == DEFAULT_INITIAL
           else "")
    )


def _shinka_task_message(experiment_dir: Path) -> str | None:
    """Returns the literal task system message a ShinkaEvolve run_evo.py sets (it is not in its YAML)."""
    for name in ("run_evo.py", "run_evo_async.py"):
        path = experiment_dir / name
        if not path.is_file():
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        # `task_sys_msg = "..."` at any level, or a keyword `task_sys_msg="..."` (EvolutionConfig(...)).
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id.endswith("sys_msg")
                                                    for t in node.targets):
                value = node.value
            elif isinstance(node, ast.keyword) and node.arg and node.arg.endswith("sys_msg"):
                value = node.value
            else:
                continue
            if isinstance(value, ast.Constant) and isinstance(value.value, str) and value.value.strip():
                return value.value
    return None


def _problem(config: Config, experiment_dir: Path) -> tuple[str, str | None]:
    """Returns the problem statement and, unless it is input.md, a notice naming where it came from."""
    problem_file = experiment_dir / "input.md"
    if problem_file.is_file():
        return problem_file.read_text(), None
    if config.prompts.system_message and config.prompts.system_message.strip():
        return config.prompts.system_message, "problem statement: prompts.system_message (no input.md)"
    message = _shinka_task_message(experiment_dir)
    if message:
        return message, "problem statement: the task system message in run_evo.py (no input.md)"
    for name in ("README.md", "readme.md", "README.txt", "README"):
        if (experiment_dir / name).is_file():
            return (experiment_dir / name).read_text(errors="replace"), f"problem statement: {name} (no input.md)"
    return GENERIC_PROBLEM, ("problem statement: a generic one, \"improve the program so that the evaluator's "
                             "score increases\" (no input.md, README.md or system message: write input.md)")


def _asi_knowledge(experiment_dir: Path) -> tuple[tuple[dict, ...], str | None]:
    """Returns ASI-Evolve knowledge found in the folder (init_cognition.py, its stored output) and a notice."""
    items: tuple[dict, ...] = ()
    parts = []
    script_path = experiment_dir / INIT_COGNITION
    if script_path.is_file():
        script = read_cognition_script(script_path)
        items += script.items
        parts.append(script.problem or f"{INIT_COGNITION}: {len(script.items)} knowledge items read without running it")
        if script.skipped:
            places = f"{script.skipped} place{'s' if script.skipped != 1 else ''}"
            parts.append(f"knowledge built by code ({places} in the script, each possibly several items) "
                         "was skipped (add it to knowledge/ instead)")
    stored = read_cognition_store(experiment_dir / COGNITION_STORE)
    if stored:
        items += stored
        parts.append(f"{COGNITION_STORE}: {len(stored)} knowledge items")
    if not parts:
        return (), None
    return items, "; ".join(parts) + ("; all loaded into the knowledge store at start" if items else "")


def _template_notice(config: Config, experiment_dir: Path) -> str | None:
    jinja = sorted(p.name for p in (experiment_dir / config.prompts.dir).glob("*.jinja2"))
    if not jinja:
        return None
    return (f"{config.prompts.dir}/{{{','.join(jinja)}}} are ASI-Evolve templates and are not used: evolveflow's "
            f"own prompts are (yours go in {config.prompts.dir}/{{system,propose,analyze}}.md)")


_LOOPBACK = ("//127.", "//localhost", "//[::1]")


def _offline_without_key(config: Config, foreign: list, overrides: dict[str, Any], root: Path) -> str | None:
    """Switch a hosted model named by a *foreign* config to the offline one when its key is not set.

    A peer's example folder names the model its authors used; copied here without that provider's
    key, every round would be rejected. Our own config and --model stay strict (checked at start).
    """
    api = config.api
    sources = [f for f in foreign if (f.translation.config.get("api") or {}).get("model") == api.model]
    if not sources or "api.model" in overrides or api.model.startswith("offline/"):
        return None
    if api.api_base and any(marker in api.api_base for marker in _LOOPBACK):
        return None  # a local server usually needs no key
    variable = api.api_key_env or "OPENAI_API_KEY"  # translated models are OpenAI-compatible
    if os.environ.get(variable):
        return None
    named = api.model
    config.api.model, config.api.api_key_env = OFFLINE_MODEL, None
    return (f"api.model {named} (from {_shown(sources[-1].path, root)}) needs {variable}, which is not set: "
            f"running with the offline model instead (export {variable}, or pass --model, to use {named})")


def load_experiment(
    name_or_path: str,
    root: Path | None = None,
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Experiment:
    """Returns the experiment with its merged config (root → experiment → --config → flags)."""
    root = (root or Path.cwd()).resolve()
    exp_dir = find_experiment_dir(name_or_path, root)
    files = config_files(exp_dir, root, config_file)
    config, foreign = load_config_layers(files, overrides)
    notices: list[str] = []
    chosen, passed_over = experiment_config_file(exp_dir)
    if chosen is not None and passed_over:
        notices.append(f"config: {chosen.name}, the first of {len(passed_over) + 1} candidates (pass another "
                       f"with --config, e.g. --config {_shown(passed_over[0], root)})")
    # A foreign file in the experiment (or --config) tells which evaluator contract the folder
    # follows; a foreign root config.yaml does not speak for every experiment.
    hints = [f.translation.contract for f in foreign if f.path != root / "config.yaml"]
    if hints and config.evaluation.contract == "auto":
        config.evaluation.contract = hints[-1]
    notices += [foreign_notice(f.translation, _shown(f.path, root), f.path != root / "config.yaml")
                for f in foreign]
    offline_notice = _offline_without_key(config, foreign, overrides or {}, root)
    if offline_notice:
        notices.append(offline_notice)
    initial, from_peer = _initial_program(config, exp_dir)
    if from_peer:
        notices.append(f"initial program: {initial.name} (no {DEFAULT_INITIAL})")
    problem, problem_notice = _problem(config, exp_dir)
    knowledge, cognition_notice = _asi_knowledge(exp_dir)
    notices += [n for n in (problem_notice, cognition_notice, _template_notice(config, exp_dir)) if n]
    storage = Path(config.storage.dir) if config.storage.dir else root / "runs" / exp_dir.name
    if not storage.is_absolute():
        storage = root / storage
    return Experiment(
        name=exp_dir.name,
        dir=exp_dir,
        config=config,
        problem=problem,
        initial_code=initial.read_text(),
        evaluator_path=_evaluator_path(config, exp_dir),
        storage_dir=storage.resolve(),
        initial_path=initial.resolve(),
        knowledge_items=knowledge,
        notices=tuple(notices),
    )
