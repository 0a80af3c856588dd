"""Golden and unit tests for turning LLM replies into programs (evolveflow.edits)."""
from __future__ import annotations

from pathlib import Path

import pytest

from evolveflow import edits
from evolveflow.code_hash import code_hash, normalise_code
from evolveflow.edits import (
    REPLY_FORMAT, AmbiguousSearch, EditError, MalformedEdit, MalformedProgram, NoChange, NoEditFound,
    OutsideEvolveBlock, Proposal, SearchNotFound, SearchReplace, apply_edits, apply_proposal, evolve_blocks,
    format_edits, parse_reply, unified_diff,
)

GOLDEN = Path(__file__).parent / "golden" / "edits"
CASES = sorted(path.name for path in GOLDEN.iterdir() if path.is_dir())


def _read(path: Path) -> str:
    """Read a fixture byte-exactly (no newline translation), so CRLF cases stay CRLF."""
    return path.read_bytes().decode("utf-8")


@pytest.mark.parametrize("case", CASES)
def test_golden_case(case):
    """Each golden case: program.py + reply.txt yield expected.py, or raise the class in error.txt."""
    folder = GOLDEN / case
    program, reply = _read(folder / "program.py"), _read(folder / "reply.txt")
    if (folder / "expected.py").exists():
        assert apply_proposal(program, parse_reply(reply)) == _read(folder / "expected.py")
        return
    class_name, message = _read(folder / "error.txt").splitlines()[:2]
    with pytest.raises(EditError) as caught:
        apply_proposal(program, parse_reply(reply))
    assert type(caught.value).__name__ == class_name, str(caught.value)
    assert message in str(caught.value)


def test_golden_suite_is_complete_and_byte_exact():
    """The fixtures exist in number, and the whitespace the cases rely on survived checkout."""
    assert len(CASES) >= 15
    for case in CASES:
        outcomes = [(GOLDEN / case / name).exists() for name in ("expected.py", "error.txt")]
        assert outcomes.count(True) == 1, f"{case} needs exactly one of expected.py / error.txt"
    assert "\r\n" in _read(GOLDEN / "crlf_reply" / "reply.txt")
    assert "1.0 / n   \n" in _read(GOLDEN / "trailing_whitespace_mismatch" / "program.py")


# --- code_hash -------------------------------------------------------------------------------------------

def test_code_hash_ignores_line_endings_trailing_whitespace_and_blank_lines():
    base = "def f(x):\n    return x + 1\n"
    assert code_hash("def f(x):\r\n    return x + 1\r\n") == code_hash(base)
    assert code_hash("def f(x):   \n    return x + 1\t\n") == code_hash(base)
    assert code_hash("\n\ndef f(x):\n\n   \n    return x + 1") == code_hash(base)
    assert normalise_code("a  \r\n\r\n  b\n") == "a\n  b"


def test_code_hash_keeps_comments_indentation_and_content():
    base = code_hash("def f(x):\n    return x + 1\n")
    assert code_hash("def f(x):\n    # add one\n    return x + 1\n") != base
    assert code_hash("def f(x):\n  return x + 1\n") != base
    assert code_hash("def f(x):\n    return x + 2\n") != base
    assert len(base) == 64 and int(base, 16) >= 0


def test_edits_reexports_code_hash():
    assert edits.code_hash is code_hash


# --- parse_reply -----------------------------------------------------------------------------------------

BLOCK = "<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n>>>>>>> REPLACE\n"


@pytest.mark.parametrize("reply, motivation", [
    ("MOTIVATION: Use a ring.\nIt packs tighter.\n\n" + BLOCK, "Use a ring.\nIt packs tighter."),
    ("## Motivation\nUse a ring.\n\n## Changes\n" + BLOCK, "Use a ring."),
    ("Motivation:\n  Use a ring.\n" + BLOCK, "Use a ring."),
    ("**Motivation:** Use a ring.\n" + BLOCK, "Use a ring."),
    ("**Motivation**: Use a ring.\n```python\n" + BLOCK + "```\n", "Use a ring."),
    ("I think a ring is better.\n\n" + BLOCK, "I think a ring is better."),
    (BLOCK, ""),
    (BLOCK + "\nMOTIVATION: stated last.\n", "stated last."),
    ("Motivation is key, so:\n" + BLOCK, "Motivation is key, so:"),
])
def test_parse_reply_extracts_motivation(reply, motivation):
    assert parse_reply(reply).motivation == motivation


