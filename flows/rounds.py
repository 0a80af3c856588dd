"""Keep num_workers rounds in flight until the rounds or a budget run out, or Ctrl-C."""
from __future__ import annotations

import contextvars
import queue
import os
import time
import threading
from concurrent.futures import Future
from typing import Any, Callable

from prefect import get_run_logger, tags
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from evolveflow.abort import Aborted
from evolveflow.breakers import Breakers, SearchStopped
from evolveflow.progress import show_in_flight, show_waiting
from evolveflow.runtime import Runtime
from evolveflow.stopping import Progress, stop_reason
from flows.artifacts import ArtifactPublisher
from flows.round import evolve_round
from flows.signals import stop_on_signals
from storage.report import LAST_ROUND_FILE, RUN_FIRST_ROUND_FILE, build_report, read_round_file, write_report


PUBLISH_EVERY_S = 2.0
WAITING_EVERY_S = 30.0  # a line naming the rounds still running when none finished for this long


class RoundLoop:
    """Schedules rounds, tracks progress against the budgets, and stops cleanly."""

    def __init__(self, rt: Runtime, first: int, count: int, artifacts: ArtifactPublisher | None = None,
                 run_tags: tuple[str, ...] = (), show_waiting: bool = False, flow_run_id: Any = None):
        self.rt = rt
        self.first, self.count = first, count
        self.artifacts = artifacts
        self.run_tags = run_tags  # on every round flow run: which experiment, which search process
        self.started = time.monotonic()
        self.usage_at_start = rt.tree.usage_totals()
        best = rt.tree.best()
        self.best = best.score if best else None
        self.since_improvement = 0
        self.interrupted: str | None = None
        self.breakers = Breakers.from_config(rt.config.stop)
        self.stopped: str | None = None  # why the search stopped itself (a breaker, storage failing)
        self.published_at = 0.0
        self.logger = get_run_logger()
        self.show_waiting = show_waiting  # `evolveflow run`: the display shows rounds in flight
        self.flow_run_id = flow_run_id  # this search's run: a SIGTERM may mean it was cancelled there
        self.check_cancelled = False  # set by a SIGTERM; the loop asks the API once
        self.running: dict[int, float] = {}  # round number -> when it started
        # Rounds whose node is not written yet: they hold a worker slot; a round in its analysis
        # does not (at most as many again may be analysing).
        self.proposing: set[int] = set()
        self.persisted: queue.SimpleQueue = queue.SimpleQueue()
        self.proposed: queue.SimpleQueue = queue.SimpleQueue()  # rounds whose candidate is ready
        self.unwritten: set[int] = set()  # rounds whose node is not written yet
        self.wake = threading.Event()  # a round was persisted or ended
        self.last_word = time.monotonic()  # when a round last finished or a waiting line was shown

    def request_stop(self, signal_name: str) -> None:
        """Stops scheduling rounds; the ones in flight finish (called from a signal handler).

        A SIGTERM is also how Prefect's runner cancels a deployment run: the loop then asks the
        API whether this run is being cancelled, and aborts if so (see cancel_if_cancelled)."""
        self.interrupted = signal_name
        self.check_cancelled = signal_name == "SIGTERM"
        rounds = sorted(self.running)
        which = (f"the {len(rounds)} round(s) in flight ({', '.join(map(str, rounds))})" if rounds
                 else "the rounds in flight")
        print(f"\n{signal_name}: stopping after {which} (send it again to abort them)", flush=True)
        self.last_word = time.monotonic()

    def cancel_if_cancelled(self) -> None:
        """Aborts like a second signal when this search's flow run is Cancelling/Cancelled in Prefect."""
        self.check_cancelled = False
        if self.flow_run_id is None or self.rt.aborted.is_set():
            return
        try:
            from prefect.client.orchestration import get_client

            with get_client(sync_client=True) as client:
                state = client.read_flow_run(self.flow_run_id).state
        except Exception as exc:  # noqa: BLE001 - no answer: keep the gentle stop
            self.logger.warning("could not ask Prefect whether this run was cancelled: %s: %s", type(exc).__name__, exc)
            return
        if state is not None and (state.is_cancelling() or state.is_cancelled()):
            self.rt.abort("aborted: the flow run was cancelled in Prefect (SIGTERM)")
            print("\nthe flow run was cancelled in Prefect: aborting the rounds in flight", flush=True)

    def stop_now(self, reason: str) -> None:
        """Stops the search at once (rounds in flight are aborted): going on would only spend."""
        if self.stopped is None and not self.rt.aborted.is_set():
            self.stopped = reason
            self.logger.error("stopping the search: %s", reason)
            self.rt.abort(reason)

    def abort(self, signal_name: str) -> None:
        """Aborts the rounds in flight: evaluators are killed, the loop returns within 0.5 s."""
        self.rt.abort(f"aborted by a second {signal_name}")
        print(f"\n{signal_name} again: aborting the rounds in flight", flush=True)

    def progress(self) -> Progress:
        usage = self.rt.tree.usage_totals()
        spent = None
        if usage["cost_usd"] is not None and usage["calls_with_unknown_cost"] == self.usage_at_start["calls_with_unknown_cost"]:
            spent = usage["cost_usd"] - (self.usage_at_start["cost_usd"] or 0.0)
        tokens = (usage["prompt_tokens"] + usage["completion_tokens"]
                  - self.usage_at_start["prompt_tokens"] - self.usage_at_start["completion_tokens"])
        return Progress(elapsed_s=time.monotonic() - self.started, cost_usd=spent, tokens=tokens,
                        best_score=self.best, rounds_without_improvement=self.since_improvement)

    def run(self) -> str:
        """Runs the rounds; returns why it stopped."""
        workers = self.rt.config.pipeline.parallel.num_workers
        reason: str | None = None
        # Round flows run without Prefect heartbeats (they cost ~0.9 s per flow run here); a
        # crash is detected by the search itself: pending nodes are marked abandoned at restart.
        self.rt.on_persisted = self.on_persisted
        evaluations = self.rt.config.evaluation.concurrency
        if evaluations:  # two pools: proposal slots free up when the candidate is ready
            self.rt.on_proposed = self.on_proposed
        most = 2 * workers + (evaluations or 0)  # proposing + waiting or evaluating + analysing
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}), \
                stop_on_signals(self.request_stop, self.abort):
            in_flight: set[Future] = set()
            next_round = self.first
            experiment = self.rt.experiment.name
            while True:
                if self.check_cancelled:
                    self.cancel_if_cancelled()
                if self.rt.aborted.is_set():  # the rounds in flight are left to die with the process
                    return f"stopped: {self.stopped}" if self.stopped else self.rt.abort_reason
                if self.interrupted and reason is None:
                    reason = "interrupted"
                while reason is None and len(self.proposing) < workers and len(in_flight) < most:
                    if next_round >= self.first + self.count:
                        reason = "rounds"
                        break
                    reason = stop_reason(self.rt.config.stop, self.progress())
                    if reason is None:
                        try:  # a round killed before its node keeps its number
                            record_issued(self.rt, next_round)
                        except OSError as exc:
                            self.stop_now(f"could not write {issued_path(self.rt)}: {exc}")
                            break
                        with tags(*self.run_tags):
                            context = contextvars.copy_context()  # rounds stay subflows of the search
                        future = in_daemon_thread(f"round-{next_round}", context.run, evolve_round,
                                                  self.rt.search_id, next_round, experiment=experiment)
                        future.round_no = next_round  # type: ignore[attr-defined]
                        future.add_done_callback(lambda _: self.wake.set())
                        self.running[next_round] = time.monotonic()
                        self.proposing.add(next_round)
                        self.unwritten.add(next_round)
                        in_flight.add(future)
                        next_round += 1
                if not in_flight:
                    return reason or "rounds"
                self.tell_waiting()
                # A timeout so that a stop request is seen while rounds are still running.
                self.wake.wait(0.5)
                self.wake.clear()
                self.drain()
                for future in [f for f in in_flight if f.done()]:
                    in_flight.discard(future)
                    self.running.pop(future.round_no, None)
                    self.finish(future)

    def tell_waiting(self) -> None:
        """Shows the rounds in flight (the live bar), and which ones it waits for when they take long."""
        if not self.show_waiting:
            return
        now = time.monotonic()
        show_in_flight(len(self.running), self.interrupted is not None)
        if self.running and now - self.last_word >= WAITING_EVERY_S:
            self.last_word = now
            show_waiting(waiting_line(self.running, now, self.interrupted is not None))

    def on_proposed(self, round_no: int) -> None:
        """Called from a round's thread when its candidate is ready (evaluation.concurrency set)."""
        self.proposed.put(round_no)
        self.wake.set()

    def on_persisted(self, summary: dict) -> None:
        """Called from a round's thread once its node is written (see flows/round.py)."""
        self.persisted.put(summary)
        self.wake.set()

    def drain(self) -> None:
        """Frees the proposal slots of rounds whose candidate is ready; counts the rounds whose
        node was written since the last look."""
        while not self.proposed.empty():
            self.proposing.discard(self.proposed.get())
        while not self.persisted.empty():
            summary = self.persisted.get()
            self.proposing.discard(summary["round"])
            self.unwritten.discard(summary["round"])
            self.finish_round(summary)

    def finish(self, future: Future) -> None:
        """Handles a round's thread that ended (its lesson written, or it failed)."""
        self.drain()  # a round announces its node before its thread ends: count it once, from there
        round_no = future.round_no  # type: ignore[attr-defined]
        was_proposing = round_no in self.unwritten  # (its node was never announced)
        self.proposing.discard(round_no)
        self.unwritten.discard(round_no)
        try:
            summary = future.result()
        except Aborted:  # the search is being aborted: its rounds in flight are recorded together
            return
        except SearchStopped as exc:
            self.stop_now(str(exc))
            return
        except Exception as exc:  # a round that failed outside its tasks' handling: keep going
            self.logger.error("round failed: %s: %s", type(exc).__name__, exc)
            self.rt.stats.count("round_failed" if was_proposing else "lesson_failed")
            return
        if was_proposing:  # it ended without announcing its node (not through run_round)
            self.finish_round(summary)

    def finish_round(self, summary: dict) -> None:
        """Counts a round whose node is written, publishes the report and shows progress."""
        rt = self.rt
        self.last_word = time.monotonic()
        rt.stats.rounds_done += 1
        rt.stats.count(summary["status"])
        score = summary["score"] if summary["status"] == "ok" else None
        if score is not None and (self.best is None or score > self.best):
            self.best, self.since_improvement = score, 0
        else:
            self.since_improvement += 1
        # The report costs ~25 ms to build; readers need it fresh to the second, not the round.
        if time.monotonic() - self.published_at >= PUBLISH_EVERY_S:
            publish(rt)
            self.published_at = time.monotonic()
        if self.artifacts is not None:  # throttled inside: progress each second, tables every few
            self.artifacts.after_round(rt.tree, rt.stats.rounds_done)
        if rt.on_round:
            rt.on_round({**summary, "best": self.best})
        self.breakers.observe(summary)
        tripped = self.breakers.tripped()
        if tripped:
            self.stop_now(tripped)


