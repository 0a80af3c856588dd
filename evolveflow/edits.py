"""Turn an LLM reply (motivation plus SEARCH/REPLACE edits or a whole program) into a new program."""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Iterator, Sequence

from evolveflow.code_hash import code_hash, normalise_newlines

__all__ = [
    "REPLY_FORMAT", "EditError", "NoEditFound", "MalformedEdit", "SearchNotFound", "AmbiguousSearch",
    "OutsideEvolveBlock", "NoChange", "MalformedProgram", "SearchReplace", "Proposal", "parse_reply",
    "apply_edits", "apply_proposal", "format_edits", "unified_diff", "code_hash", "evolve_blocks",
]

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


def evolve_blocks(code: str) -> list[tuple[int, int]]:
    """Return 0-based [start, stop) line ranges strictly between EVOLVE-BLOCK-START/END marker lines."""
    blocks: list[tuple[int, int]] = []
    opened: int | None = None
    for index, line in enumerate(normalise_newlines(code).split("\n")):
        if START_MARKER in line and END_MARKER in line:
            raise MalformedProgram(f"line {index + 1} holds both {START_MARKER} and {END_MARKER}; "
                                   "each marker needs a line of its own")
        if START_MARKER in line:
            if opened is not None:
                raise MalformedProgram(f"{START_MARKER} on line {index + 1} opens a block while the one opened "
                                       f"on line {opened} is still open; close it with {END_MARKER} first")
            opened = index + 1
        elif END_MARKER in line:
            if opened is None:
                raise MalformedProgram(f"{END_MARKER} on line {index + 1} has no {START_MARKER} before it")
            blocks.append((opened, index))
            opened = None
    if opened is not None:
        raise MalformedProgram(f"{START_MARKER} on line {opened} is never closed by an {END_MARKER} line")
    return blocks


def _describe_lines(indices: Sequence[int]) -> str:
    """'line 3' or 'lines 3-5, 9' for 0-based indices, written 1-based."""
    runs: list[list[int]] = []
    for index in sorted(indices):
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    text = ", ".join(f"{low + 1}" if low == high else f"{low + 1}-{high + 1}" for low, high in runs)
    return f"line {text}" if len(indices) == 1 else f"lines {text}"


def _first_line(search: list[str]) -> str:
    """The first non-blank SEARCH line, stripped, to name an edit in messages."""
    return next(line.strip() for line in search if line.strip())


@dataclass(frozen=True)
class _Match:
    """Where an edit's SEARCH matched (0-based [start, stop) lines) and the lines to put there."""

    start: int
    stop: int
    replacement: list[str]


def _indent_shift(search: list[str], window: list[str]) -> tuple[str, str] | None:
    """The uniform ('add' or 'remove', prefix) that turns search indentation into window's, if any."""
    shift = None
    for wanted, actual in zip(search, window):
        wanted, actual = wanted.rstrip(), actual.rstrip()
        if not wanted or not actual:
            if wanted or actual:
                return None
            continue
        if wanted.lstrip() != actual.lstrip():
            return None
        wanted_indent = wanted[:len(wanted) - len(wanted.lstrip())]
        actual_indent = actual[:len(actual) - len(actual.lstrip())]
        if actual_indent.endswith(wanted_indent):
            this = ("add", actual_indent[:len(actual_indent) - len(wanted_indent)])
        elif wanted_indent.endswith(actual_indent):
            this = ("remove", wanted_indent[:len(wanted_indent) - len(actual_indent)])
        else:
            return None
        if shift not in (None, this):
            return None
        shift = this
    return shift


def _reindent(lines: list[str], shift: tuple[str, str]) -> list[str]:
    """Apply an indentation shift found by _indent_shift to the replacement lines."""
    kind, prefix = shift
    if kind == "add":
        return [prefix + line if line.strip() else line for line in lines]
    return [line[len(prefix):] if line.startswith(prefix) else line.lstrip() for line in lines]


def _match_tiers(lines: list[str], search: list[str], replace: list[str]) -> Iterator[list[_Match]]:
    """Yield all matches per tier: exact lines, then trailing whitespace ignored, then indentation offset."""
    size = len(search)
    starts = range(len(lines) - size + 1)
    yield [_Match(i, i + size, replace) for i in starts if lines[i:i + size] == search]
    stripped, wanted = [line.rstrip() for line in lines], [line.rstrip() for line in search]
    yield [_Match(i, i + size, replace) for i in starts if stripped[i:i + size] == wanted]
    tier = []
    for i in starts:
        shift = _indent_shift(search, lines[i:i + size])
        if shift is not None:
            tier.append(_Match(i, i + size, _reindent(replace, shift)))
    yield tier


