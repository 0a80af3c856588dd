"""Fingerprints of program text that ignore layout noise, for exact-duplicate detection."""
from __future__ import annotations

import hashlib


def normalise_newlines(text: str) -> str:
    """Return text with CRLF and lone CR line endings turned into LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def normalised_lines(code: str) -> list[str]:
    """Return the non-blank lines of code with trailing whitespace stripped (comments are kept)."""
    # Comments stay: an LLM that only rewrites a comment has still produced different text, and
    # telling comments apart from '#' inside strings would need a tokenizer for every language.
    return [line.rstrip() for line in normalise_newlines(code).split("\n") if line.strip()]


def normalise_code(code: str) -> str:
    """Return the text that code_hash fingerprints: normalised_lines joined by LF."""
    return "\n".join(normalised_lines(code))


def code_hash(code: str) -> str:
    """Return the sha256 hex digest of the normalised code."""
    return hashlib.sha256(normalise_code(code).encode("utf-8")).hexdigest()
