"""Seeded numeric-literal mutation and crossover: the engine behind the offline mutator model."""
from __future__ import annotations

import io
import re
import random
import tokenize
from dataclasses import dataclass
from typing import Sequence

BLOCK_START = "EVOLVE-BLOCK-START"
BLOCK_END = "EVOLVE-BLOCK-END"

# Multiplicative step sizes for floats: fine tuning, a moderate move, a bold jump. Tuned on
# the circle-packing demo (bench/hill_climb_check.py): smaller steps climbed slower.
FLOAT_STEP_SCALES = (0.01, 0.05, 0.2)
# How many literals one mutation changes, and how often each count is drawn.
LITERAL_COUNTS = (1, 2, 3)
LITERAL_COUNT_WEIGHTS = (0.5, 0.3, 0.2)
# Chance of copying values from an inspiration instead of perturbing, when one differs.
CROSSOVER_PROBABILITY = 0.3
# Floats are written with this many significant digits, enough to express a 0.5% step.
SIGNIFICANT_DIGITS = 5
# A zero float has no scale to multiply; it moves by this absolute amount times the step.
ZERO_FLOAT_STEP = 0.1

_ASSIGNED_NAME = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(?::[^=]*)?=(?!=)")


class MutationError(ValueError):
    """The code cannot be mutated."""


class NothingToMutate(MutationError):
    """The code has no numeric literal that the operator is allowed to change."""


@dataclass(frozen=True)
class Mutation:
    """A proposed change: (search, replace) pairs to apply in order, and what they do."""

    edits: tuple[tuple[str, str], ...]
    description: str


@dataclass(frozen=True)
class _Literal:
    """A NUMBER token: 0-based line index, column span, and source text."""

    line: int
    start: int
    end: int
    text: str


def propose_mutation(code: str, rng: random.Random, inspirations: Sequence[str] = ()) -> Mutation:
    """Return a seeded edit that perturbs 1-3 numeric literals, or copies them from an inspiration.

    Only NUMBER tokens inside EVOLVE-BLOCK regions (or anywhere, if the code has no markers)
    are touched. Each edit's search text is whole lines that occur exactly once in the code,
    so ``code = code.replace(search, replace, 1)`` applied edit by edit yields the child.
    """
    lines = _split_lines(code)
    literals = _mutable_literals(_number_literals(code), lines)
    if not literals:
        raise NothingToMutate(
            "no numeric literal to mutate: the code has no int or float literals"
            + (" inside its EVOLVE-BLOCK-START/END region" if _has_markers(lines) else "")
            + "; add tunable constants (e.g. 'SCALE = 0.5') to let the offline mutator work"
        )
    crossovers = _crossover_candidates(lines, literals, inspirations)
    if crossovers and rng.random() < CROSSOVER_PROBABILITY:
        chosen = _choose_some(rng, crossovers)
        changes = {lit: (new_text, f"{_label(lit, lines, literals)}: {lit.text} -> {new_text} "
                                   f"(from inspiration {source})")
                   for lit, new_text, source in chosen}
    else:
        chosen_literals = _choose_some(rng, literals)
        changes = {}
        for lit in chosen_literals:
            new_text, how = _perturb(lit.text, rng)
            changes[lit] = (new_text, f"{_label(lit, lines, literals)}: {lit.text} -> {new_text} ({how})")
    edits = _build_edits(code, lines, {lit: text for lit, (text, _) in changes.items()})
    ordered = sorted(changes.items(), key=lambda item: (item[0].line, item[0].start))
    return Mutation(edits=edits, description="; ".join(note for _, (_, note) in ordered))