def _inside(match: _Match, blocks: list[tuple[int, int]]) -> bool:
    """True if the matched lines lie within one block's interior."""
    return any(start <= match.start and match.stop <= stop for start, stop in blocks)


def _outside_message(index: int, match: _Match, blocks: list[tuple[int, int]], lines: list[str]) -> str:
    """Explain which matched lines of edit `index` lie outside the EVOLVE-BLOCK interiors."""
    span = range(match.start, match.stop)
    outside = [i for i in span if not any(start <= i < stop for start, stop in blocks)]
    markers = [i for i in outside if START_MARKER in lines[i] or END_MARKER in lines[i]]
    message = (f"edit {index} changes program {_describe_lines(span)}, but {_describe_lines(outside)} "
               f"{'lies' if len(outside) == 1 else 'lie'} outside the EVOLVE-BLOCK regions")
    if markers:
        verb = "is a marker line" if len(markers) == 1 else "are marker lines"
        message += f" ({_describe_lines(markers)} {verb})"
    editable = [_describe_lines(range(start, stop)) for start, stop in blocks if stop > start]
    return message + f"; only {' and '.join(editable) or 'no lines'} may be edited"


def _partial_match_hint(search: list[str], lines: list[str]) -> str | None:
    """Describe the longest run of SEARCH lines (from its first non-blank one) found in the program."""
    wanted = [line.strip() for line in search]
    wanted = wanted[next(i for i, text in enumerate(wanted) if text):]
    actual = [line.strip() for line in lines]
    best_start, best_length = 0, 0
    for start in range(len(actual)):
        length = 0
        while length < len(wanted) and start + length < len(actual) and wanted[length] == actual[start + length]:
            length += 1
        if length > best_length:
            best_start, best_length = start, length
    if best_length == 0:
        return None
    if best_length == len(wanted):
        return (f"its lines match program lines {best_start + 1}-{best_start + best_length} only if each line's "
                "indentation is ignored separately; copy the indentation exactly")
    differing = best_start + best_length
    found = f"program line {differing + 1} {actual[differing]!r}" if differing < len(actual) else "the end"
    return (f"its first {best_length} line(s) match from program line {best_start + 1}, but SEARCH line "
            f"{best_length + 1} {wanted[best_length]!r} meets {found}")


def _not_found_message(index: int, search: list[str], lines: list[str]) -> str:
    """Explain that edit `index` matched nowhere, pointing at the nearest program text."""
    first = _first_line(search)
    message = (f"edit {index}: the SEARCH text starting {first!r} was not found in the program "
               "(also tried ignoring trailing whitespace and indentation)")
    hint = _partial_match_hint(search, lines)
    if hint is None:
        stripped = [line.strip() for line in lines]
        close = difflib.get_close_matches(first, stripped, n=1, cutoff=0.5)
        hint = (f"the closest program line is line {stripped.index(close[0]) + 1}: {close[0]!r}" if close
                else "no program line resembles it")
    message += "; " + hint
    if index > 1:
        message += "; edits apply in order, so it must match the program as changed by the edits before it"
    return message


def _reject_added_markers(index: int, replacement: list[str]) -> None:
    """Raise OutsideEvolveBlock if edit `index` would write an EVOLVE-BLOCK marker line."""
    added = [line.strip() for line in replacement if START_MARKER in line or END_MARKER in line]
    if added:
        raise OutsideEvolveBlock(f"edit {index}'s REPLACE text contains the marker line {added[0]!r}; "
                                 "EVOLVE-BLOCK marker lines may not be added, moved or removed")


def _apply_one(code: str, edit: SearchReplace, index: int) -> str:
    """Apply edit number `index` (1-based) to code, or raise the EditError that explains why not."""
    lines = code.split("\n")
    blocks = evolve_blocks(code)
    search, replace = _lines_of(edit.search), _lines_of(edit.replace)
    if not any(line.strip() for line in search):
        raise MalformedEdit(_empty_search_message(index))
    outside_match = None
    for tier in _match_tiers(lines, search, replace):
        # Matches outside the blocks are never valid targets, so they do not make a search ambiguous.
        candidates = [match for match in tier if _inside(match, blocks)] if blocks else tier
        if len(candidates) > 1:
            where = " inside the EVOLVE-BLOCK regions" if blocks else " in the program"
            raise AmbiguousSearch(f"edit {index}: the SEARCH text starting {_first_line(search)!r} occurs "
                                  f"{len(candidates)} times{where} (at lines "
                                  f"{', '.join(str(match.start + 1) for match in candidates)}); include more "
                                  "surrounding lines so it matches exactly one place")
        if candidates:
            match = candidates[0]
            _reject_added_markers(index, match.replacement)
            return "\n".join(lines[:match.start] + match.replacement + lines[match.stop:])
        outside_match = outside_match or (tier[0] if tier else None)
    if outside_match is not None:
        raise OutsideEvolveBlock(_outside_message(index, outside_match, blocks, lines))
    raise SearchNotFound(_not_found_message(index, search, lines))


