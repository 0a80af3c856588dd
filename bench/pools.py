"""Two pools or one: rounds per minute with a slow LLM and a slow evaluator, same run, both ways.

A loopback LLM answers each call after --llm-s seconds (real edits from the offline mutator,
lessons from the offline analyst); the evaluator sleeps --eval-s seconds. The same search runs
with `evaluation.concurrency` unset (a round holds its worker slot from sampling to its node) and
set to the number of workers (proposals and evaluations are two pools), alternating --repeats
times; the table prints rounds per minute and the ratio.

    .venv/bin/python bench/pools.py [--rounds 24] [--workers 2] [--llm-s 0.5] [--eval-s 0.5] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evolveflow.scaffold import scaffold_experiment  # noqa: E402
from tests.support.openai_server import FakeOpenAIServer, offline_responder  # noqa: E402


def run(root: Path, args, base_url: str, pools: bool) -> float:
    from flows.search import evolve_search

    exp = scaffold_experiment("demo", root / "experiments")
    (exp / "evaluator.py").write_text((exp / "evaluator.py").read_text().replace(
        "def evaluate(program_path):", f"import time as _t\n\ndef evaluate(program_path):\n    _t.sleep({args.eval_s})", 1))
    concurrency = f", concurrency: {args.workers}" if pools else ""
    (exp / "config.yaml").write_text(
        f"evaluation: {{evaluator: evaluator.py, timeout_s: 60, sandbox: process{concurrency}}}\n"
        f"api: {{model: openai/stub, analyzer_model: openai/stub, api_base: '{base_url}', num_retries: 0}}\n"
        f"pipeline: {{parallel: {{num_workers: {args.workers}}}}}\ncognition: {{embeddings: false}}\n")
    started = time.monotonic()
    summary = evolve_search(experiment="demo", rounds=args.rounds, root=str(root))
    return summary["rounds_done"] / (time.monotonic() - started) * 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--llm-s", type=float, default=0.5)
    parser.add_argument("--eval-s", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "bench-not-a-secret")
    rates: dict[bool, list[float]] = {False: [], True: []}
    with FakeOpenAIServer(responder=offline_responder(delay_s=args.llm_s)) as srv:
        for _ in range(args.repeats):
            for pools in (False, True):
                with tempfile.TemporaryDirectory() as root:
                    rates[pools].append(run(Path(root), args, srv.base_url, pools))
    one, two = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"\n{args.rounds} rounds, {args.workers} workers, LLM {args.llm_s} s per call, evaluator {args.eval_s} s")
    print(f"{'setting':<52} {'rounds/min (median)':>20}")
    print(f"{'one pool (evaluation.concurrency unset)':<52} {one:>20.1f}")
    print(f"{'two pools (evaluation.concurrency = workers)':<52} {two:>20.1f}")
    print(f"{'ratio two/one':<52} {two / one:>20.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