def waiting_line(running: dict[int, float], now: float, stopping: bool) -> str:
    """E.g. "stopping: waiting for rounds 6 (running 95 s), 7 (running 40 s)"."""
    rounds = ", ".join(f"{r} (running {now - t:.0f} s)" for r, t in sorted(running.items()))
    return f"{'stopping: ' if stopping else ''}waiting for round{'s' if len(running) > 1 else ''} {rounds}"


def in_daemon_thread(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
    """Runs fn in a new daemon thread and returns its future.

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit, so an aborted search
    would wait for a round blocked on the LLM (up to api.timeout_s). A round lasts seconds, a
    thread start microseconds.
    """
    future: Future = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever reads the future
            future.set_exception(exc)
        else:
            future.set_result(result)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


def issued_path(rt: Runtime):
    return rt.experiment.storage_dir / "last_round"


def record_issued(rt: Runtime, round_no: int, name: str = LAST_ROUND_FILE) -> None:
    """Records the highest round number handed out (atomically; a crash never loses it)."""
    path = rt.experiment.storage_dir / name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{round_no}\n")
    os.replace(tmp, path)


def first_round(rt: Runtime) -> int:
    """Returns the next unused round number: after every node's round and every round handed out.

    A round killed before its node was written (while sampling or waiting on the LLM) left no
    node, but its flow run is named for its number: that number is never given out again. The
    reports count the rounds that produced a node and the numbers lost (storage/report.py); the
    number returned is recorded as this run's first, so that its rounds in flight are not counted lost.
    """
    issued = read_round_file(rt.experiment.storage_dir, LAST_ROUND_FILE) or 0
    first = max(rt.tree.max_round(), issued) + 1
    try:
        record_issued(rt, first, RUN_FIRST_ROUND_FILE)
    except OSError:  # only the live report's count of lost numbers needs it; storage errors stop rounds
        pass
    return first


def publish(rt: Runtime) -> None:
    """Writes the report that status/best read while this search holds the tree."""
    import os

    running = {"pid": os.getpid(), "search_id": rt.search_id, "rounds_done": rt.stats.rounds_done}
    try:
        write_report(rt.experiment.report_path, build_report(rt.tree, rt.experiment.name, running,
                                                             rt.config.evaluation.metrics_max_chars))
    except OSError as exc:  # e.g. a full disk: the tree is what counts; persisting stops the search
        get_run_logger().warning("could not write %s: %s", rt.experiment.report_path, exc)
