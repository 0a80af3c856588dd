"""Read an LLM reply: a motivation plus SEARCH/REPLACE edits or a whole program."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from evolveflow.code_hash import normalise_newlines
START_MARKER = "EVOLVE-BLOCK-START"
END_MARKER = "EVOLVE-BLOCK-END"

REPLY_FORMAT = """\
Answer in exactly this format.

MOTIVATION: <one or more lines: the idea behind the change and why it should score better>

Then EITHER one or more SEARCH/REPLACE blocks:

<<<<<<< SEARCH
<lines copied exactly from the current program, with their indentation>
=======
<the lines that replace them>
>>>>>>> REPLACE

OR the entire new program in one ```python fenced block (used only if there is no SEARCH/REPLACE block).

Rules:
- Each SEARCH must match exactly one place in the program; add neighbouring lines to make it unique.
- Blocks are applied in order: a later SEARCH must match the program as changed by the earlier blocks.
- SEARCH may not be empty: to insert code, put the line above the insertion point in SEARCH and
  repeat it in REPLACE followed by the new lines. Leave REPLACE empty to delete the SEARCH lines.
- Only edit lines between the EVOLVE-BLOCK-START and EVOLVE-BLOCK-END marker lines; never change
  the marker lines or anything outside them (a whole program must reproduce that code unchanged).
"""


class EditError(Exception):
    """The reply did not yield a valid program; the message is the recorded rejection reason."""


class NoEditFound(EditError):
    """The reply holds neither a SEARCH/REPLACE block nor a fenced program."""


class MalformedEdit(EditError):
    """A SEARCH/REPLACE block or program fence is structurally broken."""


class SearchNotFound(EditError):
    """An edit's SEARCH text matches nowhere in the program."""


class AmbiguousSearch(EditError):
    """An edit's SEARCH text matches more than one place in the program."""


class OutsideEvolveBlock(EditError):
    """The change touches code outside the EVOLVE-BLOCK regions, or their marker lines."""


class NoChange(EditError):
    """The change leaves the program as it was."""


class MalformedProgram(EditError):
    """The program's EVOLVE-BLOCK markers are unbalanced."""


@dataclass(frozen=True)
class SearchReplace:
    """One edit: the lines `search` (copied from the program) become the lines `replace`."""

    search: str
    replace: str


@dataclass(frozen=True)
class Proposal:
    """A parsed reply: the motivation and either edits (applied in order) or a whole program."""

    motivation: str
    edits: tuple[SearchReplace, ...] = ()
    program: str | None = None


# Real LLMs write anywhere from 5 to 9 marker characters; exactly 7 is the canonical form.
_SEARCH_LINE = re.compile(r"^\s*<{5,9}\s*SEARCH\s*$", re.IGNORECASE)
_DIVIDER_LINE = re.compile(r"^\s*={5,9}\s*$")
_REPLACE_LINE = re.compile(r"^\s*>{5,9}\s*REPLACE\s*$", re.IGNORECASE)
_FENCE_OPEN = re.compile(r"^\s{0,3}(?P<fence>`{3,}|~{3,})\s*(?P<lang>[^\s`]*)")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s")
# "MOTIVATION: x", "Motivation:", "## Motivation", "**Motivation:** x", "**Motivation**: x".
_MOTIVATION = re.compile(
    r"^\s*(?:#{1,6}\s*)?[*_]{0,2}\s*motivation\s*[*_]{0,2}\s*(?::|$)[*_]{0,2}\s*(?P<rest>.*)$", re.IGNORECASE)
_PYTHON_FENCE_TAGS = {"", "python", "py", "python3"}


def _is_fence_close(line: str, fence: str) -> bool:
    """True if line closes a fence opened with `fence` (same character, at least as long)."""
    stripped = line.strip()
    return len(stripped) >= len(fence) and set(stripped) == {fence[0]}


def _text_of(lines: list[str]) -> str:
    """Join lines into text where every line, including the last, ends with a newline."""
    return "".join(line + "\n" for line in lines)


def _lines_of(text: str) -> list[str]:
    """Split edit text into lines; a final newline does not start an extra empty line."""
    text = normalise_newlines(text)
    if not text:
        return []
    return text.removesuffix("\n").split("\n")


def _unwrap_fence(lines: list[str]) -> list[str]:
    """Drop a fence line that an LLM put as the first or last line of a SEARCH or REPLACE section."""
    # A line starting with ``` is never code at the start or end of a section, so this is safe.
    if lines and _FENCE_OPEN.match(lines[0]):
        lines = lines[1:]
    if lines and _FENCE_OPEN.match(lines[-1]) and _is_fence_close(lines[-1], "```"):
        lines = lines[:-1]
    return lines


def _parse_edit_blocks(lines: list[str]) -> list[SearchReplace]:
    """Read every SEARCH/REPLACE block in the reply lines, in order.

    Limitation: the first divider line (5-9 '=' alone on a line) ends the SEARCH section, so
    SEARCH text cannot contain such a line; inside REPLACE it is kept as content. Marker lines
    ('<<<<<<< SEARCH', '>>>>>>> REPLACE' alone on a line) can never be content.
    """
    edits: list[SearchReplace] = []
    section: list[str] | None = None  # the SEARCH lines being read, then the REPLACE lines
    search: list[str] | None = None
    opened_at = 0
    for number, line in enumerate(lines, start=1):
        index = len(edits) + 1
        if section is None:
            if _SEARCH_LINE.match(line):
                section, search, opened_at = [], None, number
            elif _REPLACE_LINE.match(line):
                raise MalformedEdit(f"reply line {number} has '>>>>>>> REPLACE' without a '<<<<<<< SEARCH' "
                                    "line opening its block")
            # A stray divider outside a block is ignored: it is also a markdown heading underline.
        elif _SEARCH_LINE.match(line):
            missing = "'=======' divider" if search is None else "'>>>>>>> REPLACE' line"
            raise MalformedEdit(f"edit {index} (opened at reply line {opened_at}) has no {missing} before "
                                f"the next '<<<<<<< SEARCH' at reply line {number}")
        elif search is None and _DIVIDER_LINE.match(line):
            search, section = section, []
        elif _REPLACE_LINE.match(line):
            if search is None:
                raise MalformedEdit(f"edit {index} (opened at reply line {opened_at}) reaches '>>>>>>> REPLACE' "
                                    "without a '=======' line separating SEARCH from REPLACE")
            edits.append(_make_edit(index, search, section))
            section = None
        else:
            section.append(line)
    if section is not None:
        raise MalformedEdit(f"edit {len(edits) + 1} (opened at reply line {opened_at}) is never closed by a "
                            "'>>>>>>> REPLACE' line; the reply may have been cut off")
    return edits


def _empty_search_message(index: int) -> str:
    """The rejection reason for an edit whose SEARCH section holds no text."""
    return (f"edit {index} has an empty SEARCH section; to insert code, copy the line above the insertion "
            "point into SEARCH and repeat it in REPLACE followed by the new lines")


def _make_edit(index: int, search: list[str], replace: list[str]) -> SearchReplace:
    """Build one edit from its section lines, rejecting an empty SEARCH."""
    search, replace = _unwrap_fence(search), _unwrap_fence(replace)
    if not any(line.strip() for line in search):
        raise MalformedEdit(_empty_search_message(index))
    return SearchReplace(_text_of(search), _text_of(replace))


def _prose_mask(lines: list[str]) -> list[bool]:
    """For each reply line, True if it is prose: outside every code fence and edit block."""
    mask, fence, in_block = [], None, False
    for line in lines:
        if in_block:
            in_block = not _REPLACE_LINE.match(line)
        elif _SEARCH_LINE.match(line):
            in_block = True
        elif fence is not None:
            if _is_fence_close(line, fence):
                fence = None
        elif opener := _FENCE_OPEN.match(line):
            fence = opener["fence"]
        else:
            mask.append(True)
            continue
        mask.append(False)
    return mask


def _extract_motivation(lines: list[str]) -> str:
    """The text under a motivation heading, or else the prose before the first block or fence."""
    prose = _prose_mask(lines)
    for index, line in enumerate(lines):
        heading = _MOTIVATION.match(line) if prose[index] else None
        if heading:
            body = [heading["rest"]]
            for following, is_prose in zip(lines[index + 1:], prose[index + 1:]):
                if not is_prose or _HEADING.match(following):
                    break
                body.append(following)
            return "\n".join(body).strip()
    leading = []
    for line, is_prose in zip(lines, prose):
        if not is_prose:
            break
        leading.append(line)
    return "\n".join(leading).strip()


def _fenced_program(lines: list[str]) -> str | None:
    """The longest python (or untagged) fenced block in the reply, or None if there is none."""
    programs: list[str] = []
    fence, lang, body, opened_at = None, "", [], 0
    for number, line in enumerate(lines, start=1):
        if fence is None:
            if opener := _FENCE_OPEN.match(line):
                fence, lang, body, opened_at = opener["fence"], opener["lang"].lower(), [], number
        elif _is_fence_close(line, fence):
            if lang in _PYTHON_FENCE_TAGS and any(text.strip() for text in body):
                programs.append(_text_of(body))
            fence = None
        else:
            body.append(line)
    if fence is not None and lang in _PYTHON_FENCE_TAGS and any(text.strip() for text in body):
        raise MalformedEdit(f"the fenced program opened at reply line {opened_at} is never closed with "
                            f"{fence}; the reply was probably cut off, so send the complete program")
    return max(programs, key=len) if programs else None


def parse_reply(text: str) -> Proposal:
    """Parse an LLM reply into a Proposal; edit blocks win over a whole-program fence."""
    lines = normalise_newlines(text).split("\n")
    edits = _parse_edit_blocks(lines)
    motivation = _extract_motivation(lines)
    if edits:
        return Proposal(motivation, tuple(edits), None)
    program = _fenced_program(lines)
    if program is None:
        raise NoEditFound("the reply contains no SEARCH/REPLACE block and no fenced program; answer with "
                          "'<<<<<<< SEARCH' / '=======' / '>>>>>>> REPLACE' blocks or the whole program "
                          "in a ```python fence")
    return Proposal(motivation, (), program)


def format_edits(edits: Sequence[SearchReplace]) -> str:
    """Render edits as canonical SEARCH/REPLACE blocks (what parse_reply reads back), blank-line separated."""
    blocks = []
    for edit in edits:
        search, replace = _text_of(_lines_of(edit.search)), _text_of(_lines_of(edit.replace))
        blocks.append(f"<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n")
    return "\n".join(blocks)
