"""`python main.py --experiment X --steps N ...` (ASI-Evolve's command line) runs evolveflow."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from storage.memory import MemoryStore
from tests.support.peer_folders import asi_folder, write

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = sys.executable  # the suite runs with the repository's .venv/bin/python


def entry():
    spec = importlib.util.spec_from_file_location("evolveflow_main_entry", REPO / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_flags_map_onto_evolveflow_run():
    argv = entry().evolveflow_argv(["--experiment", "circle_packing_demo", "--steps", "10", "--sample-n", "3",
                                    "--eval-script", "/abs/eval.sh", "--config", "extra.yaml", "--model", "m"])
    assert argv == ["run", "circle_packing_demo", "--rounds", "10", "--sample-n", "3", "--eval-script",
                    "/abs/eval.sh", "--config", "extra.yaml", "--model", "m"]
    assert entry().evolveflow_argv(["--experiment", "x"]) == ["run", "x", "--rounds", "10"]  # ASI's default


def test_help_and_a_python_without_evolveflow(tmp_path):
    shown = subprocess.run([VENV_PYTHON, "main.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "--experiment" in shown.stdout and "--steps" in shown.stdout
    # -S: no site-packages, as with a system Python that never ran scripts/setup.sh.
    bare = subprocess.run([VENV_PYTHON, "-S", "main.py", "--experiment", "x"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert bare.returncode == 2 and bare.stdout == ""
    (line,) = bare.stderr.splitlines()
    assert line.startswith("evolveflow: error: this Python (") and "missing pydantic, yaml, prefect" in line
    assert line.endswith("use .venv/bin/python main.py ..., or run ./scripts/setup.sh first to create .venv")


@pytest.mark.usefixtures("prefect_server")
def test_demo_runs_through_main_py(tmp_path):
    from prefect.settings import PREFECT_API_URL

    shutil.copytree(REPO / "experiments" / "circle_packing", tmp_path / "experiments" / "circle_packing")
    fast = write(tmp_path / "fast.yaml", "cognition:\n  embeddings: false\n")
    eval_script = tmp_path / "experiments" / "circle_packing" / "eval.sh"
    done = subprocess.run(
        [VENV_PYTHON, str(REPO / "main.py"), "--experiment", "circle_packing", "--steps", "1", "--sample-n", "2",
         "--eval-script", str(eval_script), "--config", str(fast)],
        cwd=tmp_path, env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "round    1  node     2" in done.stdout
    assert "search circle_packing stopped (rounds) after 1 rounds" in done.stdout
    assert (tmp_path / "runs" / "circle_packing" / "tree.duckdb").is_file()


@pytest.mark.usefixtures("prefect_server")
def test_asi_folder_runs_unchanged_with_its_knowledge(tmp_path, monkeypatch, capsys):
    exp_dir = asi_folder(tmp_path)
    write(tmp_path / "fast.yaml", "cognition:\n  embeddings: false\npipeline:\n  parallel:\n    num_workers: 1\n")
    monkeypatch.chdir(tmp_path)
    code = entry().main(["--experiment", "circle_packing_demo", "--steps", "2", "--sample-n", "2",
                         "--eval-script", str(exp_dir / "eval.sh"), "--config", "fast.yaml", "--seed", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "is an ASI-Evolve config (evaluator contract asi)" in out
    assert "search circle_packing_demo stopped (rounds) after 2 rounds" in out
    assert "initial score 0.600000" in out  # 1 - |0.3 - 0.7|, scored by the demo's own eval.sh
    memory = MemoryStore(tmp_path / "runs" / "circle_packing_demo" / "memory.lance", None)
    assert memory.count("knowledge") == 3  # the literal items of init_cognition.py
