"""What one running search holds open: stores, sampler, templates, locks and counters.

Round flows and tasks receive a search id (a string Prefect can record) and look the runtime up
here, because database handles cannot be flow parameters.
"""
from __future__ import annotations

import itertools
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

from evolveflow.abort import Aborted
from evolveflow.config import Config
from evolveflow.evaluation import EvaluatorSpec
from evolveflow.evaluation.executors import EvaluationExecutor, LocalExecutor, open_executor
from evolveflow.evaluator_spec import evaluator_spec
from evolveflow.experiment import Experiment
from evolveflow.llm.offline import register_offline_provider
from evolveflow.llm.rate_limit import Limiter, open_rate_limiter
from evolveflow.near_duplicates import NearDuplicateIndex
from evolveflow.prompts import Templates, load_templates
from evolveflow.records import Sampled
from evolveflow.samplers import Sampler, make_sampler
from storage.embeddings import load_embedder
from storage.memory import MemoryStore
from storage.tree import TreeStore


@dataclass
class RunStats:
    """Counters of the current run (not of earlier runs on the same tree)."""

    rounds_done: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    near_duplicates: int = 0
    lessons: int = 0

    def count(self, status: str) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1


@dataclass
class Runtime:
    """Everything a round needs, shared by the concurrent rounds of one search."""

    search_id: str
    experiment: Experiment
    tree: TreeStore
    memory: MemoryStore
    sampler: Sampler
    templates: Templates
    evaluator: EvaluatorSpec
    executor: EvaluationExecutor = field(default_factory=LocalExecutor)  # where evaluations run
    stats: RunStats = field(default_factory=RunStats)
    near_duplicates: NearDuplicateIndex | None = None
    on_round: Callable[[dict], None] | None = None
    # Called by a round as soon as its node is written, before its lesson: the round loop can
    # start the next round while the analysis of this one goes on (it is off the critical path).
    on_persisted: Callable[[dict], None] | None = None
    # With evaluation.concurrency set: called when a round's candidate is ready (its proposal slot is free).
    on_proposed: Callable[[int], None] | None = None
    llm_slots: threading.Semaphore | None = None  # api.max_concurrency
    eval_slots: threading.Semaphore | None = None  # evaluation.concurrency
    rate_limiter: Limiter | None = None  # api.requests_per_minute, tokens_per_minute, prefect_rate_limit
    # Sampling, visit counting, id allocation and dedup run under one lock so workers see
    # each other's choices: UCB statistics and deduplication are global, not per worker.
    tree_lock: threading.Lock = field(default_factory=threading.Lock)
    memory_lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count = field(default_factory=itertools.count)
    # Evaluation attempts per node, kept across Prefect retries of the evaluate task.
    attempt_log: dict[int, list] = field(default_factory=dict)
    eval_targets: dict[int, int] = field(default_factory=dict)  # successful attempts a node needs
    eval_notes: dict[int, str] = field(default_factory=dict)
    identical_confirmations: int = 0  # see tasks/evaluate.py: deterministic evaluators need fewer re-runs
    # LLM calls per node, appended as each billed reply arrives and kept across Prefect retries
    # until the node is persisted: what was paid for is recorded even when the round fails later.
    call_log: dict[int, list] = field(default_factory=dict)  # proposing; the Candidate carries them
    unused_analysis: dict[int, list] = field(default_factory=dict)  # empty analyst replies; persist adds them
    # Counters shared by concurrent rounds (stats, identical_confirmations) change under this lock.
    stats_lock: threading.Lock = field(default_factory=threading.Lock)
    # Rounds sampled and not yet persisted, by node id: what an abort records as abandoned.
    in_flight: dict[int, Sampled] = field(default_factory=dict)
    # Set by abort(): evaluators are killed, no round starts a further stage or writes the tree.
    aborted: threading.Event = field(default_factory=threading.Event)
    abort_reason: str = ""

    @property
    def config(self) -> Config:
        return self.experiment.config

    def next_node_id(self) -> int:
        return next(self._ids)

    @contextmanager
    def slot(self, slots: threading.Semaphore | None) -> Iterator[None]:
        """Holds one of a limited pool (LLM calls, evaluations) while inside; waiting is abortable."""
        if slots is None:
            yield
            return
        while not slots.acquire(timeout=0.2):
            self.check_abort()
        try:
            yield
        finally:
            slots.release()

    def abort(self, reason: str) -> None:
        """Stops every round in flight at its next step; running evaluators are killed."""
        if not self.aborted.is_set():
            self.abort_reason = reason
            self.aborted.set()

    def check_abort(self) -> None:
        """Raises Aborted once the search was aborted."""
        if self.aborted.is_set():
            raise Aborted(f"the search stopped: {self.abort_reason}")