def test_parse_reply_ignores_motivation_comment_inside_program_fence():
    reply = "Here is the program.\n```python\n# Motivation: not this\nx = 2\n```\n"
    assert parse_reply(reply) == Proposal("Here is the program.", (), "# Motivation: not this\nx = 2\n")


def test_parse_reply_normalises_crlf_in_motivation_and_edits():
    proposal = parse_reply(("MOTIVATION: one\ntwo\n" + BLOCK).replace("\n", "\r\n"))
    assert proposal == Proposal("one\ntwo", (SearchReplace("x = 1\n", "x = 2\n"),), None)


def test_parse_reply_returns_edits_with_newline_terminated_text():
    proposal = parse_reply("MOTIVATION: m\n" + BLOCK + BLOCK.replace("x = 2", ""))
    assert proposal == Proposal("m", (SearchReplace("x = 1\n", "x = 2\n"), SearchReplace("x = 1\n", "\n")), None)


@pytest.mark.parametrize("reply, message", [
    ("<<<<<<< SEARCH\nx = 1\n<<<<<<< SEARCH\n", "edit 1 (opened at reply line 1) has no '=======' divider before "
                                                "the next '<<<<<<< SEARCH' at reply line 3"),
    (BLOCK.replace(">>>>>>> REPLACE\n", "") + BLOCK,
     "edit 1 (opened at reply line 1) has no '>>>>>>> REPLACE' line before the next '<<<<<<< SEARCH' at "
     "reply line 5"),
    ("x = 1\n=======\nx = 2\n>>>>>>> REPLACE\n", "reply line 4 has '>>>>>>> REPLACE' without a '<<<<<<< SEARCH'"),
])
def test_parse_reply_rejects_broken_blocks(reply, message):
    with pytest.raises(MalformedEdit) as caught:
        parse_reply(reply)
    assert message in str(caught.value)


def test_parse_reply_reads_no_program_from_non_python_fences():
    with pytest.raises(NoEditFound, match="no SEARCH/REPLACE block and no fenced program"):
        parse_reply("MOTIVATION: m\n```diff\n-x = 1\n+x = 2\n```\n")


def test_reply_format_example_parses_as_one_edit():
    """The format text shown to the LLM uses markers the parser accepts."""
    proposal = parse_reply(REPLY_FORMAT)
    assert len(proposal.edits) == 1
    assert proposal.edits[0].search.startswith("<lines copied exactly")
    assert "EVOLVE-BLOCK-START" in REPLY_FORMAT


# --- evolve_blocks ---------------------------------------------------------------------------------------

def test_evolve_blocks_returns_interiors():
    code = "a\n# EVOLVE-BLOCK-START\nb\nc\n# EVOLVE-BLOCK-END\nd\n# EVOLVE-BLOCK-START\n# EVOLVE-BLOCK-END\n"
    assert evolve_blocks(code) == [(2, 4), (7, 7)]
    assert evolve_blocks("no markers\n") == []


@pytest.mark.parametrize("code, message", [
    ("# EVOLVE-BLOCK-START\nx\n", "EVOLVE-BLOCK-START on line 1 is never closed by an EVOLVE-BLOCK-END line"),
    ("x\n# EVOLVE-BLOCK-END\n", "EVOLVE-BLOCK-END on line 2 has no EVOLVE-BLOCK-START before it"),
    ("# EVOLVE-BLOCK-START\n# EVOLVE-BLOCK-START\n", "EVOLVE-BLOCK-START on line 2 opens a block while the one "
                                                     "opened on line 1 is still open"),
    ("# EVOLVE-BLOCK-START EVOLVE-BLOCK-END\n", "line 1 holds both"),
])
def test_evolve_blocks_rejects_unbalanced_markers(code, message):
    with pytest.raises(MalformedProgram) as caught:
        evolve_blocks(code)
    assert message in str(caught.value)
    assert isinstance(caught.value, EditError)


# --- apply_edits / apply_proposal details ----------------------------------------------------------------

def test_apply_edits_accepts_text_without_final_newline_and_keeps_program_ending():
    assert apply_edits("a = 1\nb = 2", [SearchReplace("b = 2", "b = 3")]) == "a = 1\nb = 3"
    assert apply_edits("a = 1\nb = 2\n", [SearchReplace("a = 1", "a = 0")]) == "a = 0\nb = 2\n"


def test_apply_edits_matches_whole_lines_not_fragments():
    """'x = 1' must not hit inside 'xx = 10' (a substring match would silently corrupt it)."""
    code = "xx = 10\nx = 1\n"
    assert apply_edits(code, [SearchReplace("x = 1\n", "x = 2\n")]) == "xx = 10\nx = 2\n"


