"""`status` and `best` as tables, one score format, and the run's progress display (plain and live)."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from evolveflow.cli import main
from evolveflow.experiment import load_experiment
from evolveflow.progress import RoundDisplay, print_round, print_summary, use_display
from evolveflow.records import EvalResult, LLMReply, Node, Outcome, Status
from evolveflow.search_lock import SearchLock
from evolveflow.tables import fmt_score
from storage.memory import MemoryStore
from storage.tree import TreeStore

ROOT_CODE = "def approximate(x):\n    return x\n"
BEST_CODE = "def approximate(x):\n    return x - x ** 3 / 6\n"


def _node(node_id, parent, rnd, code, status, score=None, motivation="", analysis=None, error=None):
    return Node(id=node_id, parent_id=parent, round=rnd, code=code, code_hash=f"h{node_id}", motivation=motivation,
                status=status, score=score, analysis=analysis, error=error)


def build_experiment(root: Path) -> Path:
    """A scaffolded experiment `demo` under root with a small real tree and lessons (no search run)."""
    scaffold = subprocess.run([sys.executable, "-m", "evolveflow.cli", "init", "demo"], cwd=root,
                              capture_output=True, text=True, check=True)
    assert "created" in scaffold.stdout
    exp_dir = root / "experiments" / "demo"
    (exp_dir / "config.yaml").write_text((exp_dir / "config.yaml").read_text() + "cognition:\n  embeddings: false\n")
    exp = load_experiment("demo", root)
    ok = lambda s: [EvalResult(outcome=Outcome.OK, score=s, duration_s=0.1)]  # noqa: E731
    reply = lambda cost: LLMReply(text="x", model="m", prompt_tokens=100, completion_tokens=20, cost_usd=cost)  # noqa: E731
    with TreeStore(exp.tree_path) as tree:
        tree.start_run("r1", 3, 1)
        tree.finish_node(_node(1, None, 0, ROOT_CODE, Status.OK, 0.5, "initial program"), ok(0.5))
        tree.finish_node(_node(2, 1, 1, "def approximate(x):\n    return 0.99 * x\n", Status.OK, 0.6,
                               "shrink the slope [a guess]", "Scaling the slope alone helps little."),
                         ok(0.6), [("propose", reply(0.001), None)])
        tree.finish_node(_node(3, 1, 2, "def approximate(x):\n    return 1 / x\n", Status.CANDIDATE_ERROR, None,
                               "invert", "Dividing by x fails at zero.", "ZeroDivisionError"),
                         [EvalResult(outcome=Outcome.CANDIDATE_ERROR, error="ZeroDivisionError")],
                         [("propose", reply(None), None)])  # a price nobody knows: total cost unknown
        tree.finish_node(_node(4, 2, 3, BEST_CODE, Status.OK, 0.912345678, "add the cubic Taylor term",
                               "The cubic Taylor term\nfits the curve well."), ok(0.91) + ok(0.914))
        tree.end_run("r1", 3, "rounds")
    memory = MemoryStore(exp.memory_path, None)
    memory.add_lessons([(2, "slope", "Scaling the slope alone helps little."),
                        (3, "invert", "Dividing by x fails at zero."),
                        (4, "cubic", "The cubic Taylor term fits the curve well.")])
    memory.add_knowledge([{"title": "Taylor", "content": "The Taylor series of sin has odd terms only."}])
    return exp_dir


def cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    """Runs the installed CLI in a subprocess, stdout a pipe (plain mode)."""
    return subprocess.run([sys.executable, "-m", "evolveflow.cli", *args], cwd=root, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "60"})


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    build_experiment(root)
    return root


def test_one_score_format_keeps_six_significant_digits():
    assert [fmt_score(v) for v in (0.912345678, 0.6, 123456789.0, 1e-9, None)] == [
        "0.912346", "0.600000", "1.23457e+08", "1.00000e-09", "-"]


def test_status_piped_is_plain_aligned_text(project):
    done = cli(project, "status", "demo")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "\x1b[" not in out and "┃" not in out  # no colour, no box when piped
    assert out.startswith("demo: rounds 3, nodes 4 (from ")
    assert "not running" in out
    lines = out.splitlines()
    assert any(line.split() == ["candidate_error", "1"] for line in lines)
    assert any(line.split() == ["ok", "3"] for line in lines)
    assert any(line.split()[:4] == ["best", "score", "0.912346", "(node"] for line in lines)
    assert any(line.split() == ["initial", "score", "0.500000"] for line in lines)
    assert any(line.split() == ["cost", "unknown"] for line in lines)
    assert any(line.split() == ["tokens", "200", "prompt", "+", "40", "completion"] for line in lines)


def test_status_json_is_the_report(project):
    done = cli(project, "status", "demo", "--json")
    report = json.loads(done.stdout)
    assert report["best"]["id"] == 4 and report["by_status"] == {"ok": 3, "candidate_error": 1}
    assert "status" not in report["lineage"][0]  # the report's shape is unchanged


def test_best_piped_is_a_runnable_program_with_its_lineage_as_comments(project):
    done = cli(project, "best", "demo")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    comments = [line for line in out.splitlines() if line.startswith("#")]
    assert comments[0].startswith("# best of demo: node 4, score 0.912346 (2 evaluation attempt(s); from ")
    assert [line.split()[:8] for line in comments[2:]] == [
        ["#", "node", "1", "round", "0", "score", "0.500000", "ok"],
        ["#", "node", "2", "round", "1", "score", "0.600000", "ok"],
        ["#", "node", "4", "round", "3", "score", "0.912346", "ok"]]
    assert "shrink the slope [a guess]" in out  # printed as written, not read as markup
    assert out.endswith(BEST_CODE)
    namespace: dict = {}
    exec(compile(out, "best.py", "exec"), namespace)  # noqa: S102 - the output is the program
    assert namespace["approximate"](0.0) == 0.0


def test_best_on_a_terminal_is_a_table(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    monkeypatch.setattr("evolveflow.tables.make_console",
                        lambda: Console(file=sys.stdout, force_terminal=True, width=120))
    assert main(["best", "demo"]) == 0
    out = capsys.readouterr().out
    assert "\x1b[" in out  # styled
    row = next(line for line in out.splitlines() if "add the cubic Taylor term" in line)
    assert row.split()[:4] == ["4", "3", "0.912346", "ok"]
    assert BEST_CODE in out


def test_status_while_a_search_runs_reads_the_snapshot(project):
    exp = load_experiment("demo", project)
    snapshot = json.loads(cli(project, "status", "demo", "--json").stdout)
    snapshot["running"] = {"pid": 4242, "search_id": "s", "rounds_done": 2}
    exp.report_path.write_text(json.dumps(snapshot))
    with SearchLock(exp.lock_path):
        status = cli(project, "status", "demo")
        best = cli(project, "best", "demo")
    assert status.returncode == 0, status.stderr
    assert "live snapshot from the running search" in status.stdout
    assert "running: pid 4242, 2 rounds done in this run" in status.stdout
    assert best.returncode == 0 and best.stdout.endswith(BEST_CODE)
    assert best.stdout.splitlines()[2].split()[:8] == ["#", "node", "1", "round", "0", "score", "0.500000", "-"]


SUMMARY = {"round": 7, "node": 9, "parent": 4, "status": "ok", "score": 0.95, "parent_score": 0.9,
           "error": None, "timings": {"propose": 0.5}, "best": 0.95}
END = {"experiment": "demo", "stop_reason": "rounds", "rounds_done": 2, "seconds": 3.2, "initial_score": 0.5,
       "best_score": 0.95, "best_node": 9, "by_status": {"ok": 2}, "duplicates_rejected": 0,
       "lessons_written": 2, "usage": {"llm_calls": 2, "prompt_tokens": 10, "completion_tokens": 5,
                                       "cost_usd": None}, "storage": "runs/demo"}


def test_progress_when_piped_is_one_plain_line_a_round(capsys):
    with use_display(RoundDisplay(rounds=2, console=Console(file=io.StringIO()))):
        print_round(SUMMARY)
        print_round({**SUMMARY, "round": 8, "node": 10, "status": "candidate_error", "score": None,
                     "error": "ZeroDivisionError:\n  division by zero"})
        print_summary(END)
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["round", "7", "node", "9", "ok", "score", "0.950000", "best", "0.950000", "0.50s",
                              "(+0.0500000", "vs", "parent", "4)"]
    assert out[1].endswith("ZeroDivisionError: division by zero")
    assert "search demo stopped (rounds) after 2 rounds in 3.2 s" in out
    assert "  initial score 0.500000   best score 0.950000 (node 9)   improvement +0.450000" in out
    assert out[-2].endswith("cost unknown")


def test_progress_on_a_terminal_renders_a_live_bar(capsys):
    screen = io.StringIO()
    display = RoundDisplay(rounds=4, console=Console(file=screen, force_terminal=True, width=120))
    with use_display(display):
        print_round(SUMMARY)
        print_round({**SUMMARY, "round": 8, "status": "rejected", "best": 0.97})
        print_summary(END)
    assert capsys.readouterr().out == ""  # everything went to the live console
    text = screen.getvalue()
    assert "round    7  node     9" in text and "round    8" in text
    assert "2/4" in text and "best 0.970000" in text and "last rejected" in text
    assert "search demo stopped (rounds)" in text
    assert display._bar is None  # stopped by the summary
