"""One nested pydantic model for all settings, merged from YAML files and CLI flags."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

OFFLINE_MODEL = "offline/mutator"
OFFLINE_ANALYST = "offline/analyst"


class ConfigError(Exception):
    """A configuration file or flag is invalid; the message names the key and the source."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ApiConfig(Section):
    """How LLMs are reached (any litellm model string)."""

    model: str = OFFLINE_MODEL
    analyzer_model: str | None = None  # None: offline/analyst with the offline model, else `model`
    api_base: str | None = None
    api_key_env: str | None = None  # name of the env var holding the key; None: litellm's default
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(4096, gt=0)
    timeout_s: float = Field(120.0, gt=0)
    num_retries: int = Field(2, ge=0)  # per model, on 429/5xx/timeouts/resets/empty replies
    retry_backoff_s: float = Field(1.0, ge=0)  # first backoff; doubles per retry (Retry-After wins)
    fallbacks: list[str] = Field(default_factory=list)
    max_reply_attempts: int = Field(2, ge=1)  # LLM calls per round until a reply yields a valid edit
    max_concurrency: int | None = Field(None, ge=1)  # LLM calls at once, proposals and analyses together
    # Per-minute budgets of the provider key (None: no limit), for every request of the search
    # (proposals, analyses, retries); a request waits until it fits. See evolveflow/llm/rate_limit.py.
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)  # prompt (estimated) + max_tokens, settled to real usage
    # Name of a Prefect global concurrency limit with slot decay, one slot per request: one budget
    # shared by every search that talks to the same Prefect server.
    prefect_rate_limit: str | None = Field(None, min_length=1)
    seed: int | None = None

    def missing_key(self) -> str | None:
        """Returns why the search cannot reach its model (api_key_env names an unset variable), or None."""
        offline = self.model.startswith("offline/") and self.analyst().startswith("offline/")  # needs no key
        if self.api_key_env and not offline and not os.environ.get(self.api_key_env):
            return (f"api.api_key_env is {self.api_key_env}, but that environment variable is not set: "
                    f"export {self.api_key_env}=... (or remove api.api_key_env to use the provider's default)")
        return None

    def analyst(self) -> str:
        if self.analyzer_model:
            return self.analyzer_model
        return OFFLINE_ANALYST if self.model.startswith("offline/") else self.model


class ParallelConfig(Section):
    num_workers: int = Field(1, ge=1, le=64)


class PipelineConfig(Section):
    """The loop's shape."""

    sample_n: int = Field(3, ge=1, le=32)  # parent + inspirations shown to the proposer
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    seed: int = 0


class IslandConfig(Section):
    num_islands: int = Field(4, ge=1)
    migration_interval: int = Field(10, ge=1)
    migration_count: int = Field(1, ge=0)
    # Behaviour descriptors for the MAP-Elites grid: metric name, low, high, number of bins.
    descriptors: list[tuple[str, float, float, int]] = Field(default_factory=list)


class SamplingConfig(Section):
    algorithm: Literal["ucb1", "greedy", "random", "island"] = "ucb1"
    ucb_c: float = Field(0.3, ge=0)  # tuned on the circle-packing demo (scores min-max normalised)
    greedy_top_k: int | None = Field(None, ge=1)
    island: IslandConfig = Field(default_factory=IslandConfig)


class DatabaseConfig(Section):
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)


class RetrievalConfig(Section):
    top_k: int = Field(3, ge=0, le=50)


class CognitionConfig(Section):
    """Knowledge and lessons in LanceDB."""

    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    embeddings: bool = True  # False: full-text search only (faster start, no model load)
    knowledge_dir: str = "knowledge"  # relative to the experiment folder
    compact_every: int = Field(25, ge=1)  # rounds between LanceDB compactions


class OutlierConfig(Section):
    """Re-run a result that looks too good to be true before it counts (see evolveflow/outliers.py)."""

    enabled: bool = True
    reruns: int = Field(2, ge=1, le=20)  # extra evaluations of a suspicious result
    new_best_margin: float = Field(0.0, ge=0)  # relative: beat the best confirmed score by more than this
    mad_threshold: float = Field(3.5, gt=0)  # robust z-score against the parent's lineage
    min_lineage: int = Field(5, ge=3)  # lineage scores needed before the MAD rule applies
    # "better": the MAD rule re-runs only results better than the lineage suggests (the ones that
    # would mislead the search); "both": also clearly worse ones.
    side: Literal["better", "both"] = "better"