def test_exact_match_wins_over_whitespace_tolerant_matches():
    """Looser tiers are tried only when stricter ones find nothing, so they cannot cause ambiguity."""
    code = "if a:\n    x = 1\n    if b:\n        x = 1\n"
    outer_changed = "if a:\n    x = 2\n    if b:\n        x = 1\n"
    assert apply_edits(code, [SearchReplace("    x = 1\n", "    x = 2\n")]) == outer_changed
    assert apply_edits(code, [SearchReplace("    x = 1   \n", "    x = 2\n")]) == outer_changed
    with pytest.raises(AmbiguousSearch, match="occurs 2 times"):
        apply_edits(code, [SearchReplace("  x = 1\n", "  x = 2\n")])


def test_apply_edits_with_no_edits_is_no_change():
    with pytest.raises(NoChange):
        apply_edits("x = 1\n", [])


def test_search_not_found_without_similar_line_says_so():
    with pytest.raises(SearchNotFound, match="no program line resembles it"):
        apply_edits("x = 1\n", [SearchReplace("completely different\n", "y\n")])


def test_search_not_found_when_indentation_is_inconsistent_says_to_copy_it():
    code = "def f():\n    a = 1\n    b = 2\n"
    with pytest.raises(SearchNotFound, match="match program lines 2-3 only if each line's indentation is ignored"):
        apply_edits(code, [SearchReplace("    a = 1\n  b = 2\n", "    a = 3\n")])


def test_search_not_found_hint_skips_leading_blank_search_lines():
    code = "x = 1\n\ny = 2\n"
    with pytest.raises(SearchNotFound) as caught:
        apply_edits(code, [SearchReplace("\ny = 2\nz = 3\n", "y = 5\n")])
    assert "its first 1 line(s) match from program line 3, but SEARCH line 2 'z = 3' meets program line 4 ''" \
        in str(caught.value)


def test_ambiguous_search_without_markers_counts_program_matches():
    with pytest.raises(AmbiguousSearch, match=r"occurs 3 times in the program \(at lines 1, 2, 3\)"):
        apply_edits("x = 1\nx = 1\nx = 1\n", [SearchReplace("x = 1\n", "x = 2\n")])


def test_whole_program_on_unmarked_parent_is_taken_as_is():
    assert apply_proposal("x = 1\n", Proposal("m", (), "import os\nx = 2\n")) == "import os\nx = 2\n"


def test_identical_whole_program_is_no_change():
    with pytest.raises(NoChange, match="identical to the current one"):
        apply_proposal("x = 1\n", Proposal("m", (), "x = 1  \n\n"))


def test_whole_program_adding_outside_line_names_it():
    parent = "import math\n# EVOLVE-BLOCK-START\nx = 1\n# EVOLVE-BLOCK-END\n"
    child = "import math\nimport os\n# EVOLVE-BLOCK-START\nx = 2\n# EVOLVE-BLOCK-END\n"
    with pytest.raises(OutsideEvolveBlock, match="new line 2 'import os' was added"):
        apply_proposal(parent, Proposal("m", (), child))


def test_whole_program_with_broken_markers_is_outside_block_error():
    parent = "# EVOLVE-BLOCK-START\nx = 1\n# EVOLVE-BLOCK-END\n"
    with pytest.raises(OutsideEvolveBlock, match="markers are broken .*never closed"):
        apply_proposal(parent, Proposal("m", (), "# EVOLVE-BLOCK-START\nx = 2\n"))


def test_proposal_without_edits_or_program_is_no_edit_found():
    with pytest.raises(NoEditFound):
        apply_proposal("x = 1\n", Proposal("m"))


# --- format_edits / unified_diff -------------------------------------------------------------------------

def test_format_edits_round_trips_through_parse_reply():
    original = (SearchReplace("    a = 1\n", "    a = 2\n    b = 3\n"), SearchReplace("c = 1", ""))
    text = format_edits(original)
    assert text.startswith("<<<<<<< SEARCH\n    a = 1\n=======\n")
    assert parse_reply(text).edits == (original[0], SearchReplace("c = 1\n", ""))


def test_unified_diff_shows_changed_lines():
    diff = unified_diff("a\nb\nc\n", "a\nB\nc\n")
    assert diff.startswith("--- parent\n+++ child\n")
    assert "-b\n+B\n" in diff
    assert unified_diff("a\n", "a\n") == ""
