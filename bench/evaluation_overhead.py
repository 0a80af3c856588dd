"""Cost of one evaluation per evaluator contract and sandbox level, with a trivial evaluator.

Prints a table: contract x level -> median / p90 wall time of run_evaluation (ms) over N runs, and
the median of a bare `python -c pass` for reference (the floor of any Python evaluator). Runs
interleaved (each round evaluates every cell once) so machine noise hits all cells alike.

    .venv/bin/python bench/evaluation_overhead.py            # 20 runs per cell
    .venv/bin/python bench/evaluation_overhead.py --runs 50
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evolveflow.evaluation import EvaluatorSpec, bwrap_problem, run_evaluation  # noqa: E402
from evolveflow.records import Outcome  # noqa: E402

PROGRAM = "def value():\n    return 1.5\n"
LOAD = ("import importlib.util\n"
        "def load(path):\n"
        "    spec = importlib.util.spec_from_file_location('candidate', path)\n"
        "    module = importlib.util.module_from_spec(spec)\n"
        "    spec.loader.exec_module(module)\n"
        "    return module\n")
EVALUATORS = {
    "native script": ("eval.sh", "#!/bin/sh\nexec python3 -c \"import runpy,json,sys; "
                      "m=runpy.run_path(sys.argv[1]); print(json.dumps({'score': m['value']()}))\" \"$1\"\n"),
    "native python": ("evaluator.py", LOAD + "def evaluate(path):\n    return {'score': load(path).value()}\n"),
    "openevolve": ("evaluator.py", LOAD + "def evaluate(path):\n    return {'combined_score': load(path).value()}\n"),
    "shinka": ("evaluate.py", "import argparse\nfrom shinka.core import run_shinka_eval\n"
               "if __name__ == '__main__':\n    p = argparse.ArgumentParser(); p.add_argument('--program_path');"
               " p.add_argument('--results_dir'); a = p.parse_args()\n"
               "    run_shinka_eval(a.program_path, a.results_dir, 'value', 1, get_experiment_kwargs=lambda i: {},"
               " aggregate_metrics_fn=lambda r: {'combined_score': r[0]})\n"),
    "asi": ("eval.sh", "python3 ../../evaluator.py code results.json\n"),
}
ASI_EVALUATOR = (LOAD.replace("spec_from_file_location('candidate', path)",
                              "spec_from_file_location('candidate', path, loader=__import__('importlib.machinery')"
                              ".machinery.SourceFileLoader('candidate', path))")
                 + "import json, sys\njson.dump({'eval_score': load(sys.argv[1]).value(), 'success': True},"
                 " open(sys.argv[2], 'w'))\n")


def make_spec(root: Path, name: str, level: str) -> EvaluatorSpec:
    folder = root / name.replace(" ", "_")
    folder.mkdir(exist_ok=True)
    filename, text = EVALUATORS[name]
    path = folder / filename
    path.write_text(text)
    path.chmod(0o755)
    if name == "asi":
        (folder / "evaluator.py").write_text(ASI_EVALUATOR)
    return EvaluatorSpec(path=path, sandbox=level, contract=name.split()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    levels = ["process"] + (["bwrap"] if bwrap_problem() is None else [])
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        specs = {(name, level): make_spec(Path(tmp) / level, name, level)
                 for level in levels for name in EVALUATORS if (Path(tmp) / level).mkdir(exist_ok=True) or True}
        floor = []
        for _ in range(args.runs):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            floor.append(time.perf_counter() - started)
            for key, spec in specs.items():
                started = time.perf_counter()
                result = run_evaluation(PROGRAM, spec, step=1)
                times.setdefault(key, []).append(time.perf_counter() - started)
                if result.outcome != Outcome.OK or result.score != 1.5:
                    print(f"{key}: unexpected {result.outcome} {result.score} {result.error}", file=sys.stderr)
                    return 1
    print(f"{'contract':<15} {'level':<8} {'median ms':>10} {'p90 ms':>8}")
    for (name, level), values in times.items():
        values.sort()
        print(f"{name:<15} {level:<8} {statistics.median(values) * 1000:>10.1f} "
              f"{values[int(0.9 * (len(values) - 1))] * 1000:>8.1f}")
    print(f"{'python -c pass':<15} {'-':<8} {statistics.median(floor) * 1000:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