class EvaluationConfig(Section):
    """The user's evaluator and its sandbox."""

    script: str | None = None  # eval.sh-style executable; relative to the experiment folder
    evaluator: str | None = None  # evaluator.py with evaluate(program_path); used if script is None
    # Which framework's evaluator contract to follow (see evolveflow/evaluation/adapters/);
    # auto: detected from the experiment folder.
    contract: Literal["auto", "native", "asi", "openevolve", "shinka"] = "auto"
    python: str | None = None  # interpreter for Python evaluators (one that has their packages)
    pythonpath: list[str] = Field(default_factory=list)  # extra import paths, relative to the experiment
    # Folders the evaluator reads (data) that bwrap would otherwise hide: under a masked folder
    # (/tmp, /run, /var/tmp, or $HOME as root with a separate uid). Absolute, ~ or relative.
    readable_paths: list[str] = Field(default_factory=list)
    cascade: bool = True  # openevolve: use evaluate_stage1/2/3 when the evaluator defines them
    cascade_thresholds: list[float] = Field(default_factory=lambda: [0.5, 0.75, 0.9])
    # openevolve: metrics left out of the mean when there is no combined_score (OpenEvolve's
    # database.feature_dimensions, whose default these are).
    mean_excludes: list[str] = Field(default_factory=lambda: ["complexity", "diversity"])
    feedback_max_chars: int = Field(4000, ge=0)  # per feedback item kept (artifact, text, stderr)
    keep_files_max_bytes: int = Field(2_000_000, ge=0)  # files left in the results dir, kept per node
    # The name the candidate gets in its working directory; None: "program" plus the initial
    # program's extension (program.py for initial_program.py, program.rs for initial_program.rs).
    program_file: str | None = None
    timeout_s: float = Field(60.0, gt=0)
    memory_mb: int | None = Field(4096, gt=0)
    max_output_bytes: int = Field(1_000_000, gt=0)
    kill_output_bytes: int = Field(64_000_000, gt=0)
    sandbox: Literal["auto", "bwrap", "process"] = "auto"
    # Paths hidden from the evaluator under bwrap (absolute, ~ or relative to the experiment);
    # hide_defaults adds the Prefect home, credential dot-files of the home directory and the
    # experiment's storage (docs/sandbox.md).
    hidden_paths: list[str] = Field(default_factory=list)
    hide_defaults: bool = True
    # Process level (no bubblewrap), evolveflow running as root: the evaluator runs as a fresh
    # unprivileged uid. network none: a namespace with only loopback, where the kernel allows.
    separate_user: bool = True
    network: Literal["none", "host"] = "none"
    max_file_mb: int | None = Field(4096, gt=0)  # RLIMIT_FSIZE: no file the evaluator writes may be larger
    max_processes: int | None = Field(512, gt=0)  # RLIMIT_NPROC headroom (not for root's own uid)
    # A result (JSON line, results.json, the harness's pipe) up to this size is read whole.
    max_result_bytes: int = Field(50_000_000, gt=0)
    # A node's metrics as stored (tree, report, UI): a value longer than this, as JSON, is cut
    # with a marker; prompts have their own, smaller cap (prompts.max_metrics_chars).
    metrics_max_chars: int = Field(20_000, gt=0)
    # Evaluations at once. Unset: one per round in flight. Set: proposals and evaluations are two
    # pools: a round frees its proposal slot (pipeline.parallel.num_workers) when its candidate
    # is ready and queues for one of these, so a slow evaluator does not idle the LLM.
    concurrency: int | None = Field(None, ge=1)
    repeats: int = Field(1, ge=1, le=50)  # evaluate every candidate k times, keep the median
    outlier: OutlierConfig = Field(default_factory=OutlierConfig)
    # Where evaluations run: local (subprocesses of this machine) or dask (the workers of the Dask
    # scheduler at dask_address, e.g. tcp://host:8786; the experiment on a path they all share).
    # dask_resources: what each evaluation holds on its worker, e.g. {GPU: 1}: one per GPU.
    executor: Literal["local", "dask"] = "local"
    dask_address: str | None = None
    dask_resources: dict[str, float] = Field(default_factory=dict)


class StopConfig(Section):
    """Budgets: the search stops cleanly, with a summary, at the first one reached (None: no limit)."""

    max_wall_s: float | None = Field(None, gt=0)
    max_cost_usd: float | None = Field(None, gt=0)  # needs known prices (see README: unknown costs)
    max_tokens: int | None = Field(None, gt=0)
    target_score: float | None = None
    patience: int | None = Field(None, ge=1)  # rounds in a row without a new best
    # Circuit breakers: stop (exit non-zero, nothing further spent) after this many rounds in a
    # row in which the LLM failed every call / the evaluator had only infrastructure failures.
    llm_down_rounds: int | None = Field(5, ge=1)
    evaluator_down_rounds: int | None = Field(5, ge=1)


class DedupConfig(Section):
    """Candidates that never reach the evaluator: exact duplicates always, near ones if enabled."""

    near_threshold: float | None = Field(None, gt=0, le=1)  # cosine similarity of code embeddings


