"""Framework overhead per search round, and memory across rounds, on the offline model.

Runs a real search (flows.search.evolve_search, Prefect subflow per round) on a throwaway
experiment whose evaluator is trivial, then prints:

1. the median framework time per round after warm-up, by stage (sample, retrieve, generate,
   evaluate, analyze, persist), where framework time = wall time minus the time spent in the
   LLM call (the offline mutator behind litellm) and in the evaluator subprocess, plus the
   Prefect subflow overhead and the search loop's own work between rounds (report publishing);
2. how that time evolves over the run (does a round get slower as the tree grows?);
3. resident memory of the search process across rounds, and the sizes of the stores.

Stage timings come from the nodes in the DuckDB tree; each includes its Prefect task's own
overhead. The round-flow wall time, persist time and RSS are observed by wrapping `evolve_round`
and `publish` with timers wherever the `flows` modules look them up (the project's code is not
changed). The Prefect server start (10-25 s cold) happens in a warm-up flow before the search
and is excluded.

    .venv/bin/python bench/round_overhead.py --rounds 500 [--workers 2] [--no-embeddings]
        [--sandbox auto|bwrap|process] [--profile out.prof]
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import cProfile
import importlib
import logging
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

GOAL_MS = 100.0  # framework time per round after warm-up
FLAT_MB_PER_100_ROUNDS = 2.0  # RSS growth we still call "flat"
STAGES = ("sample", "retrieve", "generate", "evaluate", "analyze", "persist")
TARGETS = (0.3, -1.2, 2.5, 0.05, 7.0, -3.3, 1.0, 0.8, -0.6, 4.2)

EXPERIMENT_FILES = {
    "input.md": "# Bench\n\nMove the ten constants A0..A9 towards hidden targets. Score: minus the "
                "sum of squared distances (0 is perfect).\n",
    "initial_program.py": "\n".join(
        ["# EVOLVE-BLOCK-START"] + [f"A{i} = {1.0 + i * 0.5:.1f}" for i in range(10)]
        + ["# EVOLVE-BLOCK-END", ""]
    ),
    "evaluator.py": (
        '"""Trivial bench evaluator: minus the squared distance of A0..A9 to fixed targets."""\n'
        "import runpy\n\n"
        f"TARGETS = {TARGETS!r}\n\n\n"
        "def evaluate(program_path):\n"
        "    values = runpy.run_path(program_path)\n"
        "    loss = sum((values[f'A{i}'] - t) ** 2 for i, t in enumerate(TARGETS))\n"
        "    return {'score': -loss, 'metrics': {'loss': loss}}\n"
    ),
    "knowledge/notes.md": "# Tuning constants\n\nSmall multiplicative steps refine a constant that "
                          "is nearly right; large jumps help when a constant is far off.\n",
}


def write_experiment(root: Path, sandbox: str) -> None:
    """Creates root/experiments/bench with the trivial problem and its config."""
    exp = root / "experiments" / "bench"
    for name, text in EXPERIMENT_FILES.items():
        (exp / name).parent.mkdir(parents=True, exist_ok=True)
        (exp / name).write_text(text)
    (exp / "config.yaml").write_text(
        "evaluation:\n  evaluator: evaluator.py\n  timeout_s: 20\n"
        f"  sandbox: {sandbox}\n"
        f"storage:\n  dir: {root / 'storage'}\n"
    )


# ---- process observations -------------------------------------------------------------------

def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process in MB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def prefect_server_pids() -> list[int]:
    """Child processes of this one that run the ephemeral Prefect server."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == me and (b"uvicorn" in cmdline or b"prefect" in cmdline):
            found.append(int(stat.parent.name))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20 if path.exists() else 0.0


# ---- observing the search -------------------------------------------------------------------

class RetryCounter(logging.Filter):
    """Counts the Prefect client's HTTP retries (logged at DEBUG) and lets only warnings through."""

    def __init__(self) -> None:
        super().__init__()
        self.retries: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "retryable" in message:
            self.retries.append(message.split(". Another")[0])
        return record.levelno >= logging.WARNING


