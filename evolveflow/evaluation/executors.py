"""Where evaluations run: on this machine (local) or on the workers of a Dask cluster (dask).

Why a `distributed` client called from the evaluate task, and not prefect-dask's task runner: a
task runner ships the whole Prefect task, and the evaluate task works on the search's runtime
(the tree, the attempt log, the re-run decisions), which lives in this process and must stay
here: the search process alone writes the tree. So only the evaluation itself is shipped, as one
function call whose arguments carry everything it needs (the candidate's code, the evaluator's
spec with its limits and paths, the seed); Prefect's retries, the in-loop infra retries and the
outlier re-runs keep working unchanged around it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import CancelledError  # distributed's future errors derive from it
from pathlib import Path
from typing import Protocol

from evolveflow.abort import Aborted
from evolveflow.evaluation.runner import EvaluatorConfigError, EvaluatorSpec, check_evaluator, run_evaluation
from evolveflow.records import EvalResult, Outcome

WORKER_METRIC = "evolveflow_worker"  # private metric of an attempt run on Dask: the worker's address
_POLL_S = 0.5


class EvaluationExecutor(Protocol):
    """Runs evaluations for one search; shared by its concurrent rounds, so run() is thread-safe.

    run() returns the attempt's EvalResult; a fault of the executor itself (a worker lost, the
    scheduler gone) is an infra_error result, never an exception, so the usual retries re-run it.
    Once `cancel` is set the evaluation is killed and Aborted raised. close() releases resources.
    """

    def run(self, code: str, spec: EvaluatorSpec, *, seed: int, filename: str, step: int,
            keep_files_to: Path | None = None, cancel: threading.Event | None = None) -> EvalResult: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Runs each evaluation in a sandboxed subprocess of this machine."""

    def run(self, code: str, spec: EvaluatorSpec, *, seed: int, filename: str, step: int,
            keep_files_to: Path | None = None, cancel: threading.Event | None = None) -> EvalResult:
        return run_evaluation(code, spec, seed=seed, filename=filename, step=step,
                              keep_files_to=keep_files_to, cancel=cancel)

    def close(self) -> None:
        pass


class DaskExecutor:
    """Ships each evaluation to a worker of the Dask scheduler at `address`.

    `resources` (e.g. {"GPU": 1}) are requested per evaluation: a worker started with
    `--resources GPU=1` runs one at a time. The evaluator's files are read on the worker at the
    paths of the spec, so the experiment folder must be on a path every worker shares.
    """

    def __init__(self, address: str, resources: dict[str, float] | None = None, connect_timeout_s: float = 30.0):
        from distributed import Client

        self.address = address
        self.resources = dict(resources) if resources else None
        try:
            self.client = Client(address, timeout=connect_timeout_s, set_as_default=False)
        except (OSError, ValueError) as exc:
            raise EvaluatorConfigError(
                f"evaluation.executor dask: cannot reach the Dask scheduler at {address}: {exc} "
                "(start one with `dask scheduler` and check evaluation.dask_address)") from None

    def check(self, spec: EvaluatorSpec, wait_s: float = 30.0) -> str:
        """Checks that a worker with the resources exists and can use the evaluator; returns its address."""
        deadline = time.monotonic() + wait_s
        while not self._workers_with_resources():
            if time.monotonic() > deadline:
                raise EvaluatorConfigError(
                    f"evaluation.executor dask: no worker of {self.address} offers the resources "
                    f"{self.resources}; start one with `dask worker {self.address} --resources "
                    f"{' '.join(f'{k}={v:g}' for k, v in (self.resources or {}).items())}`")
            time.sleep(0.5)
        future = self.client.submit(check_on_worker, spec, resources=self.resources, pure=False,
                                    key=f"evolveflow-check-{uuid.uuid4().hex[:12]}")
        try:
            problem, worker = future.result(timeout=max(120.0, spec.timeout_s + 60))
        except Exception as exc:  # noqa: BLE001 - e.g. evolveflow missing on the worker: say so in one line
            raise EvaluatorConfigError(
                f"evaluation.executor dask: a worker of {self.address} could not run evolveflow's evaluator "
                f"check: {type(exc).__name__}: {exc} (install the same evolveflow on every worker)") from None
        if problem:
            raise EvaluatorConfigError(f"evaluation.executor dask: on worker {worker}: {problem}")
        return worker

    def _workers_with_resources(self) -> list[str]:
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        return [address for address, info in workers.items()
                if all(info.get("resources", {}).get(k, 0) >= v for k, v in (self.resources or {}).items())]

    def run(self, code: str, spec: EvaluatorSpec, *, seed: int, filename: str, step: int,
            keep_files_to: Path | None = None, cancel: threading.Event | None = None) -> EvalResult:
        from distributed import KilledWorker
        from distributed.client import ClosedClientError

        if cancel is not None and cancel.is_set():
            raise Aborted("the search was aborted: the evaluation was not shipped")
        # retries=0: a lost worker comes back as an infra_error, which evolveflow retries itself.
        future = self.client.submit(
            evaluate_on_worker, code, spec, seed=seed, filename=filename, step=step,
            keep_files=keep_files_to is not None, resources=self.resources, pure=False, retries=0,
            key=f"evolveflow-evaluate-{step}-{uuid.uuid4().hex[:12]}")
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    future.cancel()  # the worker sees its task cancelled and kills the evaluator
                    raise Aborted("the search was aborted: the evaluation on the Dask worker was cancelled")
                try:
                    result, files, worker = future.result(timeout=_POLL_S)
                    break
                except TimeoutError:
                    continue
        except (KilledWorker, ClosedClientError, OSError, CancelledError) as exc:
            return EvalResult(outcome=Outcome.INFRA_ERROR,
                              error=f"the Dask evaluation was lost ({type(exc).__name__}: {exc})")
        finally:
            future.release()
        if keep_files_to is not None:
            for relative, data in files.items():
                target = keep_files_to / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        return result.model_copy(update={"private_metrics": {**result.private_metrics, WORKER_METRIC: worker}})

    def close(self) -> None:
        self.client.close()