def _number_literals(code: str) -> list[_Literal]:
    """Return every NUMBER token in code; comments, strings and names are other tokens."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError) as error:
        raise NothingToMutate(f"cannot tokenize the code to find numeric literals: {error}") from error
    return [
        _Literal(tok.start[0] - 1, tok.start[1], tok.end[1], tok.string)
        for tok in tokens
        if tok.type == tokenize.NUMBER and tok.start[0] == tok.end[0]
    ]


def _split_lines(code: str) -> list[str]:
    """Lines with their endings, split exactly where tokenize splits them (not str.splitlines)."""
    return io.StringIO(code).readlines()


def _has_markers(lines: list[str]) -> bool:
    """True if any line carries an EVOLVE-BLOCK-START marker."""
    return any(BLOCK_START in line for line in lines)


def _mutable_lines(lines: list[str]) -> set[int] | None:
    """Line indices strictly between START and END markers; None means the whole file."""
    if not _has_markers(lines):
        return None
    inside, mutable = False, set()
    for index, line in enumerate(lines):
        if BLOCK_START in line:
            inside = True
        elif BLOCK_END in line:
            inside = False
        elif inside:
            mutable.add(index)
    return mutable


def _mutable_literals(literals: list[_Literal], lines: list[str]) -> list[_Literal]:
    """The literals that lie where the operator may change them, decimal ints and floats only."""
    mutable = _mutable_lines(lines)
    return [
        lit for lit in literals
        if (mutable is None or lit.line in mutable) and _parse_number(lit.text) is not None
    ]


def _parse_number(text: str) -> int | float | None:
    """Return the value of a decimal int or float literal; None for hex/octal/binary/complex."""
    plain = text.replace("_", "")
    if plain[-1:] in "jJ" or plain[:2].lower() in ("0x", "0o", "0b"):
        return None
    if re.fullmatch(r"\d+", plain):
        return int(plain)
    return float(plain)


def _choose_some(rng: random.Random, items: list) -> list:
    """Pick 1-3 distinct items, fewer if there are fewer."""
    count = rng.choices(LITERAL_COUNTS, weights=LITERAL_COUNT_WEIGHTS)[0]
    return rng.sample(items, min(count, len(items)))


def _perturb(text: str, rng: random.Random) -> tuple[str, str]:
    """Return (new literal text, how it changed) for one int or float literal."""
    value = _parse_number(text)
    if isinstance(value, int):
        # Counts stay counts: a positive int never drops below 1, a zero never goes negative.
        step = rng.choice((-1, 1))
        if value + step < (1 if value >= 1 else 0):
            step = 1
        return str(value + step), f"{step:+d}"
    scale = rng.choice(FLOAT_STEP_SCALES)
    # Jitter within half to one-and-a-half of the step so repeated moves are not all alike.
    step = rng.choice((-1.0, 1.0)) * scale * rng.uniform(0.5, 1.5)
    if value == 0.0:
        new_value = step * ZERO_FLOAT_STEP
        how = f"{new_value:+.3g}"
    else:
        new_value = value * (1.0 + step)
        how = f"x{1.0 + step:.4g}"
    return _format_float(new_value, value), how


def _format_float(new_value: float, old_value: float) -> str:
    """Write new_value as a float literal that differs from old_value, in a compact style."""
    for digits in range(SIGNIFICANT_DIGITS, 18):
        text = format(new_value, f".{digits}g")
        if float(text) != old_value:
            break
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    elif "." not in text:
        text += ".0"
    return text


def _line_template(line: str, literals_on_line: list[_Literal]) -> str:
    """The line's text with each numeric literal replaced by a placeholder."""
    pieces, cursor = [], 0
    for lit in sorted(literals_on_line, key=lambda item: item.start):
        pieces.append(line[cursor:lit.start])
        pieces.append("\0")
        cursor = lit.end
    pieces.append(line[cursor:])
    return "".join(pieces).rstrip("\r\n")


def _templated_lines(
    lines: list[str], literals: list[_Literal]
) -> dict[int, tuple[str, int, list[_Literal]]]:
    """Map line index -> (template, occurrence number of that template, literals in column order)."""
    by_line: dict[int, list[_Literal]] = {}
    for lit in literals:
        by_line.setdefault(lit.line, []).append(lit)
    seen: dict[str, int] = {}
    result = {}
    for index in sorted(by_line):
        on_line = sorted(by_line[index], key=lambda item: item.start)
        template = _line_template(lines[index], on_line)
        result[index] = (template, seen.get(template, 0), on_line)
        seen[template] = seen.get(template, 0) + 1
    return result


