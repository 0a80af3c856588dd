"""Turn an LLM reply (motivation plus SEARCH/REPLACE edits or a whole program) into a new program.

Reading the reply lives in evolveflow/reply.py; this module applies it to the parent's code and
enforces the EVOLVE-BLOCK rule. Both are importable from here.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterator, Sequence

from evolveflow.code_hash import code_hash, normalise_newlines
from evolveflow.reply import (
    END_MARKER, REPLY_FORMAT, START_MARKER, AmbiguousSearch, EditError, MalformedEdit,
    MalformedProgram, NoChange, NoEditFound, OutsideEvolveBlock, Proposal, SearchNotFound,
    SearchReplace, format_edits, parse_reply,
)
from evolveflow.reply import _empty_search_message, _lines_of  # shared helpers


__all__ = [
    "REPLY_FORMAT", "EditError", "NoEditFound", "MalformedEdit", "SearchNotFound", "AmbiguousSearch",
    "OutsideEvolveBlock", "NoChange", "MalformedProgram", "SearchReplace", "Proposal", "parse_reply",
    "apply_edits", "apply_proposal", "format_edits", "unified_diff", "code_hash", "evolve_blocks",
    "START_MARKER", "END_MARKER",
]


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


def unified_diff(old: str, new: str) -> str:
    """Return a unified diff from old to new code, labelled parent and child."""
    lines = difflib.unified_diff(normalise_newlines(old).splitlines(), normalise_newlines(new).splitlines(),
                                 fromfile="parent", tofile="child", lineterm="")
    return "".join(line + "\n" for line in lines)
