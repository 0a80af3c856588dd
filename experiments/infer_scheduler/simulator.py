"""Discrete-event simulator of an LLM server with iteration-level continuous batching (stdlib only).

Model, in one place so the problem statement and the code agree:

* Memory: the GPU holds ``kv_capacity_gb`` of KV cache and 1 GB holds ``TOKENS_PER_GB`` = 1024
  tokens. A running request occupies prompt + generated-so-far tokens; every decode step adds
  one token per running request.
* Each step the scheduler sees the waiting queue and the free memory and returns the ids to
  admit. The prompts it admits must fit in the free memory *now*; growth later is its risk:
  when a decode step would overflow the cache the server preempts the most recently admitted
  request (vLLM-style recompute), frees its cache, discards its generated tokens and puts it
  back in the queue with its original arrival time.
* Step time (ms) = ``step_overhead_ms`` + ``per_sequence_ms`` * batch size
  + ``per_context_token_ms`` * tokens in the batch's KV cache
  + ``prefill_per_token_ms`` * prompt tokens admitted this step
  + ``prefill_overhead_ms`` if anything was admitted this step (a prefill stalls every decode).
  The prefill of an admitted request yields its first output token in the same step.
* Latency is end-to-end: finish time - arrival time (not time-to-first-token).
* Workload (generate_workload): seeded Poisson arrivals with bursts, three traffic classes
  (the ``priority`` field) with clipped lognormal prompt and output lengths.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from typing import Callable

TOKENS_PER_GB = 1024

ScheduleFn = Callable[[list, float], object]


class SchedulerError(Exception):
    """The candidate's schedule() misbehaved; the message says what and when."""


class SchedulerCrashedError(SchedulerError):
    """schedule() raised an exception."""


class InvalidScheduleError(SchedulerError):
    """schedule() returned something other than a list of distinct integer ids."""


class UnknownRequestIdError(InvalidScheduleError):
    """schedule() returned an id that is not in the queue it was shown."""


class DuplicateRequestIdError(InvalidScheduleError):
    """schedule() returned the same id twice."""


class MemoryOvercommitError(InvalidScheduleError):
    """schedule() admitted more prompt tokens than the free KV cache holds."""


@dataclass(frozen=True)
class ServerModel:
    """Hardware and cost model of the simulated server (times in milliseconds)."""

    kv_capacity_gb: float = 16.0
    step_overhead_ms: float = 2.5
    per_sequence_ms: float = 0.03
    per_context_token_ms: float = 0.0001
    prefill_per_token_ms: float = 0.004
    prefill_overhead_ms: float = 3.0  # extra fixed cost of a step that prefills anything
    idle_tick_ms: float = 2.0  # how far the clock moves when the GPU idles with a non-empty queue
    give_up_after_ms: float = 10_000.0  # stop this long after the last arrival; the rest is unfinished

    @property
    def kv_capacity_tokens(self) -> int:
        return int(self.kv_capacity_gb * TOKENS_PER_GB)


@dataclass(frozen=True)
class TrafficClass:
    """One kind of traffic: its share, priority and lognormal length profile (tokens)."""

    share: float
    priority: int
    prompt_median: float
    prompt_sigma: float
    output_median: float
    output_sigma: float


@dataclass(frozen=True)
class WorkloadSpec:
    """How the seeded workload is drawn."""

    num_requests: int = 1500
    mean_rate_per_s: float = 60.0  # the base load; the evaluator scales it up
    burst_factor: float = 2.0  # arrival rate in a burst relative to the mean
    burst_fraction: float = 0.2  # share of time spent in bursts
    burst_ms_mean: float = 150.0  # bursts last uniform(0.5, 1.5) x this; calm gaps are exponential
    min_prompt: int = 16
    max_prompt: int = 3072
    min_output: int = 2
    max_output: int = 64
    classes: tuple[TrafficClass, ...] = (
        TrafficClass(0.55, 2, prompt_median=180, prompt_sigma=0.8, output_median=12, output_sigma=0.6),
        TrafficClass(0.30, 1, prompt_median=450, prompt_sigma=0.9, output_median=24, output_sigma=0.6),
        TrafficClass(0.15, 0, prompt_median=1100, prompt_sigma=0.7, output_median=36, output_sigma=0.5),
    )


