"""Prefect server backends compared: SQLite (`prefect server start`) vs PostgreSQL (scripts/prefect-postgres.sh).

Starts both servers side by side, each with PREFECT_API_LOG_RETRYABLE_ERRORS=true so that every
HTTP 503 it answers (SQLite: "database is locked") is logged, then runs the same search through
the CLI against each, interleaved: `evolveflow run bench --rounds R --workers W` with
PREFECT_API_URL set, on round_overhead's throwaway experiment (ten constants, a trivial
evaluator) and the offline model, a fresh tree per run. Per run it counts:

* server 503s: "Encountered retryable exception in request" lines the server logged meanwhile;
* client retries: the Prefect client's "retryable" DEBUG lines (prefect.client at DEBUG) and the
  back-off seconds they announce;
* stalls: gaps of more than --stall-s (5 s) between consecutive round lines, and their total;
* rounds/min from the first round line to the last (Prefect start-up is excluded).

    .venv/bin/python bench/prefect_backends.py [--rounds 60] [--workers 1,4,8] [--keep]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.chaos import ROUND_LINE, free_port, start_prefect, stop_group  # noqa: E402
from bench.round_overhead import write_experiment  # noqa: E402

BACKOFF = re.compile(r"Another attempt will be made in ([0-9.]+)s")
SERVER_503 = "Encountered retryable exception in request"
SERVER_ENV = {  # both servers: log every 503; the task-run batching evolveflow gives its own server
    "PREFECT_API_LOG_RETRYABLE_ERRORS": "true",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "200",
}


@dataclass
class Server:
    name: str
    url: str
    log: Path
    proc: subprocess.Popen
    start_s: float

    def count_503(self) -> int:
        return self.log.read_text(errors="replace").count(SERVER_503)


@dataclass
class Result:
    backend: str
    workers: int
    rounds: int = 0
    exit_code: int | None = None
    wall_s: float = 0.0
    rounds_per_min: float = 0.0
    server_503: int = 0
    client_retries: int = 0
    backoff_s: float = 0.0  # sum of the back-offs the client announced
    read_timeouts: int = 0
    stalls: list[float] = field(default_factory=list)


def start_sqlite(work: Path) -> Server:
    """`prefect server start` on its default SQLite database in a fresh PREFECT_HOME."""
    saved = {k: os.environ.get(k) for k in SERVER_ENV}
    os.environ.update(SERVER_ENV)  # start_prefect passes os.environ on to the server
    try:
        log = work / "sqlite-server.log"
        proc, url, seconds = start_prefect(work / "sqlite-home", log)
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    return Server("SQLite", url, log, proc, seconds)


def start_postgres(work: Path) -> Server:
    """scripts/prefect-postgres.sh with a private cluster under work/ (mode 755: postgres must reach it)."""
    pg_dir = work / "pg"
    pg_dir.mkdir(mode=0o755)
    env = {**os.environ, **SERVER_ENV}
    env.pop("PREFECT_API_URL", None)
    started = time.monotonic()
    with (work / "pg-script.log").open("wb") as out:
        proc = subprocess.Popen([str(REPO / "scripts" / "prefect-postgres.sh"), "--dir", str(pg_dir),
                                 "--port", str(free_port())], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url_file = pg_dir / "prefect.url"
    while not url_file.exists():
        if proc.poll() is not None or time.monotonic() - started > 180:
            stop_group(proc)
            raise RuntimeError(f"prefect-postgres.sh did not start: {(work / 'pg-script.log').read_text()[-2000:]}")
        time.sleep(0.3)
    return Server("PostgreSQL", url_file.read_text().strip(), pg_dir / "prefect.log", proc, time.monotonic() - started)


def run_search(server: Server, workers: int, rounds: int, work: Path, stall_s: float, timeout_s: float) -> Result:
    """One `evolveflow run` against a server, timestamping each round line as it is printed."""
    root = work / f"{server.name.lower()}-w{workers}"
    root.mkdir()
    write_experiment(root, "process")
    env = {**os.environ, "PREFECT_API_URL": server.url, "PREFECT_HOME": str(root / "prefect-home"),
           "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_LOGGING_LOGGERS_PREFECT_CLIENT_LEVEL": "DEBUG",
           "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "DEBUG"}
    before = server.count_503()
    result, stamps, lines = Result(server.name, workers), [], []
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "evolveflow.cli", "run", "bench", "--rounds", str(rounds),
                             "--workers", str(workers)], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if ROUND_LINE.match(line):
                stamps.append(time.monotonic())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        result.exit_code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_group(proc)
    reader.join(10)
    result.wall_s = time.monotonic() - started
    (root / "search.log").write_text("".join(lines))
    text = "".join(lines)
    result.rounds = len(stamps)
    if len(stamps) > 1:
        result.rounds_per_min = (len(stamps) - 1) / (stamps[-1] - stamps[0]) * 60
    result.stalls = [b - a for a, b in zip(stamps, stamps[1:]) if b - a > stall_s]
    result.client_retries = text.count("retryable")
    result.backoff_s = sum(float(x) for x in BACKOFF.findall(text))
    result.read_timeouts = text.count("ReadTimeout")
    time.sleep(1)  # let the server flush its last log lines
    result.server_503 = server.count_503() - before
    return result


def print_table(results: list[Result], servers: list[Server], rounds: int, stall_s: float) -> None:
    print(f"\n{rounds} rounds per run, offline model, trivial evaluator; stall = gap > {stall_s:g} s between round lines")
    print(", ".join(f"{s.name} server healthy in {s.start_s:.1f} s" for s in servers))
    header = ("backend", "workers", "rounds", "exit", "server 503s", "client retries (backoff s)", "read timeouts",
              "stalls (total s)", "rounds/min")
    rows = [(r.backend, str(r.workers), str(r.rounds), str(r.exit_code), str(r.server_503), f"{r.client_retries} ({r.backoff_s:.0f})",
             str(r.read_timeouts), f"{len(r.stalls)} ({sum(r.stalls):.0f})", f"{r.rounds_per_min:.1f}")
            for r in results]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--workers", default="1,4,8", help="comma-separated worker counts")
    parser.add_argument("--stall-s", type=float, default=5.0)
    parser.add_argument("--timeout-s", type=float, default=900.0, help="per search run")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, trees)")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="prefect-backends-"))
    work.chmod(0o755)
    servers: list[Server] = []
    results: list[Result] = []
    try:
        servers = [start_sqlite(work), start_postgres(work)]
        for w in workers:  # interleaved, so that drift of the machine hits both backends alike
            for server in servers:
                result = run_search(server, w, args.rounds, work, args.stall_s, args.timeout_s)
                print(f"{result.backend:10} workers {w}: {result.rounds} rounds, exit {result.exit_code}, "
                      f"{result.server_503} server 503s, {result.client_retries} client retries, "
                      f"{len(result.stalls)} stalls, {result.rounds_per_min:.1f} rounds/min", flush=True)
                results.append(result)
    finally:
        for server in servers:
            stop_group(server.proc, wait_s=40)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_table(results, servers, args.rounds, args.stall_s)
    return 0 if all(r.exit_code == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