@dataclass
class RoundObs:
    start: float
    end: float
    thread_cpu: float
    rss_mb: float
    persist: float
    analyze: float  # after the node is written (off the critical path): the analyst, then its lesson's write


@dataclass
class Probe:
    """Timers around the round flow and the report publishing, optionally with cProfile."""

    profile: bool = False
    rounds: dict[int, RoundObs] = field(default_factory=dict)
    publish_s: list[float] = field(default_factory=list)
    artifacts_s: list[float] = field(default_factory=list)  # ArtifactPublisher.after_round, per round
    log_s: list[float] = field(default_factory=list)  # the round's outcome line through the run logger
    profiles: dict[int, cProfile.Profile] = field(default_factory=dict)
    retry_counter: RetryCounter = field(default_factory=RetryCounter)

    def _profiler(self) -> cProfile.Profile | None:
        if not self.profile:
            return None
        return self.profiles.setdefault(threading.get_ident(), cProfile.Profile())

    def wrap_round(self, real_round):
        def timed_round(search_id: str, round_no: int, *args, **kwargs):
            prof = self._profiler()
            start, cpu = time.perf_counter(), time.thread_time()
            if prof:
                prof.enable()
            try:
                summary = real_round(search_id, round_no, *args, **kwargs)
            finally:
                if prof:
                    prof.disable()
            end = time.perf_counter()
            self.rounds[round_no] = RoundObs(start, end, time.thread_time() - cpu, rss_mb(),
                                             summary["timings"]["persist"],
                                             summary["timings"].get("analyze", 0.0) + summary["timings"].get("lesson", 0.0))
            return summary
        return timed_round

    def wrap_publish(self, real_publish):
        def timed_publish(rt) -> None:
            prof = self._profiler()
            start = time.perf_counter()
            if prof:
                prof.enable()
            try:
                real_publish(rt)
            finally:
                if prof:
                    prof.disable()
            self.publish_s.append(time.perf_counter() - start)
        return timed_publish


    def wrap_after_round(self, real_after_round):
        def timed_after_round(publisher, *args, **kwargs):
            start = time.perf_counter()
            try:
                return real_after_round(publisher, *args, **kwargs)
            finally:
                self.artifacts_s.append(time.perf_counter() - start)
        return timed_after_round

    def wrap_run_logger(self, real_get_run_logger):
        probe = self

        class TimedLogger:
            def __init__(self, logger):
                self.logger = logger

            def info(self, *args, **kwargs):
                start = time.perf_counter()
                try:
                    return self.logger.info(*args, **kwargs)
                finally:
                    probe.log_s.append(time.perf_counter() - start)

            def __getattr__(self, name):
                return getattr(self.logger, name)

        return lambda *args, **kwargs: TimedLogger(real_get_run_logger(*args, **kwargs))


def flow_modules() -> list:
    """The loaded modules of the flows package, except flows.round (which defines the round)."""
    return [m for n, m in list(sys.modules.items())
            if n.startswith("flows.") and n != "flows.round" and m is not None]


def run_search(root: Path, args: argparse.Namespace, probe: Probe) -> dict:
    """Starts the Prefect server with a warm-up flow, then runs the observed search."""
    from prefect import flow

    search = importlib.import_module("flows.search")  # the module, not the flow it exports

    logging.getLogger("prefect.task_runs").setLevel(logging.CRITICAL)  # as `evolveflow run` does
    client_log = logging.getLogger("prefect.client")
    client_log.addFilter(probe.retry_counter)
    client_log.setLevel(logging.DEBUG)  # the retry messages are DEBUG; the filter drops them

    @flow(name="bench-warm-up")
    def warm_up() -> int:
        return 1

    started = time.perf_counter()
    warm_up()
    print(f"Prefect server ready in {time.perf_counter() - started:.1f} s (excluded)", flush=True)
    overrides = {
        "pipeline.parallel.num_workers": args.workers,
        "cognition.embeddings": args.embeddings,
        "evaluation.sandbox": args.sandbox,
    }
    servers = prefect_server_pids()
    server_cpu = sum(cpu_seconds(p) for p in servers)
    started = time.perf_counter()
    with contextlib.ExitStack() as patches:
        for module in flow_modules():  # wherever the search looks these names up
            for name, wrap in (("evolve_round", probe.wrap_round), ("publish", probe.wrap_publish)):
                if callable(getattr(module, name, None)):
                    patches.enter_context(mock.patch.object(module, name, wrap(getattr(module, name))))
        artifacts = importlib.import_module("flows.artifacts")
        round_module = importlib.import_module("flows.round")
        patches.enter_context(mock.patch.object(artifacts.ArtifactPublisher, "after_round",
                                                probe.wrap_after_round(artifacts.ArtifactPublisher.after_round)))
        patches.enter_context(mock.patch.object(round_module, "get_run_logger",
                                                probe.wrap_run_logger(round_module.get_run_logger)))
        summary = search.evolve_search(experiment="bench", rounds=args.rounds, root=str(root),
                                       overrides=overrides)
    summary["bench_wall_s"] = time.perf_counter() - started
    summary["server_cpu_s"] = sum(cpu_seconds(p) for p in servers) - server_cpu
    summary["server_rss_mb"] = sum(rss_mb(p) for p in servers)
    return summary


