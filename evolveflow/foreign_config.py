"""Recognise ASI-Evolve, OpenEvolve and ShinkaEvolve config files and translate them into ours.

Pure: a parsed YAML mapping in, our nested mapping plus what was used and ignored out.

Detection is by markers, keys only that framework writes (``experiment_name``,
``pipeline.engineer_timeout`` for ASI-Evolve; ``llm``, ``evaluator``, ``max_iterations`` for
OpenEvolve; ``evo_config``, ``db_config`` for ShinkaEvolve). Our own keys are never markers, so
a file in our format is never taken for a foreign one (config.py also only asks when the file is
not valid in our format).

Translation: keys whose meaning we have are renamed (table per format below); keys that already
have our name and meaning (``pipeline.sample_n``, ``api.seed``...) are kept; everything else is
listed as ignored. Secrets are never copied: ``api_key: ${VAR}`` becomes ``api.api_key_env: VAR``
and a literal key is dropped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from pydantic import BaseModel

from evolveflow.config import Config

ASI = "ASI-Evolve"
OPENEVOLVE = "OpenEvolve"
SHINKA = "ShinkaEvolve"
CONTRACTS = {ASI: "asi", OPENEVOLVE: "openevolve", SHINKA: "shinka"}

_MARKERS: dict[str, frozenset[str]] = {
    ASI: frozenset({
        "experiment_name", "logging", "api.base_url", "api.provider", "api.api_key", "api.retry_times",
        "api.retry_delay", "api.top_p", "api.extra_body", "pipeline.engineer_timeout", "pipeline.agents",
        "pipeline.researcher", "pipeline.max_retries", "pipeline.judge", "cognition.storage_dir",
        "cognition.embedding", "cognition.faiss", "cognition.web_search", "cognition.retrieval.score_threshold",
        "database.storage_dir", "database.max_size", "database.embedding", "database.faiss",
        "database.sampling.ucb1_c",
    }),
    OPENEVOLVE: frozenset({
        "max_iterations", "checkpoint_interval", "log_level", "log_dir", "random_seed", "language",
        "file_suffix", "llm", "prompt", "evaluator", "evolution_trace", "diff_based_evolution",
        "allow_full_rewrites", "max_code_length", "enforce_evolve_blocks", "diff_pattern",
        "early_stopping_patience", "convergence_threshold", "early_stopping_metric", "max_tasks_per_child",
        "prompt_meta_evolution", "database.population_size", "database.archive_size", "database.num_islands",
        "database.elite_selection_ratio", "database.exploration_ratio", "database.exploitation_ratio",
        "database.feature_dimensions", "database.feature_bins", "database.migration_interval",
        "database.migration_rate", "database.in_memory", "database.db_path", "database.log_prompts",
        "database.diversity_metric", "database.random_seed",
    }),
    SHINKA: frozenset({
        "evo_config", "db_config", "job_config", "max_evaluation_jobs", "max_proposal_jobs", "max_db_workers",
    }),
}

# Their key -> our key, for keys whose meaning we have under another name.
_RENAMED: dict[str, dict[str, str]] = {
    ASI: {
        "api.timeout": "api.timeout_s",
        "api.retry_times": "api.num_retries",
        "api.retry_delay": "api.retry_backoff_s",
        "pipeline.engineer_timeout": "evaluation.timeout_s",
        "database.sampling.ucb1_c": "database.sampling.ucb_c",
    },
    OPENEVOLVE: {
        "random_seed": "pipeline.seed",
        "llm.temperature": "api.temperature",
        "llm.max_tokens": "api.max_tokens",
        "llm.timeout": "api.timeout_s",
        "llm.retries": "api.num_retries",
        "llm.retry_delay": "api.retry_backoff_s",
        "llm.random_seed": "api.seed",
        "evaluator.timeout": "evaluation.timeout_s",
        "evaluator.cascade_evaluation": "evaluation.cascade",
        "evaluator.cascade_thresholds": "evaluation.cascade_thresholds",
        "database.feature_dimensions": "evaluation.mean_excludes",
        "evaluator.parallel_evaluations": "pipeline.parallel.num_workers",
        "database.migration_interval": "database.sampling.island.migration_interval",
    },
    SHINKA: {
        "evo_config.init_program_path": "initial_program",
        "max_evaluation_jobs": "pipeline.parallel.num_workers",
        "db_config.migration_interval": "database.sampling.island.migration_interval",
    },
}

# Values that only fill a template's slot; never a model or an endpoint anyone can call.
_PLACEHOLDER = re.compile(r"^(|default|model|empty|none|null|your[\s_-].*|<.*>|x{3,})$", re.IGNORECASE)
_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_TEMPLATE_NAME = re.compile(r"^[A-Za-z_]\w*$")
_MISSING = object()


class ForeignConfigError(ValueError):
    """A recognised foreign config holds a value that cannot be translated; the message names the key."""


@dataclass(frozen=True)
class Translation:
    """A foreign config file turned into ours."""

    format: str  # ASI-Evolve, OpenEvolve or ShinkaEvolve
    config: dict  # our nested keys only
    used: tuple[str, ...]  # their keys that were translated or kept
    ignored: tuple[str, ...]  # their keys with no counterpart, whole ignored sections as 'name.*'
    ignored_count: int  # ignored leaf keys
    remarks: tuple[str, ...]  # why a key that looks useful was not used (placeholders, literal keys)
    origin: dict[str, str]  # our dotted key -> their dotted key

    @property
    def contract(self) -> str:
        return CONTRACTS[self.format]


def _native_paths(model: type[BaseModel] = Config, prefix: str = "") -> frozenset[str]:
    paths: set[str] = set()
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths |= _native_paths(annotation, f"{prefix}{name}.")
        else:
            paths.add(prefix + name)
    return frozenset(paths)


NATIVE_TOP_LEVEL = frozenset(Config.model_fields)
NATIVE_PATHS = _native_paths()


def _walk(data: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yields every dotted path (sections and leaves) with its value."""
    for key, value in data.items():
        path = f"{prefix}{key}"
        yield path, value
        if isinstance(value, dict):
            yield from _walk(value, path + ".")