def evaluate_on_worker(code: str, spec: EvaluatorSpec, *, seed: int, filename: str, step: int,
                       keep_files: bool) -> tuple[EvalResult, dict[str, bytes], str]:
    """Runs on a Dask worker: the evaluation in the worker's sandbox, its kept files as bytes, the worker."""
    from distributed import get_worker

    worker = get_worker()
    key = worker.get_current_task()
    cancel, finished = threading.Event(), threading.Event()
    # A cancelled future (an abort, or the search process gone) does not stop a running task's
    # thread: watch the task's state and kill the evaluator ourselves.
    threading.Thread(target=_watch_cancelled, args=(worker, key, cancel, finished), daemon=True).start()
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpus is not None:  # a worker started for one GPU passes it on (the sandbox's allow-list drops it)
        spec = spec.model_copy(update={"extra_env": {**spec.extra_env, "CUDA_VISIBLE_DEVICES": gpus}})
    kept = Path(tempfile.mkdtemp(prefix="evolveflow-kept-")) if keep_files else None
    try:
        result = run_evaluation(code, spec, seed=seed, filename=filename, step=step, keep_files_to=kept, cancel=cancel)
        files = {path.relative_to(kept).as_posix(): path.read_bytes()
                 for path in sorted(kept.rglob("*")) if path.is_file()} if kept else {}
    finally:
        finished.set()
        if kept:
            shutil.rmtree(kept, ignore_errors=True)
    return result, files, worker.address


def _watch_cancelled(worker, key: str, cancel: threading.Event, finished: threading.Event) -> None:
    while not finished.wait(_POLL_S):
        task = worker.state.tasks.get(key)
        if task is None or task.state in ("cancelled", "released", "forgotten"):
            cancel.set()
            return


def check_on_worker(spec: EvaluatorSpec) -> tuple[str | None, str]:
    """Runs on a Dask worker: returns what keeps the evaluator from working there (or None), and the worker."""
    from distributed import get_worker

    address = get_worker().address
    if not spec.path.is_file():
        return (f"the evaluator {spec.path} is not there; put the experiment on a path that every worker "
                "sees at the same place (a shared file system)", address)
    try:
        check_evaluator(spec)
    except EvaluatorConfigError as exc:
        return str(exc), address
    return None, address


def open_executor(executor: str, spec: EvaluatorSpec, address: str | None = None,
                  resources: dict[str, float] | None = None) -> EvaluationExecutor:
    """Returns the configured executor; a Dask one is connected and checked against the evaluator."""
    if executor == "local":
        return LocalExecutor()
    if not address:
        raise EvaluatorConfigError("evaluation.executor is dask: set evaluation.dask_address (e.g. tcp://host:8786)")
    dask = DaskExecutor(address, resources)
    try:
        dask.check(spec)
    except BaseException:
        dask.close()
        raise
    return dask


__all__ = ["DaskExecutor", "EvaluationExecutor", "LocalExecutor", "WORKER_METRIC", "check_on_worker",
           "evaluate_on_worker", "open_executor"]
