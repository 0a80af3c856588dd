"""Tests for the seeded numeric-literal mutation operator behind the offline mutator."""
from __future__ import annotations

import random
import re
import textwrap
from pathlib import Path

import pytest

from evolveflow.mutation import Mutation, NothingToMutate, propose_mutation

INITIAL_PROGRAM = (
    Path(__file__).resolve().parent.parent / "experiments" / "circle_packing" / "initial_program.py"
)

BLOCKED = textwrap.dedent(
    '''\
    """Module with 7 things in its docstring."""
    OUTSIDE = 0.75
    # EVOLVE-BLOCK-START
    # tune 3.5 carefully, see note 12
    SCALE = 0.32
    label = "width 40"
    COUNT = 4
    values = [0.1, 0.1, 0.25]  # 99 in a comment
    x2 = SCALE * 2.0
    # EVOLVE-BLOCK-END
    TAIL = 0.5
    '''
)


def apply(code: str, mutation: Mutation) -> str:
    """Apply the edits in order, asserting each search text occurs exactly once."""
    for search, replace in mutation.edits:
        assert code.count(search) == 1, f"search text not unique: {search!r}"
        assert search != replace
        code = code.replace(search, replace, 1)
    return code


def test_same_seed_gives_same_mutation_and_different_seeds_vary():
    code = INITIAL_PROGRAM.read_text()
    first = [propose_mutation(code, random.Random(seed)) for seed in range(20)]
    again = [propose_mutation(code, random.Random(seed)) for seed in range(20)]
    assert first == again
    assert len({m.edits for m in first}) > 15


@pytest.mark.parametrize("seed", range(200))
def test_edits_apply_once_and_change_the_code(seed):
    code = INITIAL_PROGRAM.read_text()
    mutation = propose_mutation(code, random.Random(seed))
    child = apply(code, mutation)
    assert child != code
    assert 1 <= len(mutation.edits) <= 3
    assert mutation.description
    compile(child, "child.py", "exec")
    # Only the parametric constants inside the block differ; line count is unchanged.
    changed = [i for i, (a, b) in enumerate(zip(code.splitlines(), child.splitlines())) if a != b]
    assert len(code.splitlines()) == len(child.splitlines())
    start = code.splitlines().index("# EVOLVE-BLOCK-START")
    end = code.splitlines().index("# EVOLVE-BLOCK-END")
    assert changed and all(start < i < end for i in changed)


@pytest.mark.parametrize("seed", range(300))
def test_comments_strings_and_code_outside_the_block_are_never_touched(seed):
    child = apply(BLOCKED, propose_mutation(BLOCKED, random.Random(seed)))
    old_lines, new_lines = BLOCKED.splitlines(), child.splitlines()
    untouchable = {0, 1, 2, 3, 5, 9, 10}  # docstring, outside, markers, comment, string
    for index in untouchable:
        assert new_lines[index] == old_lines[index]
    assert new_lines[7].endswith("]  # 99 in a comment")
    assert "x2 = SCALE * " in new_lines[8]  # the 2 in the name x2 stays


def test_every_literal_in_the_block_is_reachable_and_respects_its_kind():
    touched = set()
    for seed in range(400):
        mutation = propose_mutation(BLOCKED, random.Random(seed))
        child = apply(BLOCKED, mutation)
        namespace: dict = {}
        exec(child, namespace)
        assert isinstance(namespace["COUNT"], int) and namespace["COUNT"] >= 1
        assert isinstance(namespace["SCALE"], float)
        for name, old in (("SCALE", 0.32), ("COUNT", 4)):
            if namespace[name] != old:
                touched.add(name)
        for k, old in enumerate([0.1, 0.1, 0.25]):
            if namespace["values"][k] != old:
                touched.add(f"values[{k}]")
        if namespace["x2"] != namespace["SCALE"] * 2.0:
            touched.add("x2")
    assert touched == {"SCALE", "COUNT", "values[0]", "values[1]", "values[2]", "x2"}