def _leaves(data: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for path, value in _walk(data, prefix):
        if not isinstance(value, dict) or not value:
            yield path, value


def detect(data: dict) -> str | None:
    """Returns the framework a config mapping was written for, or None (ours, or unknown)."""
    paths = {path for path, _ in _walk(data)}
    counts = {fmt: len(markers & paths) for fmt, markers in _MARKERS.items()}
    best = max(counts, key=lambda fmt: counts[fmt])
    return best if counts[best] else None


def _get(data: dict, dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _under(path: str, prefixes: set[str]) -> bool:
    return any(path == p or path.startswith(p + ".") for p in prefixes)


class _Builder:
    """Collects our keys and remembers which of theirs were used, examined or left."""

    def __init__(self, data: dict):
        self.data = data
        self.config: dict = {}
        self.used: list[str] = []  # shown in the notice
        self.covered: set[str] = set()  # their paths whose keys count as used (not ignored)
        self.examined: set[str] = set()  # used, or deliberately not used: no generic rule applies
        self.remarks: list[str] = []
        self.origin: dict[str, str] = {}

    def get(self, theirs: str) -> Any:
        value = _get(self.data, theirs)
        return None if value is _MISSING else value

    def put(self, ours: str, value: Any, theirs: str, covers: str | None = None) -> None:
        node = self.config
        *parents, last = ours.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
        self.origin[ours] = theirs
        self.examined.add(theirs)
        self.covered |= {theirs, covers} - {None}
        if theirs not in self.used:
            self.used.append(theirs)

    def move(self, theirs: str, ours: str, convert: Callable[[Any, str], Any] | None = None) -> None:
        value = self.get(theirs)
        if value is not None:
            self.put(ours, convert(value, theirs) if convert else value, theirs)

    def skip(self, theirs: str, remark: str | None = None) -> None:
        self.examined.add(theirs)
        if remark and remark not in self.remarks:
            self.remarks.append(remark)

    def keep_native(self) -> None:
        """Keeps their keys that already have our name and meaning (values validated later)."""
        for path, value in _leaves(self.data):
            if path in NATIVE_PATHS and value is not None and not _under(path, self.examined):
                self.put(path, value, path)

    def result(self, fmt: str) -> Translation:
        ignored = [p for p, v in _leaves(self.data) if v is not None and not _under(p, self.covered)]
        order = {path: index for index, (path, _) in enumerate(_walk(self.data))}
        used = sorted(self.used, key=lambda p: order.get(p.split("[")[0], len(order)))  # file order
        return Translation(
            format=fmt, config=self.config, used=tuple(used),
            ignored=tuple(_collapse(self.data, self.covered)), ignored_count=len(ignored),
            remarks=tuple(self.remarks), origin=dict(self.origin),
        )


def _collapse(data: dict, used: set[str], prefix: str = "") -> Iterator[str]:
    """Names ignored keys compactly: a section none of whose keys were used is 'section.*'."""
    for key, value in data.items():
        path = f"{prefix}{key}"
        if value is None or _under(path, used):
            continue
        if isinstance(value, dict) and value:
            inner = [p for p, v in _leaves(value, path + ".") if v is not None]
            if not any(_under(p, used) for p in inner) and len(inner) > 1:
                yield f"{path}.*"
            elif inner:
                yield from _collapse(value, used, path + ".")
        else:
            yield path


def _model_name(value: Any) -> str | None:
    """Returns a model name worth calling, None for a template placeholder."""
    if not isinstance(value, str) or _PLACEHOLDER.match(value.strip()):
        return None
    return value.strip()


def _connection(b: _Builder, model: tuple[str, Any], base: tuple[str, Any], key: tuple[str, Any],
                covers: str | None = None) -> bool:
    """Translates an OpenAI-compatible endpoint (each argument: their key, its value or None).

    Both peers call every model through the OpenAI client, so the name becomes openai/<name>:
    litellm's openai/ provider sends the rest verbatim to the endpoint, as they do. Returns
    whether a model was taken.
    """
    (model_key, model_value), (base_key, base_value), (key_key, key_value) = model, base, key
    name = _model_name(model_value)
    if model_value is not None and name is None:
        b.skip(model_key, f"{model_key} {model_value!r} is a placeholder, not a model: the offline model is used "
                          "(set api.model to a litellm model string, e.g. openai/<name> with api.api_base)")
        b.skip(base_key)
        b.skip(key_key)
        return False
    if name is not None:
        b.put("api.model", f"openai/{name}", model_key, covers)
    if isinstance(base_value, str) and re.match(r"^https?://\S+$", base_value.strip()):
        b.put("api.api_base", base_value.strip(), base_key, covers)
    elif base_value is not None:
        b.skip(base_key, f"{base_key} {base_value!r} is not a URL: not used")
    found = _ENV_REF.match(key_value.strip()) if isinstance(key_value, str) else None
    if found:
        b.put("api.api_key_env", found.group(1), key_key, covers)
    elif key_value is not None:
        b.skip(key_key, f"{key_key} is a literal value: not copied into evolveflow's config "
                        "(put the key in an environment variable and set api.api_key_env)")
    return name is not None


def _seconds_hms(value: Any, key: str) -> float:
    """'hh:mm:ss' (ShinkaEvolve's job time) in seconds; a bare number is seconds already."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    parts = str(value).strip().split(":")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise ForeignConfigError(f"{key} is {value!r}, not a time of the form hh:mm:ss")
    hours, minutes, seconds = (int(p) for p in parts)
    return float(hours * 3600 + minutes * 60 + seconds)


def _system_message(b: _Builder, theirs: str, allow_template_names: bool) -> None:
    value = b.get(theirs)
    if value is None:
        return
    if not isinstance(value, str) or not value.strip():
        b.skip(theirs)
    elif allow_template_names and _TEMPLATE_NAME.match(value.strip()):
        b.skip(theirs, f"{theirs} names an OpenEvolve template ({value.strip()!r}), not a message: not used")
    else:
        b.put("prompts.system_message", value, theirs)


def _islands(b: _Builder, theirs: str) -> None:
    """Islands only mean something to our island sampler, so asking for them selects it."""
    if b.get(theirs) is not None:
        b.move(theirs, "database.sampling.island.num_islands")
        b.put("database.sampling.algorithm", "island", theirs)


def _asi(b: _Builder) -> None:
    _connection(b, ("api.model", b.get("api.model")), ("api.base_url", b.get("api.base_url")),
                ("api.api_key", b.get("api.api_key")))
    algorithm = b.get("database.sampling.algorithm")
    if isinstance(algorithm, str) and algorithm.startswith("island"):  # ASI accepts island* names
        b.put("database.sampling.algorithm", "island", "database.sampling.algorithm")


_SEVERAL_MODELS = ("OpenEvolve samples among several models; evolveflow uses the first "
                   "(name others in api.fallbacks to try them when it fails)")


def _openevolve(b: _Builder) -> None:
    models = b.get("llm.models")
    first = models[0] if isinstance(models, list) and models and isinstance(models[0], dict) else {}

    def pick(field: str) -> tuple[str, Any]:  # a model's own setting wins over the llm section's
        if first.get(field) is not None:
            return f"llm.models[0].{field}", first[field]
        return f"llm.{field}", b.get(f"llm.{field}")

    if first.get("name") is not None:
        b.skip("llm.primary_model")
        several = len(models) > 1 or b.get("llm.primary_model") is not None
        taken = _connection(b, ("llm.models[0].name", first["name"]), pick("api_base"), pick("api_key"),
                            covers="llm.models")
    else:
        several = b.get("llm.secondary_model") is not None and b.get("llm.secondary_model_weight") != 0
        taken = _connection(b, ("llm.primary_model", b.get("llm.primary_model")), pick("api_base"),
                            pick("api_key"))
    if taken and several:
        b.remarks.append(_SEVERAL_MODELS)
    _system_message(b, "prompt.system_message", allow_template_names=True)
    _islands(b, "database.num_islands")


def _shinka(b: _Builder) -> None:
    _system_message(b, "evo_config.task_sys_msg", allow_template_names=False)
    b.move("job_config.time", "evaluation.timeout_s", _seconds_hms)
    _islands(b, "db_config.num_islands")


_SPECIAL: dict[str, Callable[[_Builder], None]] = {ASI: _asi, OPENEVOLVE: _openevolve, SHINKA: _shinka}


def translate(data: dict) -> Translation | None:
    """Returns the translation of a foreign config mapping, None when it is not a recognised one."""
    fmt = detect(data)
    if fmt is None:
        return None
    builder = _Builder(data)
    _SPECIAL[fmt](builder)
    for theirs, ours in _RENAMED[fmt].items():
        if theirs not in builder.examined:
            builder.move(theirs, ours)
    builder.keep_native()
    return builder.result(fmt)


def notice(translation: Translation, source: str, contract_applied: bool = True) -> str:
    """Returns the one line that tells the user what was made of a foreign config file."""
    article = "an" if translation.format[0] in "AEIOU" else "a"
    contract = f" (evaluator contract {translation.contract})" if contract_applied else ""
    parts = [f"{source} is {article} {translation.format} config{contract}: "
             f"using {', '.join(translation.used) or 'none of its keys'}"]
    if translation.ignored_count:
        count = translation.ignored_count
        parts.append(f"ignoring {count} key{'s' if count != 1 else ''} (not an error): {', '.join(translation.ignored)}")
    parts += translation.remarks
    return "; ".join(parts)
