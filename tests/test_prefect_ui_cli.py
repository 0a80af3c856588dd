"""`evolveflow run --rounds` below 1 is refused by the command line before anything starts."""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("value", ["0", "-2", "x"])
def test_cli_rounds_below_one_is_one_line_and_exit_2(tmp_path, value):
    done = subprocess.run([sys.executable, "-m", "evolveflow.cli", "run", "demo", "--rounds", value],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()  # one line, no usage block
    assert line.startswith("evolveflow: error: argument --rounds: ") and "at least 1" in line
