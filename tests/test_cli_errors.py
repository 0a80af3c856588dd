"""`evolveflow run` fails before Prefect starts, with one line and exit 2, when config or evaluator cannot work."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import shutil

import pytest

from evolveflow.cli import _one_line
from evolveflow.experiment import load_experiment
from tests.support.peer_folders import asi_folder, openevolve_folder, shinka_folder, write

REPO = Path(__file__).resolve().parents[1]


def run_cli(root: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """Runs `evolveflow run` where importing Prefect is an error, so any failure shown happened before it."""
    poison = root / "poison"
    write(poison / "prefect" / "__init__.py", "raise SystemExit('prefect was imported before the checks')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(poison), str(REPO)])}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "evolveflow.cli", "run", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    return done, time.monotonic() - started


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("evolveflow: error: "), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    return lines[0]


def test_an_evaluator_that_raises_at_import_stops_the_run_before_prefect(tmp_path):
    exp = tmp_path / "experiments" / "demo"
    write(exp / "input.md", "Make it better.\n")
    write(exp / "initial_program.py", "x = 1\n")
    write(exp / "evaluator.py", "import json\n\nraise RuntimeError('no GPU here')\n\ndef evaluate(path):\n    return {}\n")
    done, seconds = run_cli(tmp_path, "demo", "--rounds", "1")
    line = one_error_line(done)
    assert line.endswith("cannot be used: importing evaluator "
                         f"{exp / 'evaluator.py'} failed: RuntimeError: no GPU here (evaluator.py, line 3)")
    print(f"failed in {seconds:.2f} s")  # measured, not asserted: ≈0.5 s on the 2-core reference machine


def test_config_errors_of_translated_files_stop_the_run_before_prefect(tmp_path):
    exp = shinka_folder(tmp_path)
    (exp / "shinka_small.yaml").write_text("evo_config: {}\njob_config:\n  time: ten minutes\n")
    done, _ = run_cli(tmp_path, "circle_packing_shinka", "--rounds", "1")
    assert one_error_line(done) == (f"evolveflow: error: {exp / 'shinka_small.yaml'}: job_config.time is "
                                    "'ten minutes', not a time of the form hh:mm:ss")


def test_a_missing_api_key_stops_the_run_before_prefect_unless_the_model_is_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("EVOLVEFLOW_TEST_UNSET_KEY", raising=False)
    exp = openevolve_folder(tmp_path)
    # evolveflow's own config naming a key variable: strict, one line, before Prefect.
    write(tmp_path / "ours.yaml", "api:\n  model: openai/gpt-4o-mini\n  api_key_env: EVOLVEFLOW_TEST_UNSET_KEY\n")
    done, _ = run_cli(tmp_path, "circle_packing", "--rounds", "1", "--config", str(tmp_path / "ours.yaml"))
    assert "api.api_key_env is EVOLVEFLOW_TEST_UNSET_KEY, but that environment variable is not set" in (
        one_error_line(done))
    offline, _ = run_cli(tmp_path, "circle_packing", "--rounds", "1", "--config", str(tmp_path / "ours.yaml"),
                         "--model", "offline/mutator")
    assert "prefect was imported before the checks" in offline.stderr  # got past every check
    # The peer's own config naming a key that is not set: the folder runs offline and says so.
    (exp / "config_phase_1.yaml").write_text("llm:\n  primary_model: gpt-4o-mini\n"
                                             "  api_key: ${EVOLVEFLOW_TEST_UNSET_KEY}\n")
    peer, _ = run_cli(tmp_path, "circle_packing", "--rounds", "1")
    assert "prefect was imported before the checks" in peer.stderr
    assert ("api.model openai/gpt-4o-mini (from experiments/circle_packing/config_phase_1.yaml) needs "
            "EVOLVEFLOW_TEST_UNSET_KEY, which is not set: running with the offline model instead") in peer.stdout


def test_tracebacks_in_messages_shrink_to_the_error_and_its_place():
    message = ("evaluator /x/evaluate.py cannot be used: importing failed:\nTraceback (most recent call last):\n"
               '  File "/work/evolveflow/evaluation/harness.py", line 77, in load_module\n'
               '  File "/x/evaluate.py", line 4, in <module>\n    import torch\n'
               '  File "/venv/lib/python3.11/site-packages/torch/__init__.py", line 9, in <module>\n'
               "ImportError: libcuda.so.1: cannot open shared object file")
    assert _one_line(ValueError(message)) == (
        "evaluator /x/evaluate.py cannot be used: importing failed: ImportError: libcuda.so.1: cannot open "
        "shared object file (evaluate.py, line 4)")
    assert _one_line(ValueError("first\n\n  second ")) == "first second"


@pytest.mark.parametrize("make", [asi_folder, openevolve_folder, shinka_folder])
def test_the_evaluator_spec_follows_the_experiment_config(tmp_path, make):
    from evolveflow.evaluator_spec import evaluator_spec

    exp = load_experiment(make(tmp_path).name, tmp_path)
    assert evaluator_spec(exp).experiment_dir == exp.dir
    write(tmp_path / "extra.yaml", "evaluation:\n  python: python3\n  pythonpath: [lib]\n  timeout_s: 5\n")
    exp = load_experiment(exp.name, tmp_path, tmp_path / "extra.yaml")
    spec = evaluator_spec(exp)
    assert spec.python == shutil.which("python3")
    assert spec.pythonpath == ((exp.dir / "lib").resolve(),)
    assert spec.timeout_s == 5


def test_an_initial_program_that_fails_is_one_line_without_traceback_or_leak_noise(tmp_path):
    """This failure happens inside the Prefect flow: the run must still end in one clear line."""
    exp = tmp_path / "experiments" / "shinkaish"
    write(exp / "input.md", "Make it better.\n")
    write(exp / "initial.py", "x = 1\n")
    write(exp / "config.yaml", "cognition:\n  embeddings: false\n")
    write(exp / "evaluator.py", "def evaluate(path):\n    return {'score': 1.0, 'correct': False, 'error': 'circle 3 outside'}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "evolveflow.cli", "run", "shinkaish", "--rounds", "1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert "Traceback" not in output and "nanobind" not in output, output
    errors = [line for line in done.stderr.splitlines() if line.startswith("evolveflow: error: ")]
    assert errors == ["evolveflow: error: the initial program initial.py did not evaluate (candidate_error): "
                      "the evaluator marked the candidate invalid (correct: false): circle 3 outside"], output
    assert len(output.splitlines()) <= 6, output
