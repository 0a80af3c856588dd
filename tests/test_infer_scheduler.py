"""Tests of the infer_scheduler experiment: its simulator, its noisy evaluator and its search headroom."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "infer_scheduler"
SEEDS = (0, 1, 2, 3, 4)


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


evaluator = _load("infer_scheduler_evaluator_under_test", EXPERIMENT / "evaluator.py")
sim = evaluator.simulator

# Policies as candidate files; every one is a complete program the evaluator imports by path.
POLICIES = {
    "shortest_first": """
        def schedule(queue, gpu_mem_free_gb):
            budget = int(gpu_mem_free_gb * 1024)
            selected, used = [], 0
            for req in sorted(queue, key=lambda r: r["seq_len"]):
                if used + req["seq_len"] <= budget:
                    selected.append(req["id"])
                    used += req["seq_len"]
            return selected
    """,
    "starves_long_prompts": """
        def schedule(queue, gpu_mem_free_gb):
            budget = int(gpu_mem_free_gb * 1024)
            selected, used = [], 0
            for req in queue:
                if req["seq_len"] <= 1024 and used + req["seq_len"] <= budget:
                    selected.append(req["id"])
                    used += req["seq_len"]
            return selected
    """,
    # Greedy for batch size: holds requests until 16 are queued or the oldest waited 400 ms.
    "waits_for_big_batches": """
        def schedule(queue, gpu_mem_free_gb):
            if len(queue) < 16 and max(r["wait_ms"] for r in queue) < 400:
                return []
            budget = int(gpu_mem_free_gb * 1024)
            selected, used = [], 0
            for req in queue:
                if used + req["seq_len"] <= budget:
                    selected.append(req["id"])
                    used += req["seq_len"]
            return selected
    """,
    # Without the timeout, the last few requests of the run wait forever.
    "waits_for_full_batches_only": """
        def schedule(queue, gpu_mem_free_gb):
            if len(queue) < 16:
                return []
            budget = int(gpu_mem_free_gb * 1024)
            selected, used = [], 0
            for req in queue:
                if used + req["seq_len"] <= budget:
                    selected.append(req["id"])
                    used += req["seq_len"]
            return selected
    """,
    # Admits in groups once 40 % of the cache is free, oldest first, keeping 3 % headroom:
    # fewer prefill stalls and no thrashing at the memory edge.
    "grouped_admission": """
        CACHE_TOKENS = 16 * 1024

        def schedule(queue, gpu_mem_free_gb):
            free = int(gpu_mem_free_gb * 1024)
            if free < 0.4 * CACHE_TOKENS:
                return []
            budget = free - int(0.03 * CACHE_TOKENS)
            selected, used = [], 0
            for req in sorted(queue, key=lambda r: r["wait_ms"], reverse=True):
                if used + req["seq_len"] <= budget:
                    selected.append(req["id"])
                    used += req["seq_len"]
            return selected
    """,
    "unknown_id": """
        def schedule(queue, gpu_mem_free_gb):
            return [max(r["id"] for r in queue) + 10_000]
    """,
    "duplicate_id": """
        def schedule(queue, gpu_mem_free_gb):
            return [queue[0]["id"], queue[0]["id"]]
    """,
    "over_budget": """
        def schedule(queue, gpu_mem_free_gb):
            return [r["id"] for r in queue]
    """,
    "returns_dict": """
        def schedule(queue, gpu_mem_free_gb):
            return {r["id"]: True for r in queue}
    """,
    "raises": """
        def schedule(queue, gpu_mem_free_gb):
            return [queue[0]["request_id"]]
    """,
    "no_schedule": """
        def admit(queue, gpu_mem_free_gb):
            return []
    """,
}


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("policies")
    paths = {"fcfs": EXPERIMENT / "initial_program.py"}
    for name, source in POLICIES.items():
        paths[name] = folder / f"{name}.py"
        paths[name].write_text(textwrap.dedent(source))
    return paths


@pytest.fixture(scope="module")
def fcfs_results(programs) -> dict[int, dict]:
    return {seed: evaluator.evaluate(str(programs["fcfs"]), seed=seed) for seed in SEEDS}


def _offered_tokens_per_s(seed: int) -> float:
    """Output tokens of the seed's workload over its arrival span at the base load."""
    requests = sim.generate_workload(seed)
    span_ms = requests[-1].arrival_ms - requests[0].arrival_ms
    return sum(r.output_len for r in requests) / span_ms * 1000


# --- the simulator's documented model ------------------------------------------------------


def test_single_request_latency_follows_the_documented_cost_model():
    server = sim.ServerModel()
    request = sim.Request(id=0, arrival_ms=0.0, prompt_len=100, output_len=5, priority=2)
    run = sim.simulate(lambda queue, free: [r["id"] for r in queue], [request], server)
    decode = sum(server.step_overhead_ms + server.per_sequence_ms + server.per_context_token_ms * (100 + i)
                 for i in range(5))
    prefill = server.prefill_per_token_ms * 100 + server.prefill_overhead_ms
    assert run.latencies_ms[0] == pytest.approx(decode + prefill)
    assert run.output_tokens == 5 and run.preemptions == 0