def test_float_steps_are_multiplicative_and_bounded():
    ratios = []
    for seed in range(300):
        mutation = propose_mutation("A = 0.32\n", random.Random(seed))
        (search, replace), = mutation.edits
        assert search == "A = 0.32"
        new_value = float(replace.split("=")[1])
        assert "A: 0.32 -> " in mutation.description
        ratios.append(new_value / 0.32)
        # Formatting stays compact: at most 6 significant digits.
        digits = replace.split("=")[1].strip().lstrip("0.").replace(".", "")
        assert len(digits) <= 6
    assert all(0.69 < r < 1.31 and r != 1.0 for r in ratios)
    assert any(r < 0.99 for r in ratios) and any(r > 1.01 for r in ratios)
    assert any(abs(r - 1) < 0.01 for r in ratios)  # small steps exist too


def test_ints_move_by_one_and_a_count_of_one_never_drops_to_zero():
    results = {apply("N = 1\n", propose_mutation("N = 1\n", random.Random(s))) for s in range(50)}
    assert results == {"N = 2\n"}
    results = {apply("N = 7\n", propose_mutation("N = 7\n", random.Random(s))) for s in range(50)}
    assert results == {"N = 6\n", "N = 8\n"}


def test_without_markers_numbers_anywhere_are_mutable():
    code = "def f():\n    return 3.0 * g(2)\n"
    children = {apply(code, propose_mutation(code, random.Random(s))) for s in range(60)}
    assert any("g(2)" not in child for child in children)
    assert any("3.0" not in child for child in children)


def test_search_text_grows_until_unique():
    code = "def a():\n    x = 0.5\n    return x\n\ndef b():\n    x = 0.5\n    return x\n"
    for seed in range(30):
        mutation = propose_mutation(code, random.Random(seed))
        for search, _ in mutation.edits:
            assert code.count(search) == 1
            assert "def " in search  # a bare '    x = 0.5' line would be ambiguous
        apply(code, mutation)


def test_crossover_copies_a_value_from_an_inspiration():
    parent = "# EVOLVE-BLOCK-START\nA = 0.3\nB = 0.4\nC = 2\n# EVOLVE-BLOCK-END\n"
    inspiration = "# EVOLVE-BLOCK-START\nA = 0.3\nB = 0.77\nC = 2\n# EVOLVE-BLOCK-END\n"
    crossed = 0
    for seed in range(100):
        mutation = propose_mutation(parent, random.Random(seed), inspirations=[inspiration])
        if "from inspiration 1" in mutation.description:
            crossed += 1
            assert mutation.edits == (("B = 0.4", "B = 0.77"),)
            assert mutation.description == "B: 0.4 -> 0.77 (from inspiration 1)"
    assert 10 < crossed < 60  # crossover is an occasional move, not the only one


def test_crossover_matches_lines_by_text_and_occurrence():
    parent = "W = [0.1,\n     0.2]\nX = 5\nW2 = [0.1,\n     0.2]\n"
    inspiration = "W = [0.1,\n     0.2]\nX = 5\nW2 = [0.1,\n     0.9]\n"
    seen = set()
    for seed in range(100):
        mutation = propose_mutation(parent, random.Random(seed), inspirations=[inspiration])
        if "inspiration" in mutation.description:
            child = apply(parent, mutation)
            seen.add(child)
    # Only the second '     0.2]' line differs in the inspiration, so only it is copied.
    assert seen == {"W = [0.1,\n     0.2]\nX = 5\nW2 = [0.1,\n     0.9]\n"}


def test_nothing_to_mutate_messages():
    with pytest.raises(NothingToMutate, match="EVOLVE-BLOCK-START/END region"):
        propose_mutation("X = 1\n# EVOLVE-BLOCK-START\nname = 'v2'\n# EVOLVE-BLOCK-END\n", random.Random(0))
    with pytest.raises(NothingToMutate, match="no int or float literals; add tunable constants"):
        propose_mutation("print('hello 42')  # 7\n", random.Random(0))
    with pytest.raises(NothingToMutate, match="cannot tokenize"):
        propose_mutation('x = """never closed\n', random.Random(0))


def test_zero_and_exponent_floats_stay_valid_float_literals():
    for seed in range(40):
        zero_child = apply("A = 0.0\n", propose_mutation("A = 0.0\n", random.Random(seed)))
        value = float(zero_child.split("=")[1])
        assert value != 0.0 and abs(value) <= 0.031
        tiny_child = apply("EPS = 1e-9\n", propose_mutation("EPS = 1e-9\n", random.Random(seed)))
        literal = tiny_child.split("=")[1].strip()
        assert re.fullmatch(r"\d\.\d+e-(9|10)", literal), literal
        assert 0.69e-9 < float(literal) < 1.31e-9
