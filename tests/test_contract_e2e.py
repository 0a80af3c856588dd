"""End to end: a few offline rounds on an experiment folder laid out for each framework's evaluator contract.

Each folder is written here the way that framework lays it out (ASI-Evolve: initial_program without
extension, eval.sh, evaluator.py, input.md; OpenEvolve: initial_program.py, evaluator.py with the
cascade; ShinkaEvolve: initial.py, evaluate.py). Every evaluated node's outcome and score are
recomputed here from the contract's own rules and compared with what the tree recorded.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from evolveflow.records import Status
from flows.search import InitialProgramFailed, evolve_search
from storage.tree import TreeStore
from tests.support import contracts as c

pytestmark = pytest.mark.usefixtures("prefect_server")

REPO = Path(__file__).resolve().parents[1]
OFFLINE = {"cognition.embeddings": False}  # api.model stays the default offline/mutator

PROGRAM = '''"""A toy candidate: value() is the sum of three constants, each within its limit."""

# EVOLVE-BLOCK-START
A = 0.3
B = 0.2
C = 0.1
# EVOLVE-BLOCK-END


def value():
    if C > 0.1:
        raise ValueError(f"C = {C} is above its limit 0.1")
    if B < 0.2:
        return -1.0  # an invalid answer: the evaluators reject negative values
    return A + B + C
'''
PROBLEM = "Make value() as large as possible. A, B and C must stay within the limits value() checks.\n"


def run_value(code: str) -> float:
    namespace: dict = {}
    exec(compile(code, "candidate", "exec"), namespace)  # our own toy programs, mutated constants only
    return float(namespace["value"]())


def expected(contract: str, code: str) -> tuple[Status, float | None]:
    """The outcome and score the contract's own rules give this program (with the evaluators in contracts.py)."""
    try:
        value = run_value(code)
    except Exception:  # every evaluator reports a raising candidate as invalid / incorrect
        return Status.CANDIDATE_ERROR, None
    if not math.isfinite(value) or value < 0:  # ASI: success false; OpenEvolve: validity 0; Shinka: correct false
        return Status.CANDIDATE_ERROR, None
    if contract == "openevolve":  # the cascade: the score is the fitness of the last stage reached
        if value == 0.66:
            return Status.CANDIDATE_ERROR, None  # OPENEVOLVE_CASCADE's stage 2 raises
        return Status.OK, c.openevolve_cascade_expectation(value)[1]
    return Status.OK, value


def asi_folder(folder: Path) -> None:
    c.write_asi_experiment(folder)
    (folder / "initial_program").write_text(PROGRAM)
    (folder / "input.md").write_text(PROBLEM)


def openevolve_folder(folder: Path) -> None:
    c.write_file(folder, "evaluator.py", c.OPENEVOLVE_CASCADE)
    (folder / "initial_program.py").write_text(PROGRAM)
    (folder / "input.md").write_text(PROBLEM)


def shinka_folder(folder: Path) -> None:
    c.write_file(folder, "evaluate.py", c.SHINKA_WRAPPED)
    (folder / "initial.py").write_text(PROGRAM)
    (folder / "input.md").write_text(PROBLEM)


FOLDERS = {"asi": asi_folder, "openevolve": openevolve_folder, "shinka": shinka_folder}


@pytest.mark.parametrize("contract", list(FOLDERS))
def test_three_rounds_follow_the_contracts_rules(tmp_path, contract):
    name = f"{contract}_toy"
    FOLDERS[contract](tmp_path / "experiments" / name)
    summary = evolve_search(experiment=name, rounds=3, root=str(tmp_path), overrides=OFFLINE)
    assert summary["rounds_done"] == 3

    initial_status, initial_score = expected(contract, PROGRAM)
    assert initial_status == Status.OK
    assert summary["initial_score"] == pytest.approx(initial_score)
    if contract == "openevolve":
        assert initial_score == pytest.approx(0.65)  # stage 2 reached: the mean of stage1 and stage2
    else:
        assert initial_score == pytest.approx(0.6)

    storage = tmp_path / "runs" / name
    with TreeStore(storage / "tree.duckdb", read_only=True) as tree:
        nodes = tree.nodes(sorted(tree.node_ids()))
        assert len(nodes) == 4
        evaluated = [n for n in nodes if n.status in (Status.OK, Status.CANDIDATE_ERROR)]
        assert evaluated[0].round == 0
        for node in evaluated:
            status, score = expected(contract, node.code)
            assert node.status == status, (node.id, node.status, node.error, node.code)
            attempts = tree.attempts(node.id)
            assert attempts and {a["outcome"] for a in attempts} == {status.value}
            if status == Status.OK:
                assert node.score == pytest.approx(score) and node.error is None
            else:  # a failure is never a score
                assert node.score is None and node.error
                assert all(a["score"] is None for a in attempts)
        best = tree.best()
        assert best is not None and best.status == Status.OK
        assert expected(contract, best.code)[0] == Status.OK
        assert summary["best_score"] == pytest.approx(max(n.score for n in evaluated if n.status == Status.OK))
        root = nodes[0]

    kept = storage / "files" / f"node_{root.id}" / "attempt_1"
    if contract == "asi":
        assert {p.name for p in kept.iterdir()} == {"results.json", "eval.log"}
        assert "eval.log" in root.feedback
        assert root.metrics["validity"] == 1.0 and "eval_score" not in root.metrics
    elif contract == "openevolve":
        assert root.metrics["cascade_stage"] == 2
        assert root.feedback["artifact:stage2_note"] == "ran stage 2"
    else:
        assert {"metrics.json", "correct.json"} <= {p.name for p in kept.iterdir()}
        assert root.private_metrics == {"secret_value": pytest.approx(1.2)}
        assert "secret_value" not in root.metrics and root.metrics["value"] == pytest.approx(0.6)
        assert root.feedback["text_feedback"].startswith("value() returned 0.6")


@pytest.mark.parametrize("evaluator", ["evaluator.py", "eval.sh"])
def test_forged_initial_program_is_refused_not_scored(tmp_path, evaluator):
    """The demo attack: forging lines in the EVOLVE-BLOCK of circle packing's initial program."""
    demo = tmp_path / "experiments" / "circle_packing"
    shutil.copytree(REPO / "experiments" / "circle_packing", demo)
    initial = demo / "initial_program.py"
    initial.write_text(c.with_demo_forgery(initial.read_text()))
    overrides = {**OFFLINE, "evaluation.script": "eval.sh"} if evaluator == "eval.sh" else OFFLINE
    with pytest.raises(InitialProgramFailed, match=r"did not evaluate \(candidate_error\)"):
        evolve_search(experiment="circle_packing", rounds=2, root=str(tmp_path), overrides=overrides)
    with TreeStore(tmp_path / "runs" / "circle_packing" / "tree.duckdb", read_only=True) as tree:
        nodes = tree.nodes(sorted(tree.node_ids()))
        assert [n.status for n in nodes] == [Status.CANDIDATE_ERROR]
        assert nodes[0].score is None and tree.best() is None
        attempts = tree.attempts(nodes[0].id)
        assert [a["outcome"] for a in attempts] == ["candidate_error"]
        assert attempts[0]["score"] is None and "99" not in str(attempts[0]["metrics"])
        assert "ended before run_packing() returned" in nodes[0].error