def test_scheduler_sees_memory_at_1024_tokens_per_gb():
    seen = []

    def recording(queue, gpu_mem_free_gb):
        seen.append((gpu_mem_free_gb, [dict(r) for r in queue]))
        return [r["id"] for r in queue]

    requests = [sim.Request(0, 0.0, 300, 3, 1), sim.Request(1, 1.0, 200, 3, 0)]
    sim.simulate(recording, requests)
    first_free, first_queue = seen[0]
    assert first_free == sim.ServerModel().kv_capacity_gb
    assert first_queue == [{"id": 0, "seq_len": 300, "priority": 1, "wait_ms": 0.0}]
    # The second call comes one step later, with request 0's prompt and first token in the cache.
    second_free, second_queue = seen[1]
    assert second_free == pytest.approx(sim.ServerModel().kv_capacity_gb - 301 / sim.TOKENS_PER_GB)
    assert second_queue[0]["id"] == 1 and second_queue[0]["wait_ms"] > 0


def test_filling_memory_to_the_brim_preempts_the_newest_request_which_restarts():
    server = sim.ServerModel(kv_capacity_gb=1.0)
    requests = [sim.Request(0, 0.0, 510, 10, 1), sim.Request(1, 0.0, 510, 10, 1)]


    def first_fit(queue, gpu_mem_free_gb):
        budget, chosen = int(gpu_mem_free_gb * 1024), []
        for r in queue:
            if r["seq_len"] <= budget:
                chosen.append(r["id"])
                budget -= r["seq_len"]
        return chosen

    run = sim.simulate(first_fit, requests, server)
    assert run.preemptions >= 1 and run.wasted_tokens >= 1
    assert run.completed == 2 and run.output_tokens == 20  # discarded tokens are not counted
    assert run.latencies_ms[1] > run.latencies_ms[0]


def test_workload_is_seeded_heavy_tailed_and_within_limits():
    spec = sim.WorkloadSpec()
    first, again, other = sim.generate_workload(5), sim.generate_workload(5), sim.generate_workload(6)
    assert first == again and first != other
    assert len(first) == spec.num_requests
    prompts = sorted(r.prompt_len for r in first)
    assert all(spec.min_prompt <= p <= spec.max_prompt for p in prompts)
    assert all(spec.min_output <= r.output_len <= spec.max_output for r in first)
    # Heavy tail: the longest prompts are many times the median.
    assert prompts[int(0.99 * len(prompts))] > 5 * statistics.median(prompts)
    assert {r.priority for r in first} == {0, 1, 2}


# --- the baseline and the noisy metric -----------------------------------------------------


def test_fcfs_baseline_is_feasible_and_its_throughput_is_measured(fcfs_results):
    for seed, result in fcfs_results.items():
        metrics = result["metrics"]
        assert metrics["feasible"] is True and "error" not in result
        assert metrics["seed"] == seed
        assert metrics["completed"] == sim.WorkloadSpec().num_requests and metrics["unfinished"] == 0
        assert 0 < metrics["p50_latency_ms"] < metrics["p99_latency_ms"] < evaluator.LATENCY_BUDGET_MS
        assert metrics["base_p99_latency_ms"] < evaluator.LATENCY_BUDGET_MS
        assert 1.0 <= metrics["load_factor"] < evaluator.MAX_LOAD_FACTOR
        assert result["score"] == metrics["tokens_per_s"] > 0
        # A policy that keeps up serves what is offered, so the score tracks the sustained load.
        offered = _offered_tokens_per_s(seed)
        assert 0.95 * offered < metrics["base_tokens_per_s"] <= offered
        assert 0.95 * offered * metrics["load_factor"] < result["score"] <= offered * metrics["load_factor"]


def test_metric_is_deterministic_per_seed_and_noisy_across_seeds(programs, fcfs_results):
    assert evaluator.evaluate(str(programs["fcfs"]), seed=2) == fcfs_results[2]
    scores = [result["score"] for result in fcfs_results.values()]
    assert statistics.pstdev(scores) / statistics.mean(scores) > 0.02


def test_without_a_seed_each_evaluation_draws_its_own(programs):
    seeds = {evaluator.evaluate(str(programs["fcfs"]))["metrics"]["seed"] for _ in range(3)}
    assert len(seeds) == 3


def test_shortest_first_gets_a_different_score(programs, fcfs_results):
    result = evaluator.evaluate(str(programs["shortest_first"]), seed=0)
    assert result["metrics"]["feasible"] is True
    assert result["score"] != fcfs_results[0]["score"]


