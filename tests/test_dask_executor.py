"""evaluation.executor dask: evaluations on the workers of a real local Dask cluster (two worker processes)."""
from __future__ import annotations

import json
import os
import signal
import textwrap
import threading
import time

import pytest

from evolveflow.abort import Aborted
from evolveflow.evaluation import EvaluatorConfigError, EvaluatorSpec
from evolveflow.evaluation.executors import WORKER_METRIC, DaskExecutor
from evolveflow.records import Outcome

distributed = pytest.importorskip("distributed")

SECRET = "EVOLVEFLOW_TEST_WORKER_SECRET"
# Runs the candidate (which sets SCORE and SLEEP), then reports when it ran, where, and its environment.
EVALUATOR = '''
import os, runpy, time
def evaluate(program_path):
    ns = runpy.run_path(program_path)
    start = time.time()
    time.sleep(ns.get("SLEEP", 0))
    return {"score": float(ns.get("SCORE", 1.0)),
            "metrics": {"start": start, "end": time.time(), "env": sorted(os.environ), "home": os.environ["HOME"],
                        "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}}
'''


@pytest.fixture(scope="module")
def cluster():
    """A scheduler in this process and two worker processes, each with one GPU; a lost worker is not retried by Dask."""
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1",
                                      resources={"GPU": 1}, dashboard_address=None,
                                      env={SECRET: "not-for-evaluators", "CUDA_VISIBLE_DEVICES": "0"}) as local:
            yield local


@pytest.fixture
def spec(tmp_path) -> EvaluatorSpec:
    (tmp_path / "evaluator.py").write_text(textwrap.dedent(EVALUATOR))
    return EvaluatorSpec(path=tmp_path / "evaluator.py", timeout_s=60)


@pytest.fixture
def executor(cluster):
    dask_executor = DaskExecutor(cluster.scheduler_address, {"GPU": 1})
    yield dask_executor
    dask_executor.close()


def workers(cluster) -> dict[str, int]:
    """Returns the pid of each worker process, by address."""
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        return client.run(os.getpid)


def test_an_evaluation_runs_on_a_worker_inside_the_sandbox(cluster, executor, spec):
    assert executor.check(spec) in workers(cluster)
    result = executor.run("SCORE = 2.5\n", spec, seed=7, filename="program.py", step=1)
    assert result.outcome == Outcome.OK and result.score == 2.5
    assert result.private_metrics[WORKER_METRIC] in workers(cluster)
    env = result.metrics["env"]
    assert SECRET not in env and "EVOLVEFLOW_SEED" in env  # the worker's environment was scrubbed
    assert "evolveflow-eval-" in result.metrics["home"]  # its own fresh working directory
    assert result.metrics["gpus"] == "0"  # but the worker's GPU is passed on


def test_one_evaluation_per_gpu_on_each_worker(cluster, executor, spec):
    results = [None] * 4

    def one(i: int) -> None:
        results[i] = executor.run("SLEEP = 0.6\n", spec, seed=i, filename="program.py", step=10 + i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert all(r.outcome == Outcome.OK for r in results)
    by_worker: dict[str, list[tuple[float, float]]] = {}
    for r in results:
        by_worker.setdefault(r.private_metrics[WORKER_METRIC], []).append((r.metrics["start"], r.metrics["end"]))
    for spans in by_worker.values():  # two threads per worker, one GPU: never two at once
        spans.sort()
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))


def test_a_worker_killed_mid_evaluation_is_an_infra_error_and_a_rerun_succeeds(cluster, executor, spec):
    pids = workers(cluster)
    found: list = []
    runner = threading.Thread(target=lambda: found.append(
        executor.run("SLEEP = 30\n", spec, seed=1, filename="program.py", step=20)))
    runner.start()
    deadline = time.monotonic() + 20
    busy = None
    while busy is None and time.monotonic() < deadline:
        processing = executor.client.processing()
        busy = next((w for w, keys in processing.items() if any("evaluate-20-" in str(k) for k in keys)), None)
        time.sleep(0.1)
    assert busy is not None, "the evaluation never started on a worker"
    time.sleep(0.5)  # let the evaluator start
    os.kill(pids[busy], signal.SIGKILL)
    runner.join(timeout=30)
    (lost,) = found
    assert lost.outcome == Outcome.INFRA_ERROR and "KilledWorker" in lost.error
    retried = executor.run("SCORE = 3.0\n", spec, seed=1, filename="program.py", step=20)
    assert retried.outcome == Outcome.OK and retried.score == 3.0
    assert retried.private_metrics[WORKER_METRIC] != busy  # the dead worker's address is gone
    executor.client.wait_for_workers(2, timeout=30)  # the nanny restarts the killed worker


def test_an_abort_cancels_the_evaluation_on_the_worker(executor, spec):
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Aborted):
        executor.run("SLEEP = 30\n", spec, seed=1, filename="program.py", step=30, cancel=cancel)
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 10  # the worker kills the evaluator and frees its GPU
    while executor.client.processing() and any(executor.client.processing().values()):
        assert time.monotonic() < deadline, executor.client.processing()
        time.sleep(0.2)


def test_the_check_names_what_is_missing(cluster, executor, spec, tmp_path):
    missing = spec.model_copy(update={"path": tmp_path / "nowhere" / "evaluator.py"})
    with pytest.raises(EvaluatorConfigError, match="is not there; put the experiment on a path that every worker"):
        executor.check(missing)
    tpu = DaskExecutor(cluster.scheduler_address, {"TPU": 1})
    try:
        with pytest.raises(EvaluatorConfigError, match=r"no worker of .* offers the resources \{'TPU': 1\}"):
            tpu.check(spec, wait_s=0.5)
    finally:
        tpu.close()
    with pytest.raises(EvaluatorConfigError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        DaskExecutor("tcp://127.0.0.1:9", connect_timeout_s=1)


@pytest.mark.usefixtures("prefect_server")
def test_a_search_with_the_dask_executor_writes_every_node_from_the_search_process(cluster, tmp_path):
    from evolveflow.scaffold import scaffold_experiment
    from flows.search import evolve_search
    from storage.tree import TreeStore

    exp = scaffold_experiment("demo", tmp_path / "experiments")
    (exp / "config.yaml").write_text((exp / "config.yaml").read_text() + textwrap.dedent(f"""
        evaluation:
          executor: dask
          dask_address: {cluster.scheduler_address}
          dask_resources: {{GPU: 1}}
        """))
    summary = evolve_search(experiment="demo", rounds=3, root=str(tmp_path), overrides={})
    assert summary["rounds_done"] == 3
    with TreeStore(tmp_path / "runs" / "demo" / "tree.duckdb", read_only=True) as tree:
        assert len(tree.node_ids()) == 4  # the initial program and one node per round
        attempts = tree._fetch("SELECT node_id, outcome, private_metrics FROM attempts")
        evaluated = {n for n in tree.node_ids() if tree.attempts(n)}
    assert {node for node, _, _ in attempts} == evaluated and len(evaluated) >= 3
    assert all(outcome == "ok" for _, outcome, _ in attempts)
    assert {json.loads(p)[WORKER_METRIC] for _, _, p in attempts} <= set(workers(cluster))  # all ran on workers