def apply_edits(code: str, edits: Sequence[SearchReplace]) -> str:
    """Apply the edits one after another (each sees the previous result) and return the new program."""
    original = current = normalise_newlines(code)
    for index, edit in enumerate(edits, start=1):
        current = _apply_one(current, edit, index)
    if code_hash(current) == code_hash(original):
        raise NoChange("the edits leave the program unchanged (ignoring blank lines and trailing whitespace); "
                       "each REPLACE must differ from its SEARCH")
    return current


def _outside_lines(code: str, blocks: list[tuple[int, int]]) -> list[tuple[int, str]]:
    """(0-based line, text) of the non-blank lines outside block interiors, normalised as in code_hash."""
    return [(i, line.rstrip()) for i, line in enumerate(code.split("\n"))
            if line.strip() and not any(start <= i < stop for start, stop in blocks)]


def _check_whole_program(parent: str, program: str) -> None:
    """Raise OutsideEvolveBlock unless the program keeps the parent's markers and outside code."""
    parent_blocks = evolve_blocks(parent)
    if not parent_blocks:
        return
    try:
        blocks = evolve_blocks(program)
    except MalformedProgram as error:
        raise OutsideEvolveBlock(f"the new program's EVOLVE-BLOCK markers are broken ({error}); keep every "
                                 "marker line of the current program") from error
    if len(blocks) != len(parent_blocks):
        raise OutsideEvolveBlock(f"the current program has {len(parent_blocks)} EVOLVE-BLOCK region(s) but the "
                                 f"new program has {len(blocks)}; keep every {START_MARKER}/{END_MARKER} line")
    before, after = _outside_lines(parent, parent_blocks), _outside_lines(program, blocks)
    matcher = difflib.SequenceMatcher(None, [text for _, text in before], [text for _, text in after],
                                      autojunk=False)
    for tag, low, high, new_low, new_high in matcher.get_opcodes():
        if tag == "equal":
            continue
        if tag == "insert":
            line, text = after[new_low]
            detail = f"new line {line + 1} {text.strip()!r} was added"
        elif tag == "delete":
            line, text = before[low]
            detail = f"current line {line + 1} {text.strip()!r} was removed"
        else:
            (line, text), (new_line, new_text) = before[low], after[new_low]
            detail = (f"current line {line + 1} {text.strip()!r} became {new_text.strip()!r} "
                      f"(new line {new_line + 1})")
        raise OutsideEvolveBlock(f"the new program changes code outside the EVOLVE-BLOCK regions: {detail}; "
                                 "everything outside the blocks must stay exactly as in the current program")


def apply_proposal(code: str, proposal: Proposal) -> str:
    """Return the program a proposal yields from code: its edits applied, or its checked whole program."""
    if proposal.edits:
        return apply_edits(code, proposal.edits)
    if proposal.program is None:
        raise NoEditFound("the reply contains no SEARCH/REPLACE block and no fenced program")
    program = normalise_newlines(proposal.program)
    _check_whole_program(normalise_newlines(code), program)
    if code_hash(program) == code_hash(code):
        raise NoChange("the proposed program is identical to the current one (ignoring blank lines and "
                       "trailing whitespace)")
    return program


def format_edits(edits: Sequence[SearchReplace]) -> str:
    """Render edits as canonical SEARCH/REPLACE blocks (what parse_reply reads back), blank-line separated."""
    blocks = []
    for edit in edits:
        search, replace = _text_of(_lines_of(edit.search)), _text_of(_lines_of(edit.replace))
        blocks.append(f"<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n")
    return "\n".join(blocks)


def unified_diff(old: str, new: str) -> str:
    """Return a unified diff from old to new code, labelled parent and child."""
    lines = difflib.unified_diff(normalise_newlines(old).splitlines(), normalise_newlines(new).splitlines(),
                                 fromfile="parent", tofile="child", lineterm="")
    return "".join(line + "\n" for line in lines)
