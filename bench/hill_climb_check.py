"""Check that the offline mutator can climb the circle-packing demo: a 30-round hill climb per seed."""
from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import tempfile
import time
from pathlib import Path

from evolveflow.mutation import NothingToMutate, propose_mutation

EXPERIMENT_DIR = Path(__file__).resolve().parent.parent / "experiments" / "circle_packing"


def load_evaluator():
    """Import the experiment's evaluator.py by path (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("circle_packing_evaluator", EXPERIMENT_DIR / "evaluator.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def apply_edits(code: str, edits) -> str:
    """Apply (search, replace) pairs in order, as the framework does."""
    for search, replace in edits:
        if code.count(search) != 1:
            raise RuntimeError(f"edit search text does not occur exactly once: {search!r}")
        code = code.replace(search, replace, 1)
    return code


def hill_climb(seed: int, rounds: int, evaluator, workdir: Path) -> dict:
    """Run one seeded hill climb from the initial program; return scores and timings."""
    rng = random.Random(seed)
    best_code = (EXPERIMENT_DIR / "initial_program.py").read_text()
    candidate_path = workdir / f"candidate_seed{seed}.py"
    candidate_path.write_text(best_code)
    initial = best = evaluator.evaluate(str(candidate_path))["score"]
    accepted, invalid, eval_seconds = 0, 0, []
    for _ in range(rounds):
        try:
            mutation = propose_mutation(best_code, rng)
        except NothingToMutate:
            break
        child = apply_edits(best_code, mutation.edits)
        candidate_path.write_text(child)
        started = time.perf_counter()
        try:
            score = evaluator.evaluate(str(candidate_path))["score"]
        except Exception:  # an invalid child is simply not kept, as in the real search
            invalid += 1
            continue
        finally:
            eval_seconds.append(time.perf_counter() - started)
        if score > best:
            best, best_code, accepted = score, child, accepted + 1
    return {
        "seed": seed, "initial": initial, "best": best, "accepted": accepted,
        "invalid": invalid, "mean_eval_s": sum(eval_seconds) / max(len(eval_seconds), 1),
    }


def main(argv: list[str]) -> int:
    """Print a table of initial and best scores for each seed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5, help="run seeds 0..N-1")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    evaluator = load_evaluator()
    print(f"{'seed':>4} {'initial':>9} {'best':>9} {'gain':>8} {'kept':>5} {'invalid':>7} {'eval ms':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            row = hill_climb(seed, args.rounds, evaluator, Path(tmp))
            print(f"{row['seed']:>4} {row['initial']:>9.4f} {row['best']:>9.4f} "
                  f"{row['best'] - row['initial']:>+8.4f} {row['accepted']:>5} {row['invalid']:>7} "
                  f"{row['mean_eval_s'] * 1000:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