@dataclass(frozen=True)
class Request:
    """A request as the server knows it; output_len is hidden from the scheduler."""

    id: int
    arrival_ms: float
    prompt_len: int
    output_len: int
    priority: int


def _clipped_lognormal(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    """Draw a heavy-tailed integer length, clipped so every request fits the server."""
    return max(low, min(high, int(round(rng.lognormvariate(math.log(median), sigma)))))


def generate_workload(seed: int, spec: WorkloadSpec = WorkloadSpec()) -> list[Request]:
    """Draw the requests of one benchmark run; the same seed always gives the same workload."""
    rng = random.Random(seed)
    weights = [c.share for c in spec.classes]
    burst_rate = spec.mean_rate_per_s * spec.burst_factor
    # Calm traffic makes up the rest, so the long-run mean stays mean_rate_per_s.
    calm_rate = (spec.mean_rate_per_s * (1 - spec.burst_fraction * spec.burst_factor)
                 / (1 - spec.burst_fraction))
    calm_ms_mean = spec.burst_ms_mean * (1 - spec.burst_fraction) / spec.burst_fraction
    requests, now_ms = [], 0.0
    in_burst, phase_end_ms = False, rng.expovariate(1 / calm_ms_mean)
    while len(requests) < spec.num_requests:
        gap = rng.expovariate((burst_rate if in_burst else calm_rate) / 1000)
        if now_ms + gap > phase_end_ms:
            # Poisson arrivals are memoryless, so restarting the draw at a phase switch is exact.
            now_ms = phase_end_ms
            in_burst = not in_burst
            # Bursts vary less than calm gaps so that one freak burst does not decide P99 on its own.
            if in_burst:
                phase_end_ms = now_ms + rng.uniform(0.5, 1.5) * spec.burst_ms_mean
            else:
                phase_end_ms = now_ms + rng.expovariate(1 / calm_ms_mean)
            continue
        now_ms += gap
        kind = rng.choices(spec.classes, weights)[0]
        requests.append(Request(
            id=len(requests),
            arrival_ms=now_ms,
            prompt_len=_clipped_lognormal(rng, kind.prompt_median, kind.prompt_sigma,
                                          spec.min_prompt, spec.max_prompt),
            output_len=_clipped_lognormal(rng, kind.output_median, kind.output_sigma,
                                          spec.min_output, spec.max_output),
            priority=kind.priority,
        ))
    return requests


def at_load(requests: list[Request], load_factor: float) -> list[Request]:
    """The same requests arriving load_factor times as fast (same lengths, same burst pattern)."""
    if not load_factor > 0:
        raise ValueError(f"load_factor must be positive, got {load_factor!r}")
    return [replace(r, arrival_ms=r.arrival_ms / load_factor) for r in requests]


@dataclass
class _Running:
    request: Request
    generated: int  # output tokens produced so far; the cache holds prompt_len + generated


@dataclass
class SimulationResult:
    """What happened in one run; latencies are end-to-end, in ms, keyed by request id."""

    num_requests: int
    latencies_ms: dict[int, float] = field(default_factory=dict)
    unfinished_ids: list[int] = field(default_factory=list)
    output_tokens: int = 0  # tokens of completed requests; tokens thrown away by preemption excluded
    wasted_tokens: int = 0  # generated, then discarded by a preemption
    preemptions: int = 0
    busy_ms: float = 0.0  # time spent executing steps (idle gaps excluded)
    first_arrival_ms: float = 0.0
    end_ms: float = 0.0
    steps: int = 0
    batch_size_sum: int = 0
    stopped_early: bool = False  # the P99 bound was certainly exceeded, so the run was cut short
    waiting_at_end: int = 0  # requests still queued when the run ended
    oldest_wait_at_end_ms: float = 0.0  # how long the oldest of them had waited

    @property
    def completed(self) -> int:
        return len(self.latencies_ms)

    @property
    def tokens_per_s(self) -> float:
        """Output tokens of completed requests per second from the first arrival to the end."""
        span_ms = self.end_ms - self.first_arrival_ms
        return self.output_tokens / span_ms * 1000 if span_ms > 0 else 0.0

    def latency_percentile_ms(self, fraction: float) -> float:
        """Percentile over all requests; unfinished ones count as infinitely late."""
        values = list(self.latencies_ms.values()) + [math.inf] * (self.num_requests - self.completed)
        return percentile(values, fraction)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (fraction in (0, 1]); no interpolation, so P99 is a real sample."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def late_requests_for_violation(num_requests: int, fraction: float = 0.99) -> int:
    """How many requests at or over a bound make the nearest-rank percentile reach that bound."""
    return num_requests - max(1, math.ceil(fraction * num_requests)) + 1


def _queue_view(waiting: dict[int, Request], now_ms: float) -> list[dict]:
    """The scheduler's view of the queue: fresh dicts in arrival order, so edits cannot leak back."""
    return [
        {"id": r.id, "seq_len": r.prompt_len, "priority": r.priority, "wait_ms": now_ms - r.arrival_ms}
        for r in waiting.values()
    ]


def validate_admission(chosen: object, waiting: dict[int, Request], free_tokens: int,
                       now_ms: float) -> list[int]:
    """Return chosen as a list of ids after strict checks; raise InvalidScheduleError otherwise."""
    where = f"at t={now_ms:.1f} ms"
    if not isinstance(chosen, (list, tuple)):
        raise InvalidScheduleError(
            f"schedule() must return a list of request ids, got {type(chosen).__name__} {where}")
    seen, prompt_tokens = set(), 0
    for item in chosen:
        # bool is an int subclass; True would silently mean request 1.
        if isinstance(item, bool) or not isinstance(item, int):
            raise InvalidScheduleError(
                f"schedule() returned {item!r} ({type(item).__name__}); ids must be the int 'id' "
                f"values of queue entries {where}")
        if item in seen:
            raise DuplicateRequestIdError(f"schedule() returned id {item} twice {where}")
        if item not in waiting:
            raise UnknownRequestIdError(
                f"schedule() returned id {item}, which is not in the queue it was given "
                f"({len(waiting)} waiting) {where}")
        seen.add(item)
        prompt_tokens += waiting[item].prompt_len
    if prompt_tokens > free_tokens:
        raise MemoryOvercommitError(
            f"schedule() admitted {prompt_tokens} prompt tokens but only {free_tokens} tokens "
            f"({free_tokens / TOKENS_PER_GB:.3f} GB at {TOKENS_PER_GB} tokens/GB) are free {where}; "
            f"the sum of the admitted seq_len must not exceed gpu_mem_free_gb * {TOKENS_PER_GB}")
    return list(chosen)


def simulate(schedule: ScheduleFn, requests: list[Request], server: ServerModel = ServerModel(),
             stop_when_p99_reaches_ms: float = math.inf) -> SimulationResult:
    """Run the workload through the server, asking schedule(queue, gpu_mem_free_gb) every step.

    With stop_when_p99_reaches_ms, the run ends as soon as enough requests are (or will be) at
    least that late for P99 to reach it; the result is then marked stopped_early.
    """
    capacity = server.kv_capacity_tokens
    for r in requests:
        if r.prompt_len + r.output_len > capacity:
            raise ValueError(f"request {r.id} needs {r.prompt_len + r.output_len} tokens of KV cache "
                             f"but the server holds only {capacity}; shorten it or enlarge kv_capacity_gb")
    pending = sorted(requests, key=lambda r: r.arrival_ms)
    result = SimulationResult(num_requests=len(requests))
    if not pending:
        return result
    late_allowed = late_requests_for_violation(len(pending)) - 1
    late_finished = 0
    result.first_arrival_ms = pending[0].arrival_ms
    deadline_ms = pending[-1].arrival_ms + server.give_up_after_ms
    waiting: dict[int, Request] = {}  # in arrival order, so the scheduler sees the queue in that order
    running: list[_Running] = []  # admission order; the last one is preempted first
    used_tokens, next_arrival, now_ms = 0, 0, pending[0].arrival_ms

    while next_arrival < len(pending) or waiting or running:
        if now_ms > deadline_ms:
            break
        while next_arrival < len(pending) and pending[next_arrival].arrival_ms <= now_ms:
            waiting[pending[next_arrival].id] = pending[next_arrival]
            next_arrival += 1
        if not waiting and not running:
            now_ms = pending[next_arrival].arrival_ms
            continue
        if stop_when_p99_reaches_ms < math.inf:
            # Anyone already in the system this long will finish at least this late.
            cutoff = now_ms - stop_when_p99_reaches_ms
            late_now = late_finished + sum(r.arrival_ms <= cutoff for r in waiting.values()) \
                + sum(e.request.arrival_ms <= cutoff for e in running)
            if late_now > late_allowed:
                result.stopped_early = True
                break

        prefill_tokens = 0
        if waiting:
            free_tokens = capacity - used_tokens
            try:
                chosen = schedule(_queue_view(waiting, now_ms), free_tokens / TOKENS_PER_GB)
            except Exception as error:
                raise SchedulerCrashedError(
                    f"schedule() raised {type(error).__name__}: {error} at t={now_ms:.1f} ms "
                    f"with {len(waiting)} requests waiting") from error
            for request_id in validate_admission(chosen, waiting, free_tokens, now_ms):
                request = waiting.pop(request_id)
                running.append(_Running(request, generated=0))
                used_tokens += request.prompt_len
                prefill_tokens += request.prompt_len

        if not running:
            # The scheduler held everything back with an idle GPU: let time pass so wait_ms grows.
            upcoming = pending[next_arrival].arrival_ms if next_arrival < len(pending) else math.inf
            now_ms = min(upcoming, now_ms + server.idle_tick_ms)
            continue

        # Each running request is about to store one more token; evict the newest until they fit.
        preempted = False
        while used_tokens + len(running) > capacity:
            victim = running.pop()
            used_tokens -= victim.request.prompt_len + victim.generated
            result.wasted_tokens += victim.generated
            result.preemptions += 1
            waiting[victim.request.id] = victim.request
            preempted = True
        if preempted:
            waiting = dict(sorted(waiting.items(), key=lambda item: item[1].arrival_ms))

        step_ms = (server.step_overhead_ms + server.per_sequence_ms * len(running)
                   + server.per_context_token_ms * used_tokens
                   + server.prefill_per_token_ms * prefill_tokens
                   + (server.prefill_overhead_ms if prefill_tokens else 0.0))
        now_ms += step_ms
        result.busy_ms += step_ms
        result.steps += 1
        result.batch_size_sum += len(running)

        still_running = []
        for entry in running:
            entry.generated += 1
            used_tokens += 1
            if entry.generated < entry.request.output_len:
                still_running.append(entry)
                continue
            used_tokens -= entry.request.prompt_len + entry.generated
            latency_ms = now_ms - entry.request.arrival_ms
            result.latencies_ms[entry.request.id] = latency_ms
            result.output_tokens += entry.generated
            late_finished += latency_ms >= stop_when_p99_reaches_ms
        running = still_running

    result.end_ms = now_ms
    result.waiting_at_end = len(waiting)
    result.oldest_wait_at_end_ms = max((now_ms - r.arrival_ms for r in waiting.values()), default=0.0)
    result.unfinished_ids = sorted(set(waiting) | {e.request.id for e in running}
                                   | {r.id for r in pending[next_arrival:]})
    return result