_ACTIVE: dict[str, Runtime] = {}


def sampler_from(config: Config) -> Sampler:
    """Returns the configured parent sampler."""
    sampling = config.database.sampling
    if sampling.algorithm == "ucb1":
        return make_sampler("ucb1", c=sampling.ucb_c)
    if sampling.algorithm == "greedy":
        return make_sampler("greedy", top_k=sampling.greedy_top_k)
    if sampling.algorithm == "island":
        island = sampling.island
        return make_sampler(
            "island", num_islands=island.num_islands, migration_interval=island.migration_interval,
            migration_count=island.migration_count, descriptors=tuple(island.descriptors),
        )
    return make_sampler(sampling.algorithm)


def open_runtime(experiment: Experiment, on_round: Callable[[dict], None] | None = None) -> Runtime:
    """Opens the experiment's stores and registers the runtime under a new search id."""
    config = experiment.config
    register_offline_provider()
    spec = evaluator_spec(experiment)
    ev = config.evaluation
    executor = open_executor(ev.executor, spec, ev.dask_address, ev.dask_resources)  # first: it may refuse
    try:
        tree = TreeStore(experiment.tree_path)
        embedder = load_embedder(config.cognition.embeddings or config.dedup.near_threshold is not None)
        memory = MemoryStore(experiment.memory_path, embedder if config.cognition.embeddings else None)
        prompt_dir = experiment.dir / config.prompts.dir
        runtime = Runtime(
            search_id=uuid.uuid4().hex[:12],
            experiment=experiment,
            tree=tree,
            memory=memory,
            sampler=sampler_from(config),
            templates=load_templates(prompt_dir if prompt_dir.is_dir() else None, config.prompts.system_message),
            evaluator=spec,
            executor=executor,
            on_round=on_round,
            _ids=itertools.count(tree.max_id() + 1),
            llm_slots=threading.Semaphore(config.api.max_concurrency) if config.api.max_concurrency else None,
            eval_slots=(threading.Semaphore(config.evaluation.concurrency)
                        if config.evaluation.concurrency else None),
        )
        runtime.rate_limiter = open_rate_limiter(config.api, runtime.check_abort)  # waits end on abort
        if config.dedup.near_threshold is not None and embedder is not None:
            runtime.near_duplicates = NearDuplicateIndex(embedder, config.dedup.near_threshold)
            evaluated = [n.id for n in tree.summaries() if n.status.value in ("ok", "candidate_error")]
            runtime.near_duplicates.add_many((n.id, n.code) for n in tree.nodes(evaluated))
    except BaseException:
        executor.close()
        raise
    _ACTIVE[runtime.search_id] = runtime
    return runtime


def get_runtime(search_id: str) -> Runtime:
    """Returns the registered runtime; KeyError names the id if the search is not open here."""
    try:
        return _ACTIVE[search_id]
    except KeyError:
        raise KeyError(f"no open search {search_id!r} in this process") from None


def close_runtime(runtime: Runtime) -> None:
    """Closes the stores and forgets the runtime."""
    _ACTIVE.pop(runtime.search_id, None)
    runtime.executor.close()
    if runtime.rate_limiter is not None:
        runtime.rate_limiter.close()
    runtime.tree.close()