# ---- reading the tree -----------------------------------------------------------------------

def round_rows(storage: Path, probe: Probe, workers: int) -> list[dict]:
    """One row per round: framework ms per stage and overall, from the tree and the probe."""
    import duckdb

    from storage.tree import TreeStore

    with TreeStore(storage / "tree.duckdb", read_only=True) as tree:
        nodes = [n for n in tree.nodes(sorted(tree.node_ids())) if n.round > 0]
    con = duckdb.connect(str(storage / "tree.duckdb"), read_only=True)
    try:
        llm = {(nid, purpose): s for nid, purpose, s in con.execute(
            "SELECT node_id, purpose, sum(coalesce(latency_s, 0)) FROM llm_calls GROUP BY ALL"
        ).fetchall()}
    finally:
        con.close()
    ordered = sorted(probe.rounds)
    next_start = {r: probe.rounds[n].start for r, n in zip(ordered, ordered[1:])}
    rows = []
    for node in nodes:
        obs, t = probe.rounds.get(node.round), node.timings
        if obs is None or "sample" not in t:
            continue
        external = t.get("llm", 0.0) + t.get("evaluator", 0.0)
        row = {
            "round": node.round,
            "sample": t["sample"],
            "retrieve": t["retrieve"],
            "generate": t["generate"] - llm.get((node.id, "propose"), 0.0),
            "evaluate": t["evaluate"] - t.get("evaluator", 0.0),
            "analyze": obs.analyze - llm.get((node.id, "analyze"), 0.0),
            "persist": obs.persist,
        }
        row["stages"] = sum(row[s] for s in STAGES)
        flow_wall = obs.end - obs.start
        row["prefect"] = flow_wall - sum(t[s] for s in STAGES[:-2]) - obs.analyze - obs.persist
        row["flow"] = flow_wall - external
        if workers == 1 and node.round in next_start:  # with more, rounds overlap
            row["cycle"] = next_start[node.round] - obs.start - external
        row["llm"], row["evaluator"] = t.get("llm", 0.0), t.get("evaluator", 0.0)
        row["thread_cpu"] = obs.thread_cpu
        rows.append({k: v * 1000 if k != "round" else v for k, v in row.items()})
    return rows


