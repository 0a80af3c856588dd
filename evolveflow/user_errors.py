"""Failures that are the user's to fix (a config, an evaluator, a lock): one clear line, never a traceback."""
from __future__ import annotations

# By name, so that this module imports nothing heavy; each class carries a message a user can act on.
USER_ERROR_NAMES = frozenset({
    "CliError", "ConfigError", "ExperimentError", "SearchAlreadyRunning", "InitialProgramFailed",
    "EvaluatorConfigError", "TreeLocked", "KnowledgeFileError", "PromptTemplateError", "ScaffoldError",
    "MissingApiKey",
})


def is_user_error(exc: BaseException) -> bool:
    """Returns True when exc is one of the failures a user fixes from its message alone."""
    return type(exc).__name__ in USER_ERROR_NAMES


def without_traceback(exc: BaseException) -> BaseException:
    """Returns a fresh exception of the same type and message, holding no frames (nor their objects)."""
    try:
        return type(exc)(*exc.args)
    except Exception:  # noqa: BLE001 - an unusual constructor: keep the original, minus its traceback
        return exc.with_traceback(None)