class TaskRetry(Section):
    retries: int = Field(2, ge=0)
    delay_s: float = Field(1.0, ge=0)


class TasksConfig(Section):
    """Prefect retries per task (infrastructure faults only: candidates' own errors are data)."""

    sample: TaskRetry = Field(default_factory=lambda: TaskRetry(retries=1, delay_s=0.5))
    retrieve: TaskRetry = Field(default_factory=lambda: TaskRetry(retries=1, delay_s=0.5))
    generate: TaskRetry = Field(default_factory=lambda: TaskRetry(retries=2, delay_s=2.0))
    evaluate: TaskRetry = Field(default_factory=lambda: TaskRetry(retries=3, delay_s=2.0))
    analyze: TaskRetry = Field(default_factory=lambda: TaskRetry(retries=1, delay_s=1.0))
    persist: TaskRetry = Field(default_factory=lambda: TaskRetry(retries=3, delay_s=0.5))


class StorageConfig(Section):
    dir: str | None = None  # None: runs/<experiment name> under the working directory


class PromptsConfig(Section):
    dir: str = "prompts"  # relative to the experiment folder; missing templates fall back to ours
    max_code_chars: int = Field(12_000, gt=0)  # per program shown; longer code is cut with a note
    max_metrics_chars: int = Field(2_000, gt=0)  # metrics of one program as shown, cut with a marker
    max_feedback_chars: int = Field(4_000, gt=0)  # the parent's evaluator feedback as shown, in all
    system_message: str | None = None  # replaces the system prompt (OpenEvolve's prompt.system_message)


class AlertsConfig(Section):
    """Where a search that fails or crashes is reported (a JSON POST; None: nowhere)."""

    webhook_url: str | None = Field(None, pattern=r"^https?://")
    timeout_s: float = Field(10.0, gt=0)


class Config(Section):
    """Every setting of a search, with its default."""

    initial_program: str = "initial_program.py"
    api: ApiConfig = Field(default_factory=ApiConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    cognition: CognitionConfig = Field(default_factory=CognitionConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    stop: StopConfig = Field(default_factory=StopConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)


def deep_merge(base: dict, update: dict) -> dict:
    """Returns base updated by update, merging nested mappings key by key."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: Path) -> dict:
    """Returns a YAML file's mapping ({} for an empty file); ConfigError names the file."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys, got {type(data).__name__}")
    return data


def _validate(data: dict, source: str, origin: dict[str, str] | None = None) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(part) for part in err["loc"])
            theirs = (origin or {}).get(key)
            came_from = f" (from its key {theirs})" if theirs and theirs != key else ""
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key '{key}'")
            else:
                problems.append(f"'{key}'{came_from}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


def _is_ours(layer: dict) -> bool:
    try:
        Config.model_validate(layer)
    except ValidationError:
        return False
    return True


def set_dotted(data: dict, dotted: str, value: Any) -> dict:
    """Returns a copy of data with a dotted key (e.g. 'api.model') set to value."""
    head, _, rest = dotted.partition(".")
    out = dict(data)
    out[head] = set_dotted(dict(out.get(head) or {}), rest, value) if rest else value
    return out


@dataclass(frozen=True)
class ForeignFile:
    """A config file written for another framework, and what it was translated into."""

    path: Path
    translation: Any  # foreign_config.Translation


def load_config_layers(
    files: Sequence[Path], overrides: dict[str, Any] | None = None
) -> tuple[Config, list[ForeignFile]]:
    """Returns the config from YAML files merged in order, then flags; and the files translated on the way.

    A file that is not valid in our format but is recognised as an ASI-Evolve, OpenEvolve or
    ShinkaEvolve config is translated first (evolveflow/foreign_config.py); any other invalid
    file is an error naming the key and the file.
    """
    from evolveflow.foreign_config import ForeignConfigError, translate  # it reads this module's model

    merged: dict = {}
    foreign: list[ForeignFile] = []
    for path in files:
        layer, source, origin = read_yaml(path), str(path), None
        if not _is_ours(layer):
            try:
                translation = translate(layer)
            except ForeignConfigError as exc:
                raise ConfigError(f"{path}: {exc}") from None
            if translation is not None:
                foreign.append(ForeignFile(path, translation))
                layer, origin = translation.config, translation.origin
                source = f"{path} (translated from {translation.format})"
        _validate(deep_merge(merged, layer), source, origin)  # blame the file that introduced an error
        merged = deep_merge(merged, layer)
    for dotted, value in (overrides or {}).items():
        merged = set_dotted(merged, dotted, value)
    return _validate(merged, "command-line flags" if overrides else "defaults"), foreign


def load_config(files: Sequence[Path], overrides: dict[str, Any] | None = None) -> Config:
    """Returns the config from YAML files merged in order, then dotted-key overrides (CLI flags)."""
    return load_config_layers(files, overrides)[0]
