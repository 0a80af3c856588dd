"""Evaluators written to each framework's contract (from its documented behaviour), for tests.

Every evaluator here judges the same kind of candidate: a Python program that defines
``value() -> float``. A finite value >= 0 is valid and is the score; a negative value is invalid;
a program that raises is broken. Each framework reports those three cases its own way:

* ASI-Evolve: ``eval.sh`` (run with bash in ``<experiment copy>/steps/step_N``, no argument) calls
  ``../../evaluator.py code results.json``, which runs the candidate in a subprocess and writes
  ``eval_score`` / ``success`` / ``validity``; an EXIT trap writes ``success: false`` and exits 0.
* OpenEvolve: ``evaluate(program_path)`` importing the candidate, returning a dict or an
  ``EvaluationResult``; optionally the cascade ``evaluate_stage1/2/3``.
* ShinkaEvolve: ``evaluate.py --program_path P --results_dir D`` writing ``metrics.json`` and
  ``correct.json``, through ``run_shinka_eval`` or by itself.
* native: an executable called with the candidate's path that prints one JSON line, or
  ``evaluate(program_path) -> dict`` in a Python file.

The ones that run the candidate in a subprocess read its answer from a file in a fresh private
directory (never the candidate's working directory, stdout or exit status alone).
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

# Runs the candidate file in a child process and returns value(); raises CandidateFailed if it
# does not produce an answer. Shared by every evaluator that isolates the candidate.
RUN_IN_SUBPROCESS = '''
import json as _json
import os as _os
import subprocess as _subprocess
import sys as _sys
import tempfile as _tempfile

_CHILD = """
import json, runpy, sys
namespace = runpy.run_path(sys.argv[1], run_name="program")
answer = float(namespace["value"]())
with open(sys.argv[2], "w") as handle:
    json.dump({"value": answer}, handle)
