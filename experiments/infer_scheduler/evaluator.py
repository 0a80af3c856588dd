"""Scores a request-scheduling policy by the token throughput it sustains with P99 latency < 500 ms.

Usage: ``python evaluator.py PROGRAM_PATH`` prints one JSON line. The workload seed comes from
the environment variable ``EVOLVEFLOW_SEED`` if set, else it is random: the metric is noisy on
purpose, like a real load test.

How a candidate is scored (see simulator.py for the server model):

1. Draw a seeded workload (1500 requests, bursty Poisson arrivals, three traffic classes).
2. Run it at the base load. If P99 end-to-end latency >= 500 ms, or any request never finishes,
   the policy is infeasible: ``{"score": null, "error": "infeasible: ...", "metrics": {...}}``
   and exit status 1.
3. Otherwise speed up the same arrivals by a load factor in [1, 3] and bisect for the highest
   factor at which P99 stays under the budget. The score is the output tokens/s served at that
   load: the throughput this policy can sustain under the latency SLO. At any single load every
   policy that keeps up serves the same tokens/s, so only the sustainable load tells policies apart.

A candidate that raises, lacks ``schedule`` or returns an invalid admission raises an exception
with a precise message (exit status 1, ``{"error": "..."}``).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import math
import os
import random
import sys
import uuid
from pathlib import Path

LATENCY_BUDGET_MS = 500.0
MAX_LOAD_FACTOR = 3.0
BISECTION_STEPS = 7  # bracket ratio 3 ** (1 / 2**7): under 1 %, far below the seed-to-seed noise
# A hopeless base-load run is cut once P99 surely exceeds this, so starving policies stay cheap.
BASE_RUN_GIVE_UP_MS = 10 * LATENCY_BUDGET_MS
SEED_ENV = "EVOLVEFLOW_SEED"



class CandidateInterfaceError(Exception):
    """The candidate file does not provide a usable schedule(queue, gpu_mem_free_gb)."""


def _load_simulator():
    """Import simulator.py from this folder under a private name (works as script and as import)."""
    path = Path(__file__).resolve().with_name("simulator.py")
    # Named after its path: a generic "simulator" could clash with another experiment's module.
    name = f"infer_scheduler_simulator_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    # Registered before running so its dataclasses can resolve their own module.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


simulator = _load_simulator()


def load_schedule(program_path: str):
    """Import the candidate at program_path as a fresh module and return its schedule function."""
    path = Path(program_path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"candidate program not found: {path}")
    # A unique module name keeps two candidates evaluated in one process from sharing state.
    spec = importlib.util.spec_from_file_location(f"candidate_{uuid.uuid4().hex}", path)
    if spec is None or spec.loader is None:
        raise CandidateInterfaceError(f"cannot import candidate program from {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered so that dataclasses and pickling inside the candidate can find their module.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    schedule = getattr(module, "schedule", None)
    if not callable(schedule):
        raise CandidateInterfaceError(f"{path} must define a function schedule(queue, gpu_mem_free_gb)")
    return schedule


def _finite_or_none(value: float) -> float | None:
    """JSON has no infinity; an unbounded latency is reported as null."""
    return round(value, 3) if math.isfinite(value) else None


def describe_run(run, load_factor: float, base_rate_per_s: float) -> dict:
    """The metrics of one simulated run."""
    return {
        "tokens_per_s": round(run.tokens_per_s, 3),
        "p99_latency_ms": _finite_or_none(run.latency_percentile_ms(0.99)),
        "p50_latency_ms": _finite_or_none(run.latency_percentile_ms(0.50)),
        "completed": run.completed,
        "unfinished": len(run.unfinished_ids),
        "load_factor": round(load_factor, 4),
        "arrival_rate_per_s": round(base_rate_per_s * load_factor, 2),
        "stopped_early": run.stopped_early,
        "preemptions": run.preemptions,
        "wasted_tokens": run.wasted_tokens,
        "mean_batch_size": round(run.batch_size_sum / run.steps, 3) if run.steps else 0.0,
        "gpu_busy_fraction": round(run.busy_ms / (run.end_ms - run.first_arrival_ms), 4)
        if run.end_ms > run.first_arrival_ms else 0.0,
    }


def _infeasibility(run, base_rate_per_s: float) -> str | None:
    """Why the base-load run breaks the SLO, or None if it meets it."""
    where = f"at the base load of {base_rate_per_s:.0f} req/s"
    queued = (f"{run.waiting_at_end} requests were still queued, the oldest for "
              f"{run.oldest_wait_at_end_ms:.0f} ms" if run.waiting_at_end else "none was queued")
    if run.stopped_early:
        late = simulator.late_requests_for_violation(run.num_requests)
        return (f"infeasible: P99 latency >= {BASE_RUN_GIVE_UP_MS:.0f} ms, over the "
                f"{LATENCY_BUDGET_MS:.0f} ms budget {where} (run stopped once {late} of "
                f"{run.num_requests} requests were that late; {queued})")
    p99 = run.latency_percentile_ms(0.99)
    if run.unfinished_ids:
        p99_text = f"{p99:.1f} ms" if math.isfinite(p99) else "unbounded"
        give_up_s = simulator.ServerModel().give_up_after_ms / 1000
        return (f"infeasible: {len(run.unfinished_ids)} of {run.num_requests} requests never finished "
                f"{where}; every request must complete (P99 latency {p99_text}, budget "
                f"{LATENCY_BUDGET_MS:.0f} ms; the run gave up {give_up_s:.0f} s after the last arrival; "
                f"{queued})")
    if p99 >= LATENCY_BUDGET_MS:
        return f"infeasible: P99 latency {p99:.1f} ms >= {LATENCY_BUDGET_MS:.0f} ms budget {where}"
    return None


def _meets_budget(new_schedule, requests, load_factor: float):
    """Run at load_factor; return (P99 < budget with every request finished, the run)."""
    run = simulator.simulate(new_schedule(), simulator.at_load(requests, load_factor),
                             stop_when_p99_reaches_ms=LATENCY_BUDGET_MS)
    ok = (not run.stopped_early and not run.unfinished_ids
          and run.latency_percentile_ms(0.99) < LATENCY_BUDGET_MS)
    return ok, run


def find_sustained_load(new_schedule, requests) -> tuple[float, simulator.SimulationResult | None, int]:
    """Bisect (geometrically) for the highest load factor in [1, MAX] that keeps P99 in budget.

    new_schedule() returns a freshly imported schedule, so module state cannot leak between
    probes. Assumes the base load (factor 1) is feasible. P99 need not rise monotonically with
    load; the bisection then reports one crossing, always the same one for the same seed.
    Returns (factor, run at that factor or None if only the base load holds, number of probes).
    """
    low, high, best_run, probes = 1.0, MAX_LOAD_FACTOR, None, 0
    ok, run = _meets_budget(new_schedule, requests, high)
    probes += 1
    if ok:
        return high, run, probes
    for _ in range(BISECTION_STEPS):
        middle = math.sqrt(low * high)
        ok, run = _meets_budget(new_schedule, requests, middle)
        probes += 1
        if ok:
            low, best_run = middle, run
        else:
            high = middle
    return low, best_run, probes


def evaluate(program_path: str, seed: int | None = None) -> dict:
    """Score the candidate at program_path on the workload drawn from seed (random if None)."""
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    spec = simulator.WorkloadSpec()
    requests = simulator.generate_workload(seed, spec)
    base_run = simulator.simulate(load_schedule(program_path), requests,
                                  stop_when_p99_reaches_ms=BASE_RUN_GIVE_UP_MS)
    reason = _infeasibility(base_run, spec.mean_rate_per_s)
    if reason is not None:
        metrics = describe_run(base_run, 1.0, spec.mean_rate_per_s)
        metrics.update(feasible=False, seed=seed, base_p99_latency_ms=metrics["p99_latency_ms"])
        return {"score": None, "error": reason, "metrics": metrics}

    factor, sustained_run, probes = find_sustained_load(lambda: load_schedule(program_path), requests)
    metrics = describe_run(sustained_run or base_run, factor, spec.mean_rate_per_s)
    metrics.update(
        feasible=True,
        seed=seed,
        base_p99_latency_ms=_finite_or_none(base_run.latency_percentile_ms(0.99)),
        base_tokens_per_s=round(base_run.tokens_per_s, 3),
        simulations=1 + probes,
    )
    return {"score": metrics["tokens_per_s"], "metrics": metrics}


def _seed_from_env() -> int | None:
    """The seed in EVOLVEFLOW_SEED, None if unset; a clear error if it is not an integer."""
    raw = os.environ.get(SEED_ENV, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{SEED_ENV} must be an integer seed, got {raw!r}") from None


def main(argv: list[str]) -> int:
    """Command-line entry: evaluate argv[1], print one JSON line, return the exit status."""
    if len(argv) != 2:
        print(json.dumps({"error": "usage: evaluator.py PROGRAM_PATH  (seed from $EVOLVEFLOW_SEED)"}))
        return 2
    try:
        seed = _seed_from_env()
    except ValueError as error:
        print(json.dumps({"error": str(error)}))
        return 2
    # The candidate runs in this process. Move our stdout to a private descriptor and point fd 1 at
    # stderr before it is imported, so nothing it prints (even with os.write(1, ...)) reaches the
    # framework, and a candidate that exits early leaves no JSON line at all.
    sys.stdout.flush()
    result_fd = os.dup(1)
    os.dup2(2, 1)
    out = os.fdopen(result_fd, "w")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = evaluate(argv[1], seed)
    except Exception as error:  # every failure here is the candidate's; report it as one JSON line
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}), file=out, flush=True)
        return 1
    print(json.dumps(result, allow_nan=False), file=out, flush=True)
    return 0 if result["score"] is not None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