# ---- printing -------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def print_stage_table(rows: list[dict], probe: Probe, publish_ms: float, warmup: int, workers: int) -> None:
    rows = [r for r in rows if r["round"] > warmup]
    if not rows:
        print("no rounds after warm-up: use more --rounds")
        return
    first, last = min(r["round"] for r in rows), max(r["round"] for r in rows)
    print(f"\nFramework time per round, rounds {first}..{last} ({len(rows)} rounds, {workers} worker(s)), ms")
    print(f"{'stage':<50} {'median':>8} {'p90':>8} {'mean':>8} {'max':>8}")
    labels = [(s, s) for s in STAGES] + [
        ("stages", "sum of the six stages"),
        ("prefect", "Prefect subflow overhead (flow wall - stages)"),
        ("flow", "round flow wall - llm - evaluator"),
        ("cycle", "round cycle as seen by the search (1 worker)"),
        ("llm", "(excluded) LLM call: offline mutator via litellm"),
        ("evaluator", "(excluded) evaluator subprocess"),
        ("thread_cpu", "(info) CPU of the round's thread"),
    ]
    for key, label in labels:
        values = [r[key] for r in rows if key in r]
        if values:
            print(f"{label:<50} {statistics.median(values):>8.1f} {pct(values, 0.9):>8.1f} "
                  f"{statistics.fmean(values):>8.1f} {max(values):>8.1f}")
    print(f"{'(part of cycle) publish report.json':<50} {publish_ms:>8.1f}")
    for label, values in (("(part of cycle) Prefect artifacts after a round", probe.artifacts_s),
                          ("(part of round) outcome log line via run logger", probe.log_s)):
        if values:
            ms = [v * 1000 for v in values]
            print(f"{label:<50} {statistics.median(ms):>8.2f} {pct(ms, 0.9):>8.2f} "
                  f"{statistics.fmean(ms):>8.2f} {max(ms):>8.2f}")
    retries = probe.retry_counter.retries
    print(f"Prefect client HTTP retries during the run: {len(retries)} (each waits 2, 4, 8... s)"
          + (f", e.g. {max(set(retries), key=retries.count)!r}" if retries else ""))
    ends = sorted(o.end for r, o in probe.rounds.items() if r >= first - 1)
    if len(ends) > 1:
        print(f"{'throughput: wall ms per round incl. LLM + evaluator':<50} "
              f"{(ends[-1] - ends[0]) / (len(ends) - 1) * 1000:>8.1f}")
    print("medians do not add up: each line is the median of its own column")
    total_key = "cycle" if any("cycle" in r for r in rows) else "flow"
    for key, what in (("stages", "in-round stages"), (total_key, "whole round incl. Prefect")):
        median = statistics.median(r[key] for r in rows if key in r)
        print(f"goal < {GOAL_MS:.0f} ms framework time per round after warm-up ({what}): "
              f"{median:.1f} ms -> {verdict(median < GOAL_MS)}")


def print_trend(rows: list[dict], warmup: int) -> None:
    rows = [r for r in rows if r["round"] > warmup]
    last = max((r["round"] for r in rows), default=0)
    edges = [warmup] + [e for e in (25, 50, 100, 200, 300, 400, 500, 750, 1000) if warmup < e < last] + [last]
    keys = [k for k in ("sample", "retrieve", "generate", "evaluate", "analyze", "persist", "stages", "prefect",
                        "cycle")
            if any(k in r for r in rows)]
    print("\nMedian framework ms per window of rounds (does a round get slower as the tree grows?)")
    print(f"{'rounds':>10} " + " ".join(f"{k:>8}" for k in keys))
    for lo, hi in zip(edges, edges[1:]):
        window = [r for r in rows if lo < r["round"] <= hi]
        cells = []
        for k in keys:
            values = [r[k] for r in window if k in r]
            cells.append(f"{statistics.median(values):>8.1f}" if values else f"{'-':>8}")
        print(f"{f'{lo + 1}-{hi}':>10} " + " ".join(cells))


