"""The command line as a user meets it: init, knowledge add, run, status, best, and its errors."""
from __future__ import annotations

import pytest

from evolveflow.cli import main


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.usefixtures("prefect_server")
def test_init_knowledge_run_status_best(project, capsys):
    assert main(["init", "demo"]) == 0
    note = project / "note.md"
    note.write_text("# Chebyshev nodes\nFit a polynomial at Chebyshev nodes to spread the error evenly.\n")
    assert main(["knowledge", "add", "demo", str(note), "--title", "Odd symmetry",
                 "--content", "sin is odd around pi/2 shifted"]) == 0
    assert "added 2 knowledge item(s)" in capsys.readouterr().out
    assert main(["knowledge", "add", "demo", str(note)]) == 0
    assert "added 0 knowledge item(s) to demo (1 already there)" in capsys.readouterr().out

    assert main(["run", "demo", "--rounds", "2", "--seed", "3", "--sample-n", "2"]) == 0
    out = capsys.readouterr().out
    assert "round    1" in out and "round    2" in out and "search demo stopped (rounds) after 2 rounds" in out

    assert main(["status", "demo"]) == 0
    status = capsys.readouterr().out
    assert "rounds 2, nodes 3" in status and "best score" in status

    assert main(["best", "demo"]) == 0
    best = capsys.readouterr().out
    assert best.startswith("# best of demo: node") and "def approximate(x):" in best
    assert "#   node     1  round    0" in best  # lineage starts at the root


def test_errors_are_one_clear_line_with_exit_2(project, capsys):
    assert main(["status", "nope"]) == 2
    assert "evolveflow: error: no experiment 'nope'" in capsys.readouterr().err
    assert main(["init", "demo"]) == 0
    assert main(["init", "demo"]) == 2
    assert "already exists" in capsys.readouterr().err
    (project / "experiments" / "demo" / "config.yaml").write_text("pipeline:\n  sample_m: 3\n")
    assert main(["run", "demo", "--rounds", "1"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'pipeline.sample_m'" in err and "config.yaml" in err
    (project / "experiments" / "demo" / "config.yaml").write_text("")
    assert main(["status", "demo"]) == 2
    assert "has not been run yet" in capsys.readouterr().err
    assert main(["knowledge", "add", "demo", "missing.md"]) == 2
    assert "missing.md: no such file or folder" in capsys.readouterr().err