def _crossover_candidates(
    lines: list[str], literals: list[_Literal], inspirations: Sequence[str]
) -> list[tuple[_Literal, str, int]]:
    """(parent literal, inspiration's literal text, inspiration number) where the values differ.

    A literal matches when the inspiration has a line identical to the parent's line apart from
    its numbers, at the same occurrence of that line text, with the literal at the same index.
    """
    parent_lines = _templated_lines(lines, literals)
    candidates = []
    for number, inspiration in enumerate(inspirations, start=1):
        try:
            their_literals = _number_literals(inspiration)
        except NothingToMutate:
            continue  # an untokenizable inspiration simply offers nothing to copy
        their_lines = _split_lines(inspiration)
        their_literals = _mutable_literals(their_literals, their_lines)
        their_index = {
            (template, occurrence): on_line
            for template, occurrence, on_line in _templated_lines(their_lines, their_literals).values()
        }
        for template, occurrence, on_line in parent_lines.values():
            theirs = their_index.get((template, occurrence))
            if theirs is None or len(theirs) != len(on_line):
                continue
            for mine, other in zip(on_line, theirs):
                other_value = _parse_number(other.text)
                if other_value is not None and other_value != _parse_number(mine.text):
                    candidates.append((mine, other.text, number))
    # Two inspirations may offer values for one literal; keep the first so edits never collide.
    unique: dict[_Literal, tuple[_Literal, str, int]] = {}
    for candidate in candidates:
        unique.setdefault(candidate[0], candidate)
    return list(unique.values())


def _build_edits(code: str, lines: list[str], new_texts: dict[_Literal, str]) -> tuple[tuple[str, str], ...]:
    """Group changed literals into unique whole-line (search, replace) pairs, applicable in order."""
    spans: list[tuple[int, int]] = []
    for line in sorted({lit.line for lit in new_texts}):
        low, high = _unique_span(code, lines, line, line)
        if spans and low <= spans[-1][1] + 1:
            # Touching or overlapping spans would fight over the same text: make them one edit.
            # A span that contains a unique span is itself unique, so the union needs no check.
            spans[-1] = (min(low, spans[-1][0]), max(high, spans[-1][1]))
        else:
            spans.append((low, high))
    edits = tuple(_rewrite(lines, new_texts, low, high) for low, high in spans)
    if not _applies_in_order(code, edits):
        # A replacement happened to recreate a later search text: fall back to one edit.
        return (_rewrite(lines, new_texts, spans[0][0], spans[-1][1]),)
    return edits


def _rewrite(lines: list[str], new_texts: dict[_Literal, str], low: int, high: int) -> tuple[str, str]:
    """The (search, replace) pair for lines low..high with their changed literals rewritten."""
    replaced = lines[low:high + 1]
    # Right to left, so rewriting one literal leaves the columns of the others on its line valid.
    for lit in sorted(new_texts, key=lambda item: (item.line, item.start), reverse=True):
        if low <= lit.line <= high:
            line = replaced[lit.line - low]
            replaced[lit.line - low] = line[:lit.start] + new_texts[lit] + line[lit.end:]
    return _join(lines, low, high), "".join(replaced).rstrip("\r\n")


def _join(lines: list[str], low: int, high: int) -> str:
    """Lines low..high as one text, without the final line break."""
    return "".join(lines[low:high + 1]).rstrip("\r\n")


def _count_overlapping(text: str, pattern: str) -> int:
    """Occurrences of pattern in text, counting overlapping ones (str.count does not)."""
    count, position = 0, text.find(pattern)
    while position != -1:
        count += 1
        position = text.find(pattern, position + 1)
    return count


def _unique_span(code: str, lines: list[str], low: int, high: int) -> tuple[int, int]:
    """Widen lines low..high by neighbours until their text occurs exactly once in code."""
    grow_down = True
    while _count_overlapping(code, _join(lines, low, high)) != 1:
        can_down, can_up = high + 1 < len(lines), low > 0
        if not (can_down or can_up):
            break  # the whole code; only a pathologically periodic text gets here
        if grow_down and can_down or not can_up:
            high += 1
        else:
            low -= 1
        grow_down = not grow_down
    return low, high


def _applies_in_order(code: str, edits: tuple[tuple[str, str], ...]) -> bool:
    """True if each search occurs exactly once when the edits are applied one after another."""
    for search, replace in edits:
        if _count_overlapping(code, search) != 1:
            return False
        code = code.replace(search, replace, 1)
    return True


def _label(lit: _Literal, lines: list[str], literals: list[_Literal]) -> str:
    """A short human name for a literal: the assigned name, or the line number, plus its index."""
    match = _ASSIGNED_NAME.match(lines[lit.line])
    name = match.group(1) if match else f"line {lit.line + 1}"
    on_line = sorted((item for item in literals if item.line == lit.line), key=lambda item: item.start)
    if len(on_line) == 1:
        return name
    return f"{name} (number {on_line.index(lit) + 1} of {len(on_line)} on the line)"