"""


class CandidateFailed(Exception):
    """The candidate raised, crashed or ended without an answer."""


def run_candidate(program_path, timeout=60):
    """Return the candidate's value(), computed in a child process with captured output."""
    scratch = _tempfile.mkdtemp(prefix="judge-")
    answer = _os.path.join(scratch, "answer.json")
    done = _subprocess.run([_sys.executable, "-c", _CHILD, program_path, answer],
                           capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise CandidateFailed(lines[-1] if lines else f"the program exited with status {done.returncode}")
    if not _os.path.exists(answer):
        raise CandidateFailed("the program ended without an answer")
    with open(answer) as handle:
        return _json.load(handle)["value"]
'''

IMPORT_IN_PROCESS = '''
import importlib.util as _importlib_util


def load_program(program_path):
    """Import the candidate file as a fresh module (in this process)."""
    spec = _importlib_util.spec_from_file_location("program", program_path)
    module = _importlib_util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
'''

# ---- ASI-Evolve ----------------------------------------------------------------------------------

ASI_EVAL_SH = r'''# Evaluate steps/step_N/code (ASI-Evolve: run with bash from the step directory, no argument).
set -e
set -o pipefail
STEP_DIR="$(pwd)"
SRC_CODE_FILE="${STEP_DIR}/code"
RESULT_JSON="${STEP_DIR}/results.json"
LOG_FILE="${STEP_DIR}/eval.log"
EVALUATOR_PY="../../evaluator.py"

handle_error() {
    cat > "$RESULT_JSON" << 'EOF'
{"success": false, "eval_score": 0.0, "validity": 0.0,
 "temp": {"error": "Evaluation failed. See eval.log for details."}}
EOF
    exit 0
}
trap 'if [ $? -ne 0 ]; then handle_error; fi' EXIT

if [ ! -s "$SRC_CODE_FILE" ]; then
    echo "error: no code to evaluate in $SRC_CODE_FILE" >> "$LOG_FILE"
    exit 1
fi
[ -f "$EVALUATOR_PY" ] || { echo "error: $EVALUATOR_PY not found" >> "$LOG_FILE"; exit 1; }
python3 "$EVALUATOR_PY" "$SRC_CODE_FILE" "$RESULT_JSON" >> "$LOG_FILE" 2>&1
python3 -c "import json, sys; print('evaluation finished: eval_score', json.load(open(sys.argv[1]))['eval_score'])" \
    "$RESULT_JSON" >> "$LOG_FILE"
exit 0
'''

ASI_EVALUATOR = RUN_IN_SUBPROCESS + '''

import math
import time


def evaluate(code_file):
    """Return the result dict for the candidate in code_file (zeros and an error when it fails)."""
    started = time.time()
    try:
        value = float(run_candidate(code_file))
    except Exception as exc:
        return {"value": 0.0, "validity": 0.0, "combined_score": 0.0, "eval_time": time.time() - started,
                "error": f"{type(exc).__name__}: {exc}"}
    if not math.isfinite(value) or value < 0:
        return {"value": value, "validity": 0.0, "combined_score": 0.0, "eval_time": time.time() - started,
                "error": f"value {value} is not a finite number >= 0"}
    return {"value": value, "validity": 1.0, "combined_score": value, "eval_time": time.time() - started}


if __name__ == "__main__":
    if len(_sys.argv) != 3:
        print("usage: evaluator.py CODE_FILE OUTPUT_JSON")
        _sys.exit(1)
    result = evaluate(_sys.argv[1])
    result["success"] = result["validity"] > 0
    result["score"] = result["combined_score"]
    result["eval_score"] = result["combined_score"]
    with open(_sys.argv[2], "w") as handle:
        _json.dump(result, handle, indent=2)
    print(f"eval_score={result['eval_score']}")
'''


def write_asi_experiment(folder: Path, eval_sh: str = ASI_EVAL_SH, evaluator: str = ASI_EVALUATOR) -> Path:
    """Write an ASI-Evolve experiment's eval.sh (not executable) and evaluator.py; return eval.sh."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "eval.sh"
    script.write_text(eval_sh)
    script.chmod(0o644)  # the reference runs `bash eval.sh`: no executable bit
    (folder / "evaluator.py").write_text(evaluator)
    return script


# ---- OpenEvolve ----------------------------------------------------------------------------------

OPENEVOLVE_DICT = IMPORT_IN_PROCESS + '''

def evaluate(program_path):
    """OpenEvolve evaluator returning a metrics dict; failures are zeroed metrics with an error."""
    try:
        value = float(load_program(program_path).value())
    except Exception as exc:
        return {"combined_score": 0.0, "error": f"{type(exc).__name__}: {exc}"}
    if value < 0:
        return {"validity": 0.0, "combined_score": 0.0, "value": value}
    return {"validity": 1.0, "combined_score": value, "value": value}
'''

OPENEVOLVE_RESULT = IMPORT_IN_PROCESS + '''
from openevolve.evaluation_result import EvaluationResult


def evaluate(program_path):
    """OpenEvolve evaluator returning an EvaluationResult with artifacts."""
    try:
        value = float(load_program(program_path).value())
    except Exception as exc:
        return EvaluationResult(metrics={"combined_score": 0.0, "error": 0.0},
                                artifacts={"stderr": f"{type(exc).__name__}: {exc}", "failure_stage": "run"})
    if value < 0:
        return EvaluationResult(metrics={"combined_score": 0.0, "validity": 0.0},
                                artifacts={"failure_stage": "validation", "suggestion": "return a value >= 0"})
    return EvaluationResult(metrics={"combined_score": value, "value": value},
                            artifacts={"note": f"value() returned {value}", "raw": b"\\x00\\x01"})
'''

# Stage 1 reports v (a negative v is invalid), stage 2 v + 0.1, stage 3 combined_score 10 v: with
# thresholds (0.5, 0.75) a value below 0.5 stops after stage 1, one in [0.5, 0.7) after stage 2
# (merged mean v + 0.05). Stage 2 raises for v == 0.66.
OPENEVOLVE_CASCADE = IMPORT_IN_PROCESS + '''
from openevolve.evaluation_result import EvaluationResult


def _value(program_path):
    return float(load_program(program_path).value())


def evaluate_stage1(program_path):
    try:
        value = _value(program_path)
    except Exception as exc:
        return {"validity": 0.0, "combined_score": 0.0, "error": str(exc)}
    if value < 0:
        return {"validity": 0.0, "error": f"value {value} is negative"}
    return {"stage1": value}


def evaluate_stage2(program_path):
    value = _value(program_path)
    if value == 0.66:
        raise RuntimeError("stage 2 blew up")
    return EvaluationResult(metrics={"stage2": value + 0.1}, artifacts={"stage2_note": "ran stage 2"})


def evaluate_stage3(program_path):
    return {"combined_score": 10 * _value(program_path)}


def evaluate(program_path):
    return {"combined_score": -1.0, "direct": 1.0}
'''


def openevolve_fitness(metrics: dict) -> float:
    """OpenEvolve's fitness, computed independently: combined_score, else the mean of numeric non-bool values."""
    if isinstance(metrics.get("combined_score"), (int, float)) and not isinstance(metrics["combined_score"], bool):
        return float(metrics["combined_score"])
    numbers = [float(v) for v in metrics.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sum(numbers) / len(numbers)


def openevolve_cascade_expectation(value: float, thresholds: tuple[float, ...] = (0.5, 0.75)) -> tuple[int, float]:
    """OpenEvolve's cascade on OPENEVOLVE_CASCADE, computed from its rules: (stage reached, fitness)."""
    merged = {"stage1": value}
    if openevolve_fitness(merged) < thresholds[0]:
        return 1, openevolve_fitness(merged)
    merged["stage2"] = value + 0.1
    if openevolve_fitness(merged) < thresholds[1]:
        return 2, openevolve_fitness(merged)
    merged["combined_score"] = 10 * value
    return 3, openevolve_fitness(merged)


# ---- ShinkaEvolve --------------------------------------------------------------------------------

SHINKA_WRAPPED = '''"""ShinkaEvolve evaluate.py: run the candidate's value() once through run_shinka_eval."""
import argparse
import os

from shinka.core import run_shinka_eval


def validate(result):
    value = float(result)
    if value < 0:
        return False, f"value {value} is negative"
    return True, "the value is valid"


def aggregate(results):
    value = float(results[0])
    return {"combined_score": value, "public": {"value": value},
            "private": {"secret_value": value * 2}, "text_feedback": f"value() returned {value}"}


def main(program_path, results_dir):
    os.makedirs(results_dir, exist_ok=True)
    metrics, correct, error = run_shinka_eval(
        program_path=program_path, results_dir=results_dir, experiment_fn_name="value", num_runs=1,
        get_experiment_kwargs=lambda index: {}, validate_fn=validate, aggregate_metrics_fn=aggregate)
    print(f"correct={correct} error={error}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--program_path", type=str, default="initial.py")
    parser.add_argument("--results_dir", type=str, default="results")
    args = parser.parse_args()
    main(args.program_path, args.results_dir)
'''

SHINKA_SELF = RUN_IN_SUBPROCESS + '''
"""ShinkaEvolve evaluate.py that writes metrics.json and correct.json itself (no run_shinka_eval)."""
import argparse


def write(results_dir, metrics, correct, error):
    _os.makedirs(results_dir, exist_ok=True)
    with open(_os.path.join(results_dir, "metrics.json"), "w") as handle:
        _json.dump(metrics, handle, indent=4)
    with open(_os.path.join(results_dir, "correct.json"), "w") as handle:
        _json.dump({"correct": correct, "error": error}, handle, indent=4)


def main(program_path, results_dir):
    try:
        value = float(run_candidate(program_path))
    except Exception as exc:
        write(results_dir, {"combined_score": 0.0, "public": {}, "private": {}}, False, str(exc))
        return
    correct = value >= 0
    write(results_dir, {"combined_score": value if correct else 0.0, "public": {"value": value},
                        "private": {"cost": 0.5}, "text_feedback": ["checked value()", f"got {value}"]},
          correct, None if correct else f"value {value} is negative")
    with open(_os.path.join(results_dir, "extra.txt"), "w") as handle:
        handle.write("details for humans")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--program_path", type=str, default="initial.py")
    parser.add_argument("--results_dir", type=str, default="results")
    args = parser.parse_args()
    main(args.program_path, args.results_dir)
'''

# ---- native --------------------------------------------------------------------------------------

NATIVE_SCRIPT = '#!/bin/sh\n# evolveflow contract (a): called with the candidate path, prints one JSON line.\n' \
                'exec python3 "$(dirname "$0")/judge.py" "$1"\n'

NATIVE_JUDGE = RUN_IN_SUBPROCESS + '''

try:
    value = float(run_candidate(_sys.argv[1]))
except Exception as exc:
    print(_json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    _sys.exit(1)
if value < 0:
    print(_json.dumps({"score": 0.0, "valid": False, "error": f"value {value} is negative"}))
else:
    print(_json.dumps({"score": value, "metrics": {"value": value}}))
'''

# Like experiments/circle_packing/eval.sh + evaluator.py main(): the candidate runs inside the
# judge's own process, its print()s redirected to stderr.
NATIVE_JUDGE_IN_PROCESS = IMPORT_IN_PROCESS + '''
import contextlib
import json
import sys

try:
    with contextlib.redirect_stdout(sys.stderr):
        value = float(load_program(sys.argv[1]).value())
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    sys.exit(1)
print(json.dumps({"score": value, "metrics": {"value": value}}))
'''

NATIVE_PYTHON = IMPORT_IN_PROCESS + '''

def evaluate(program_path):
    """evolveflow contract (b): return {"score", "metrics"}; an exception is the candidate's failure."""
    value = float(load_program(program_path).value())
    if value < 0:
        return {"score": 0.0, "valid": False, "error": f"value {value} is negative"}
    return {"score": value, "metrics": {"value": value}}
'''


def write_native_script(folder: Path, judge: str = NATIVE_JUDGE) -> Path:
    """Write an executable eval.sh and its judge.py; return eval.sh."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "judge.py").write_text(judge)
    script = folder / "eval.sh"
    script.write_text(NATIVE_SCRIPT)
    script.chmod(0o755)
    return script


def write_file(folder: Path, name: str, text: str) -> Path:
    """Write text (dedented) as folder/name and return the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def program(value: float | str) -> str:
    """Return a candidate whose value() returns value (a literal, or an expression such as '1 / 0')."""
    return f"def value():\n    return {value}\n"


# ---- a hostile candidate -------------------------------------------------------------------------

FORGED_SCORE = 99.0
HONEST_VALUE = 1.25
_FORGED = {"score": FORGED_SCORE, "eval_score": FORGED_SCORE, "combined_score": FORGED_SCORE,
           "success": True, "correct": True, "validity": 1.0}


def forging_program(files: bool, prints: bool, exit_after: str | None = None) -> str:
    """Return a candidate that forges results (files in its cwd, JSON score lines) then behaves honestly.

    exit_after: None (return normally), "os._exit" or "sys.exit": end its process with status 0
    right after forging, before any evaluator can write an honest result.
    """
    forged = json.dumps(_FORGED)
    lines = ["import json, os, sys", f"FORGED = {forged!r}"]
    if files:
        lines += [
            "for name in ('results.json', '.evolveflow-result.json', 'metrics.json'):",
            "    with open(name, 'w') as handle:",
            "        handle.write(FORGED)",
            "os.makedirs('results', exist_ok=True)",
            "for folder in ('.', 'results'):",
            "    with open(os.path.join(folder, 'correct.json'), 'w') as handle:",
            "        json.dump({'correct': True, 'error': None}, handle)",
            "with open('results/metrics.json', 'w') as handle:",
            f"    json.dump({{'combined_score': {FORGED_SCORE}, 'public': {{}}, 'private': {{}}}}, handle)",
        ]
    if prints:
        lines += ["print(FORGED, flush=True)", "os.write(1, (FORGED + '\\n').encode())",
                  "os.write(2, (FORGED + '\\n').encode())"]
    if exit_after == "os._exit":
        lines.append("os._exit(0)")
    elif exit_after == "sys.exit":
        lines.append("sys.exit(0)")
    lines += ["", "", "def value():", f"    return {HONEST_VALUE}", ""]
    return "\n".join(lines)


def lingering_forger_program(seconds: float = 10.0) -> str:
    """Return a candidate that leaves a detached process rewriting forged result files in its cwd.

    The child detaches (new session, double fork, stdio on /dev/null) so an evaluator that runs
    the candidate with subprocess.run(capture_output=True) does not wait for it; the candidate
    returns its honest value only once the child runs. The child rewrites results.json,
    results/metrics.json and results/correct.json (atomically, in a loop) until it is killed.
    """
    return f'''import json, os, time

FORGED = {_FORGED!r}


def _linger():
    ready_read, ready_write = os.pipe()
    if os.fork():
        os.close(ready_write)
        os.read(ready_read, 1)  # the forger runs
        return
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.write(ready_write, b"x")
    here = os.getcwd()
    files = [("results.json", FORGED), ("results/metrics.json", {{"combined_score": {FORGED_SCORE}}}),
             ("results/correct.json", {{"correct": True, "error": None}})]
    end, count = time.time() + {seconds}, 0
    try:  # never return into the code that imported the candidate (it may hold a result channel)
        while time.time() < end:
            for name, data in files:
                path = os.path.join(here, name)
                if os.path.isdir(os.path.dirname(path)):
                    count += 1
                    scratch = f"{{path}}.{{os.getpid()}}.{{count}}"
                    with open(scratch, "w") as handle:
                        json.dump(data, handle)
                    os.replace(scratch, path)
    finally:
        os._exit(0)


_linger()


def value():
    return {HONEST_VALUE}
'''


DEMO_FORGERY = f'''import json as _json, os as _os
for _name in (".evolveflow-result.json", "results.json"):
    with open(_name, "w") as _handle:
        _json.dump({{"score": {FORGED_SCORE}, "eval_score": {FORGED_SCORE}, "combined_score": {FORGED_SCORE}}}, _handle)
_os.write(1, b'{{"score": {FORGED_SCORE}}}\\n')
_os._exit(0)
'''


def with_demo_forgery(program_text: str) -> str:
    """Return the program with DEMO_FORGERY as the first lines of its EVOLVE-BLOCK."""
    marker = "# EVOLVE-BLOCK-START\n"
    assert program_text.count(marker) == 1
    return program_text.replace(marker, marker + DEMO_FORGERY)