def test_policy_that_starves_long_prompts_is_infeasible(programs):
    result = evaluator.evaluate(str(programs["starves_long_prompts"]), seed=1)
    assert result["score"] is None
    assert result["error"].startswith("infeasible: P99 latency >= 5000 ms, over the 500 ms budget")
    assert "requests were still queued, the oldest for" in result["error"]
    assert result["metrics"]["feasible"] is False and result["metrics"]["stopped_early"] is True
    assert result["metrics"]["unfinished"] > 0
    assert result["metrics"]["p99_latency_ms"] is None  # unbounded, not a made-up number


def test_policy_that_leaves_requests_behind_is_infeasible(programs):
    result = evaluator.evaluate(str(programs["waits_for_full_batches_only"]), seed=0)
    unfinished = result["metrics"]["unfinished"]
    assert result["score"] is None and result["metrics"]["feasible"] is False
    assert 0 < unfinished < 16
    assert result["error"].startswith(f"infeasible: {unfinished} of 1500 requests never finished")
    assert "every request must complete" in result["error"]


def test_policy_that_waits_for_big_batches_breaks_the_p99_budget(programs):
    for seed in (0, 3):
        result = evaluator.evaluate(str(programs["waits_for_big_batches"]), seed=seed)
        p99 = result["metrics"]["p99_latency_ms"]
        assert result["score"] is None and result["metrics"]["feasible"] is False
        assert p99 >= evaluator.LATENCY_BUDGET_MS
        base_rate = sim.WorkloadSpec().mean_rate_per_s
        assert result["error"] == (f"infeasible: P99 latency {p99:.1f} ms >= 500 ms budget "
                                   f"at the base load of {base_rate:.0f} req/s")


def test_a_better_policy_exists(programs, fcfs_results):
    better = {seed: evaluator.evaluate(str(programs["grouped_admission"]), seed=seed) for seed in SEEDS}
    assert all(result["metrics"]["feasible"] for result in better.values())
    wins = sum(better[seed]["score"] > fcfs_results[seed]["score"] for seed in SEEDS)
    gain = statistics.mean(r["score"] for r in better.values()) / statistics.mean(
        r["score"] for r in fcfs_results.values())
    assert wins >= 4 and gain > 1.1


# --- invalid candidates fail loudly ----------------------------------------------------------


@pytest.mark.parametrize("name, error, message", [
    ("unknown_id", sim.UnknownRequestIdError, "not in the queue"),
    ("duplicate_id", sim.DuplicateRequestIdError, "twice"),
    ("over_budget", sim.MemoryOvercommitError, r"admitted \d+ prompt tokens but only \d+ tokens"),
    ("returns_dict", sim.InvalidScheduleError, "must return a list of request ids, got dict"),
    ("raises", sim.SchedulerCrashedError, "schedule\\(\\) raised KeyError: 'request_id'"),
    ("no_schedule", evaluator.CandidateInterfaceError, "must define a function schedule"),
])
def test_invalid_candidates_raise_clear_errors(programs, name, error, message):
    with pytest.raises(error, match=message):
        evaluator.evaluate(str(programs[name]), seed=0)


def test_invalid_id_types_are_rejected():
    waiting = {3: sim.Request(3, 0.0, 10, 2, 2)}
    for bad in ([True], ["3"], [3.0]):
        with pytest.raises(sim.InvalidScheduleError, match="ids must be the int 'id'"):
            sim.validate_admission(bad, waiting, free_tokens=100, now_ms=0.0)
    assert sim.validate_admission((3,), waiting, free_tokens=10, now_ms=0.0) == [3]


def test_hopeless_runs_stop_early_instead_of_grinding_on():
    never = lambda queue, free: []
    run = sim.simulate(never, sim.generate_workload(0), stop_when_p99_reaches_ms=500.0)
    assert run.stopped_early and run.completed == 0
    assert math.isinf(run.latency_percentile_ms(0.99))


# --- command line ---------------------------------------------------------------------------


def _run_eval_sh(program: Path, seed: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "EVOLVEFLOW_SEED": str(seed), "EVOLVEFLOW_PYTHON": sys.executable}
    return subprocess.run([str(EXPERIMENT / "eval.sh"), str(program)], capture_output=True, text=True,
                          env=env, timeout=60)


def test_eval_sh_prints_one_json_line_matching_evaluate(programs, fcfs_results):
    done = _run_eval_sh(programs["fcfs"], seed=3)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == fcfs_results[3]
    assert done.stdout.count("\n") == 1


def test_eval_sh_reports_infeasible_with_metrics_and_exit_1(programs):
    done = _run_eval_sh(programs["waits_for_big_batches"], seed=0)
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result["score"] is None and result["error"].startswith("infeasible: P99 latency")
    assert result["metrics"]["feasible"] is False and result["metrics"]["seed"] == 0


def test_eval_sh_reports_a_broken_candidate_as_an_error_line(programs):
    done = _run_eval_sh(programs["duplicate_id"], seed=0)
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"].startswith("DuplicateRequestIdError: schedule() returned id")