def print_memory(probe: Probe, summary: dict, storage: Path, warmup: int) -> None:
    rss = {r: o.rss_mb for r, o in sorted(probe.rounds.items())}
    first, last = min(rss), max(rss)
    marks = sorted({r for r in (first, first + warmup - 1, first + 9, first + 49, first + 99, first + 199,
                                first + 299, first + 399, last) if r in rss})
    print("\nResident memory of the search process (VmRSS), MB")
    print("  " + "  ".join(f"round {r - first + 1}: {rss[r]:.0f}" for r in marks))
    base = first + (49 if last - first >= 99 else 9)
    points = [(r, v) for r, v in rss.items() if r >= base]
    if len(points) >= 2:
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        slope = statistics.linear_regression(xs, ys).slope * 100
        print(f"  growth after round {base - first + 1}: {ys[-1] - ys[0]:+.1f} MB raw, "
              f"{slope:+.2f} MB per 100 rounds (least-squares fit)")
        print(f"goal memory flat across rounds (<= {FLAT_MB_PER_100_ROUNDS} MB per 100 rounds): "
              f"{slope:+.2f} MB/100 rounds -> {verdict(slope <= FLAT_MB_PER_100_ROUNDS)}")
    wal = storage / "tree.duckdb.wal"
    print(f"  Prefect server process RSS at end: {summary['server_rss_mb']:.0f} MB; its CPU during the "
          f"search: {summary['server_cpu_s']:.1f} s ({summary['server_cpu_s'] / max(len(rss), 1) * 1000:.0f} "
          "ms per round)")
    print(f"Stores at the end: DuckDB {(storage / 'tree.duckdb').stat().st_size / 2**20:.1f} MB"
          + (f" (+ WAL {wal.stat().st_size / 2**20:.1f} MB)" if wal.exists() else "")
          + f", LanceDB {dir_mb(storage / 'memory.lance'):.1f} MB "
          f"({sum(1 for _ in (storage / 'memory.lance').rglob('*') if _.is_file())} files), "
          f"report.json {(storage / 'report.json').stat().st_size / 1024:.0f} KB")


def print_profile(probe: Probe, out: Path | None) -> None:
    profiles = list(probe.profiles.values())
    if not profiles:
        return
    stats = pstats.Stats(profiles[0])
    for extra in profiles[1:]:
        stats.add(extra)
    if out:
        stats.dump_stats(str(out))
        print(f"\ncProfile of round threads and publish written to {out} (timings above are inflated)")
    print("\nTop 25 functions by cumulative time (round threads + publish):")
    stats.sort_stats("cumulative").print_stats(25)


# ---- main -----------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1, help="pipeline.parallel.num_workers")
    parser.add_argument("--embeddings", action=argparse.BooleanOptionalAction, default=True,
                        help="cognition.embeddings (default: on)")
    parser.add_argument("--sandbox", choices=("auto", "bwrap", "process"), default="auto")
    parser.add_argument("--warmup", type=int, default=5, help="rounds left out of the medians")
    parser.add_argument("--prefect-home", type=Path, help="reuse this PREFECT_HOME (default: a fresh temp dir)")
    parser.add_argument("--profile", nargs="?", const="", metavar="OUT.prof",
                        help="cProfile the round threads and publish (slows every round)")
    parser.add_argument("--keep", action="store_true", help="keep the temp experiment and storage")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="evolveflow-bench-"))
    if not args.keep:  # registered first, so it runs after Prefect's own exit hook stops the server
        atexit.register(shutil.rmtree, root, True)
    # Before Prefect is imported: its home, and no external API (the ephemeral server is measured).
    os.environ["PREFECT_HOME"] = str(args.prefect_home or root / "prefect-home")
    os.environ.pop("PREFECT_API_URL", None)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import evolveflow  # noqa: F401  (applies the quiet offline defaults)

    write_experiment(root, args.sandbox)
    print(f"bench: {args.rounds} rounds, {args.workers} worker(s), embeddings "
          f"{'on' if args.embeddings else 'off'}, sandbox {args.sandbox}, in {root}", flush=True)
    probe = Probe(profile=args.profile is not None)
    summary = run_search(root, args, probe)
    storage = root / "storage"
    print(f"search done: {summary['rounds_done']} rounds in {summary['bench_wall_s']:.1f} s "
          f"({summary['bench_wall_s'] / max(summary['rounds_done'], 1) * 1000:.0f} ms per round incl. "
          f"LLM, evaluator and start-up); outcomes {summary['by_status']}, best {summary['best_score']}")
    print("load average at the end (1/5/15 min, 2 cores = fully busy at 2.0): "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    if not probe.rounds:
        print("no round finished: nothing to measure (see the errors above)")
        return 1
    rows = round_rows(storage, probe, args.workers)
    publish = statistics.median(probe.publish_s[args.warmup:-1] or probe.publish_s) * 1000
    print_stage_table(rows, probe, publish, args.warmup, args.workers)
    print_trend(rows, args.warmup)
    print_memory(probe, summary, storage, args.warmup)
    if probe.profile:
        print_profile(probe, Path(args.profile) if args.profile else None)
    if args.keep:
        print(f"kept {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
