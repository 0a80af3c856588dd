"""Reading what an evaluator left: the result pipe and result files, safely (no symlinks, size caps)."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from evolveflow.evaluation.adapters.base import MAX_RESULT_BYTES
from evolveflow.evaluation.contract import NO_RESULT, parse_result_text

MAX_RESULT_FILE_BYTES = 64_000_000


def too_large(what: str, size: int, limit: int) -> str:
    """Return the problem of a result larger than evaluation.max_result_bytes."""
    return (f"{what} is {size:,} bytes, more than evaluation.max_result_bytes ({limit:,} bytes); "
            "raise that setting or make the evaluator's result smaller")


def read_result_file(path: Path, label: str, missing_reason: str,
                     limit: int = MAX_RESULT_BYTES) -> tuple[Any, str | None]:
    """Return (parsed JSON or NO_RESULT, problem) for a result file, refusing symlinks and files over limit."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return NO_RESULT, missing_reason
    except OSError as exc:
        return NO_RESULT, f"{label} could not be read: {exc}"
    if stat.S_ISLNK(info.st_mode):  # evolveflow reads it unsandboxed: never follow the candidate's links
        return NO_RESULT, f"{label} is a symbolic link, which evolveflow does not follow"
    if not stat.S_ISREG(info.st_mode):
        return NO_RESULT, f"{label} is not a regular file"
    if info.st_size > limit:
        return NO_RESULT, too_large(label, info.st_size, limit)
    text = read_text_nofollow(path, limit)
    if text is None:
        return NO_RESULT, f"{label} could not be read"
    return parse_result_text(text, label)


def read_text_nofollow(path: Path, limit: int = MAX_RESULT_FILE_BYTES) -> str | None:
    """Return up to limit bytes of a regular file as text, without following a symlink; None if unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(limit).decode("utf-8", "replace")
    finally:
        os.close(fd)


def read_channel(channel: bytes | None, missing_reason: str, limit: int = MAX_RESULT_BYTES) -> tuple[Any, str | None]:
    """Return (parsed JSON or NO_RESULT, problem) for what the harness sent over the result pipe."""
    if not channel:
        return NO_RESULT, missing_reason
    if len(channel) > limit:
        return NO_RESULT, too_large("the evaluator's result", len(channel), limit)
    try:
        return json.loads(channel.decode("utf-8", "replace")), None
    except ValueError as exc:
        return NO_RESULT, f"the evaluator's result could not be decoded ({exc})"


def text_of(value: Any) -> str:
    """Return a feedback value as text (lists joined by lines, other values as JSON)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "\n".join(value)
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)
