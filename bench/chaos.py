"""Chaos bench: a search through a flaky evaluator, a faulty LLM server and a kill -9, then an audit; then an LLM-down and a disk-full phase.

Builds a throwaway experiment `chaos` in a temporary root: eight float constants C0..C7 in an
EVOLVE-BLOCK, and an evaluator whose TRUE (noiseless) score is minus the squared distance of the
constants to hidden targets. Per attempt, seeded by the `seed` the framework passes:

* with probability --infra-rate (0.30) it returns {"retry": true, "error": "injected infra failure"}
  (a documented infrastructure failure, retried by Prefect up to tasks.evaluate.retries = 4);
* otherwise it returns the true score plus Gaussian noise with sigma = --noise (5%) of |true score|,
  and metrics {"true_score": ...}.

The "LLM" is tests/support/openai_server.FakeOpenAIServer on loopback with 20% seeded faults
(429, 500, 503, reset, empty, truncated, prose); its healthy replies are real SEARCH/REPLACE edits
from evolveflow.llm.offline.mutator_reply (lessons from analyst_reply). A real Prefect API server
(`prefect server start`) serves both search subprocesses. The first `python -m evolveflow.cli run`
is killed with SIGKILL (whole process group) once report.json says about half of the rounds are
in the tree; a second run does the remaining rounds. Then the DuckDB tree is audited read-only and
a table is printed; rows marked "must be 0" print PASS/FAIL and any FAIL makes the exit status 1.
Then two breaker phases: the experiment pointed at an LLM that answers only 503 (the search must
stop by itself, exit 3, no request after), and a copy whose storage is a 64 MB tmpfs filled mid-run
(root only: exit 3 naming "No space left on device", then a run after freeing space resumes).

    .venv/bin/python bench/chaos.py --rounds 200 [--seed 0] [--workers 2] [--embeddings] [--keep]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evolveflow.records import Status  # noqa: E402
from storage.memory import MemoryStore  # noqa: E402
from storage.tree import TreeStore  # noqa: E402
from tests.support.openai_server import FakeOpenAIServer, offline_responder  # noqa: E402

EXPERIMENT = "chaos"
FINAL = ("ok", "candidate_error", "infra_failed", "rejected")
EVALUATED = ("ok", "candidate_error", "infra_failed")
LLM_FAULTS = ("429", "500", "503", "reset", "empty", "truncated", "prose")
ROUND_LINE = re.compile(r"^round\s+(\d+)\s+node\s+(\d+)\s+(\S+)", re.M)
# Initial values share the targets' signs: the offline mutator scales floats, it never flips a sign.
INITIAL = (1.0, -1.0, 1.0, 1.0, 1.0, -1.0, 1.0, 1.0)
TARGETS = (0.3, -1.2, 2.5, 0.05, 3.0, -2.2, 1.7, 0.8)

EVALUATOR = '''"""Chaos evaluator: true score = minus squared distance to hidden targets; seeded faults and noise."""
import random
import runpy

TARGETS = {targets!r}
INFRA_RATE = {infra_rate!r}
NOISE = {noise!r}  # sigma of the Gaussian noise, relative to |true score|


def true_score(program_path):
    """The noiseless score of a program."""
    values = runpy.run_path(program_path)
    return -sum((float(values["C%d" % i]) - t) ** 2 for i, t in enumerate(TARGETS))


def evaluate(program_path, seed=None):
    rng = random.Random(seed)
    if rng.random() < INFRA_RATE:
        return {{"retry": True, "error": "injected infra failure"}}
    true = true_score(program_path)
    return {{"score": true + rng.gauss(0.0, NOISE * abs(true)), "metrics": {{"true_score": true}}}}
'''

CONFIG = """evaluation:
  evaluator: evaluator.py
  timeout_s: 20
  outlier: {{enabled: true}}
tasks:
  sample: {{retries: 1, delay_s: 0.05}}
  retrieve: {{retries: 1, delay_s: 0.05}}
  generate: {{retries: 2, delay_s: 0.05}}
  evaluate: {{retries: 4, delay_s: 0.05}}
  analyze: {{retries: 1, delay_s: 0.05}}
  persist: {{retries: 3, delay_s: 0.05}}
pipeline:
  seed: {seed}
  parallel: {{num_workers: {workers}}}
cognition: {{embeddings: {embeddings}}}
api:
  model: openai/chaos
  api_base: {api_base}
  api_key_env: CHAOS_API_KEY
  num_retries: 3
  retry_backoff_s: 0.05
  timeout_s: 10
"""


def write_experiment(root: Path, args: argparse.Namespace, api_base: str) -> Path:
    """Creates root/experiments/chaos with its program, evaluator, problem and config."""
    exp = root / "experiments" / EXPERIMENT
    exp.mkdir(parents=True)
    (exp / "input.md").write_text("# Chaos\n\nMove the constants C0..C7 towards hidden targets; "
                                  "score = minus the squared distance (0 is perfect).\n")
    block = [f"C{i} = {v!r}" for i, v in enumerate(INITIAL)]
    (exp / "initial_program.py").write_text("\n".join(["# EVOLVE-BLOCK-START", *block, "# EVOLVE-BLOCK-END", ""]))
    (exp / "evaluator.py").write_text(EVALUATOR.format(targets=TARGETS, infra_rate=args.infra_rate, noise=args.noise))
    (exp / "config.yaml").write_text(CONFIG.format(
        seed=args.seed, workers=args.workers, embeddings=str(args.embeddings).lower(), api_base=api_base))
    return exp


def make_responder(seed: int):
    """A FakeOpenAIServer responder: real edits for proposals, a lesson for analysis prompts."""
    return offline_responder(seed)


# ---- processes ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_prefect(home: Path, log: Path) -> tuple[subprocess.Popen, str, float]:
    """Starts `prefect server start` on a free loopback port; returns (process, API URL, seconds)."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1", "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host",
                                 "127.0.0.1", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    while time.monotonic() - started < 120:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as reply:
                if reply.status == 200:
                    return proc, url, time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.3)
    stop_group(proc)
    raise RuntimeError("prefect server did not become healthy within 120 s")


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, wait_s: float = 15) -> None:
    """Stops a process we started in its own session (SIGTERM, then SIGKILL)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait_s)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    proc.wait()


def start_search(root: Path, env: dict, rounds: int, log: Path) -> subprocess.Popen:
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "evolveflow.cli", "run", EXPERIMENT, "--rounds", str(rounds)],
                                cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class Run:
    """One search subprocess: its log, wall time and the rounds it printed as done."""

    log: Path
    seconds: float = 0.0
    launched: float = 0.0  # epoch seconds when the subprocess was started
    ended: float = 0.0  # epoch seconds when it was killed or exited
    startup_s: float | None = None  # launch to the search's row in the runs table
    exit_code: int | None = None
    printed: dict[int, tuple[int, str]] = field(default_factory=dict)  # round -> (node, status)
    last_report: dict | None = None

    def parse(self) -> None:
        text = self.log.read_text(errors="replace")
        self.printed = {int(r): (int(n), s) for r, n, s in ROUND_LINE.findall(text)}


def run_and_kill(root: Path, env: dict, rounds: int, kill_at: int, run: Run, timeout_s: float) -> None:
    """Runs the first search and kill -9s its process group once report.json shows kill_at rounds."""
    report_path = root / "runs" / EXPERIMENT / "report.json"
    patience = min(10, (rounds - kill_at) // 4)  # rounds to wait past kill_at for an in-flight candidate
    started, run.launched = time.monotonic(), time.time()
    proc = start_search(root, env, rounds, run.log)
    try:
        while time.monotonic() - started < timeout_s:
            report = read_json(report_path)
            if report and report.get("running"):
                run.last_report = report
                # Kill while a candidate is in flight (pending in the published report), if one
                # shows up within a few rounds of the target.
                in_flight = (report.get("by_status") or {}).get("pending", 0) > 0
                if report.get("rounds", 0) >= kill_at and (in_flight or report["rounds"] >= kill_at + patience):
                    break
            if proc.poll() is not None:
                raise RuntimeError(f"first run ended ({proc.returncode}) before the kill: {run.log.read_text()[-3000:]}")
            time.sleep(0.02)  # the pending candidate of a report is usually done within ~0.3 s
        else:
            raise RuntimeError(f"first run did not reach round {kill_at} in {timeout_s:.0f} s")
        os.killpg(proc.pid, signal.SIGKILL)
        run.ended = time.time()
        last = read_json(report_path)  # a round may have finished between the poll and the kill
        if last and last.get("running"):
            run.last_report = last
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        run.exit_code = proc.wait()
        run.seconds = time.monotonic() - started
    run.parse()


def run_to_end(root: Path, env: dict, rounds: int, run: Run, timeout_s: float) -> None:
    started, run.launched = time.monotonic(), time.time()
    proc = start_search(root, env, rounds, run.log)
    try:
        run.exit_code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_group(proc, signal.SIGKILL)
        run.exit_code = None
    run.seconds, run.ended = time.monotonic() - started, time.time()
    run.parse()


# ---- the audit ------------------------------------------------------------------------------

def snapshot(tree_path: Path) -> dict:
    """Every node's (round, status, score) and the max round, read while no search runs."""
    with TreeStore(tree_path, read_only=True, lock_wait_s=10) as tree:
        nodes = {n.id: (n.round, n.status.value, n.score) for n in tree.summaries()}
        max_round = tree.max_round()
    try:  # round numbers handed out: one killed before its node was written is never reused
        issued = int((tree_path.parent / "last_round").read_text().strip() or 0)
    except (OSError, ValueError):
        issued = 0
    return {"nodes": nodes, "max_round": max_round, "issued": max(issued, max_round)}


def load_true_score(evaluator: Path):
    spec = importlib.util.spec_from_file_location("chaos_evaluator", evaluator)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.true_score


def true_of(code: str, true_score, scratch: Path) -> float:
    path = scratch / "program.py"
    path.write_text(code)
    return true_score(path)


def audit(tree_path: Path, rounds: int, before: dict, runs: list[Run], true_score,
          scratch: Path) -> dict:
    """Reads the finished tree and returns every number of the table."""
    import duckdb

    out: dict = {}
    with TreeStore(tree_path, read_only=True, lock_wait_s=10) as tree:
        best = tree.best()
        out["best"] = best
        out["best_attempts"] = tree.attempts(best.id) if best else []
        ok_codes = {n.id: n.code for n in tree.nodes(tree.ids_with_status(Status.OK))}
    con = duckdb.connect(str(tree_path), read_only=True)
    q = lambda sql, *p: con.execute(sql, list(p)).fetchall()  # noqa: E731
    nodes = {r[0]: r[1:] for r in q("SELECT id, round, status, score, code_hash, error, notes FROM nodes")}
    status_of = {i: v[1] for i, v in nodes.items()}
    final_rounds = Counter(v[0] for v in nodes.values() if v[0] >= 1 and v[1] in FINAL)
    out["completed"] = sum(final_rounds.values())
    out["duplicate_rounds"] = {r: c for r, c in final_rounds.items() if c > 1}
    out["abandoned_nodes"] = sorted(i for i, s in status_of.items() if s == "abandoned")
    kill_round = before["max_round"]
    issued = before["issued"]  # run 2 starts after every number run 1 handed out
    out["kill_window"] = sorted(r for r in range(1, issued + 1) if r not in final_rounds)
    out["run2_missing"] = sorted(r for r in range(issued + 1, issued + rounds - kill_round + 1)
                                 if r not in final_rounds)
    out["pending"] = sorted(i for i, s in status_of.items() if s == "pending")

    # Lost: rounds printed as done (either run) missing from the tree or changed; first-run final
    # nodes changed by the restart; fewer first-run final nodes than its last report counted.
    lost = []
    for run in runs:
        for rnd, (node, status) in sorted(run.printed.items()):
            got = nodes.get(node)
            if got is None or got[0] != rnd or got[1] != status:
                lost.append(f"round {rnd} node {node} printed {status}, tree has {got[:2] if got else 'nothing'}")
    for node, (rnd, status, score) in before["nodes"].items():
        got = nodes.get(node)
        if status in FINAL and (got is None or got[1] != status or got[2] != score):
            lost.append(f"node {node} was {status} {score} before the restart, now {got[1:3] if got else 'missing'}")
    report = runs[0].last_report or {}
    reported_final = sum(v for k, v in (report.get("by_status") or {}).items() if k in FINAL)
    tree_final_run1 = sum(1 for v in nodes.values() if v[0] <= kill_round and v[1] in FINAL)
    if tree_final_run1 < reported_final:
        lost.append(f"last report before the kill counted {reported_final} final nodes, tree has {tree_final_run1}")
    out["lost"] = lost
    out["reported_final"], out["tree_final_run1"] = reported_final, tree_final_run1

    # Infra failures recorded as scores.
    bad = [f"node {i}: infra_failed with score {v[2]}" for i, v in nodes.items() if v[1] == "infra_failed" and v[2] is not None]
    ok_attempts: dict[int, list[float]] = {}
    for node_id, score in q("SELECT node_id, score FROM attempts WHERE outcome = 'ok'"):
        ok_attempts.setdefault(node_id, []).append(score)
    bad += [f"node {i}: ok without an ok attempt" for i, s in status_of.items() if s == "ok" and i not in ok_attempts]
    out["infra_as_score"] = bad
    out["median_mismatch"] = [
        f"node {i}: score {nodes[i][2]} vs median {statistics.median(ok_attempts[i])}"
        for i, s in status_of.items() if s == "ok" and i in ok_attempts
        and abs(nodes[i][2] - statistics.median(ok_attempts[i])) > 1e-12 * max(1.0, abs(nodes[i][2]))
    ]

    # Duplicate evaluations.
    dups = q(f"SELECT code_hash, list(id ORDER BY id), list(status ORDER BY id) FROM nodes "
             f"WHERE status IN {EVALUATED} GROUP BY code_hash HAVING count(*) > 1")
    out["duplicates"] = [(ids, statuses) for _, ids, statuses in dups]

    # Faults and their outcomes.
    out["attempts"] = dict(q("SELECT outcome, count(*) FROM attempts GROUP BY outcome"))
    out["infra_failed_nodes"] = sorted(i for i, s in status_of.items() if s == "infra_failed")
    out["infra_failed_attempts"] = {i: [r[0] for r in q("SELECT outcome FROM attempts WHERE node_id = ? ORDER BY attempt", i)]
                                    for i in out["infra_failed_nodes"]}
    out["nodes_with_infra_error"] = q("SELECT count(DISTINCT node_id) FROM attempts WHERE outcome = 'infra_error'")[0][0]
    out["llm_calls"] = q("SELECT count(*), count(error) FROM llm_calls")[0]
    out["llm_errors_by_purpose"] = dict(q("SELECT purpose, count(*) FROM llm_calls WHERE error IS NOT NULL GROUP BY purpose"))
    rejected = Counter()
    for v in nodes.values():
        if v[1] == "rejected":
            text = v[4] or ""
            rejected[re.split(r"[:;(]| of node| in \d", text, maxsplit=1)[0].strip() or "(no reason)"] += 1
    out["rejected"] = rejected
    out["reruns"] = sorted(i for i, v in nodes.items() if (v[5] or "").startswith("re-run before acceptance"))
    out["status_counts"] = Counter(status_of.values())
    lessons = MemoryStore(tree_path.parent / "memory.lance", None).lesson_node_ids()
    out["orphan_lessons"] = sorted(lessons - set(nodes))
    out["no_lesson"] = sorted(i for i, s in status_of.items() if s in ("ok", "candidate_error") and i not in lessons)
    # DuckDB's current_timestamp is UTC; naive datetimes from it are read as UTC here.
    starts = sorted(r[0].replace(tzinfo=timezone.utc).timestamp() for r in q("SELECT started_at FROM runs"))
    for run in runs:
        after = [t for t in starts if t >= run.launched - 1]
        if after and after[0] <= run.ended:
            run.startup_s = after[0] - run.launched
    con.close()

    trues = {i: true_of(code, true_score, scratch) for i, code in ok_codes.items()}
    out["true_best"] = max(trues.items(), key=lambda kv: kv[1]) if trues else None
    if out["best"] is not None:
        out["best_true"] = trues[out["best"].id]
        out["best_true_metric"] = out["best"].metrics.get("true_score")
        out["best_rank"] = 1 + sum(t > out["best_true"] for t in trues.values())
    out["n_ok"] = len(trues)
    return out


# ---- the table ------------------------------------------------------------------------------

def print_table(args, a: dict, runs: list[Run], server: FakeOpenAIServer, prefect_s: float, total_s: float,
                kill_info: dict) -> bool:
    """Prints the audit; returns True when every must-be-0 row passes."""
    ok = True
    rows: list[tuple[str, str, str]] = []

    def row(name: str, value, must_be_zero: bool | None = None, count: int | None = None) -> None:
        nonlocal ok
        verdict = ""
        if must_be_zero:
            passed = (count if count is not None else value) == 0
            ok &= passed
            verdict = "PASS" if passed else "FAIL"
        rows.append((name, str(value), verdict))

    r1, r2 = runs
    row("rounds asked", args.rounds)
    row("rounds completed (round >= 1, final status)", a["completed"])
    row("abandoned: in flight at the kill (rounds)", f"{len(a['kill_window'])} (rounds {a['kill_window']}; "
        f"abandoned nodes {a['abandoned_nodes']})")
    row("  kill: report rounds / tree max round / pending nodes",
        f"{kill_info['report_rounds']} / {kill_info['max_round']} / {kill_info['pending']}")
    row("nodes lost (printed/reported done but missing or changed)", len(a["lost"]), True)
    row("nodes left pending after the restart", len(a["pending"]), True)
    row("second-run rounds without a final node", len(a["run2_missing"]), True)
    row("rounds with more than one final node", len(a["duplicate_rounds"]), True)
    row("infra failures recorded as scores", len(a["infra_as_score"]), True)
    row("ok nodes whose score is not the median of their ok attempts", len(a["median_mismatch"]), True)
    dup_extra = sum(len(ids) - 1 for ids, _ in a["duplicates"])
    row("duplicate evaluations (evaluated nodes sharing a code_hash)", dup_extra, True)
    att = a["attempts"]
    total_att = sum(att.values())
    row("evaluator attempts: ok / candidate_error / infra_error",
        f"{att.get('ok', 0)} / {att.get('candidate_error', 0)} / {att.get('infra_error', 0)} "
        f"({att.get('infra_error', 0) / max(total_att, 1):.1%} infra; injected rate {args.infra_rate:.0%})")
    row("infra failures injected (attempts with outcome infra_error)", att.get("infra_error", 0))
    row("  nodes that hit >= 1 infra error / recovered by retries",
        f"{a['nodes_with_infra_error']} / {a['nodes_with_infra_error'] - len(a['infra_failed_nodes'])}")
    row("  nodes infra_failed after retries ran out", f"{len(a['infra_failed_nodes'])} {a['infra_failed_nodes']}")
    faults = server.stats.faults
    row("LLM requests: healthy / faults injected", f"{server.stats.served} / {sum(faults.values())} "
        f"({', '.join(f'{k} {faults[k]}' for k in LLM_FAULTS if faults[k])})")
    calls, errors = a["llm_calls"]
    row("LLM calls recorded / ended in error", f"{calls} / {errors} {dict(a['llm_errors_by_purpose'])}")
    row("fake server handler errors", len(server.errors))
    row("lessons pointing at nodes not in the tree", len(a["orphan_lessons"]), True)
    row("  evaluated nodes without a lesson (the initial program has none)", f"{len(a['no_lesson'])} {a['no_lesson'][:10]}")
    row("rejected nodes by reason", ", ".join(f"{k}: {v}" for k, v in a["rejected"].most_common()) or "0")
    row("node statuses", ", ".join(f"{k} {v}" for k, v in sorted(a["status_counts"].items())))
    best = a["best"]
    if best is not None:
        metric = a["best_true_metric"]
        row("best reported: node / score (median of attempts)",
            f"{best.id} / {best.score:.6f} ({len(a['best_attempts'])} attempts, spread {best.score_spread or 0:.4g})")
        row("  its TRUE score (recomputed; metrics)", f"{a['best_true']:.6f}; {metric if metric is None else round(metric, 6)} "
            f"(reported - true {best.score - a['best_true']:+.6f}; rank {a['best_rank']} of {a['n_ok']} ok nodes by TRUE)")
    if a["true_best"]:
        row("best TRUE score in the tree", f"{a['true_best'][1]:.6f} (node {a['true_best'][0]})")
    row("outlier re-runs done (notes 're-run before acceptance')", len(a["reruns"]))
    row("Prefect server start", f"{prefect_s:.1f} s")
    for name, run in (("run 1 (killed)", r1), ("run 2 (to the end)", r2)):
        rate = len(run.printed) / (run.seconds / 60) if run.seconds else 0.0
        row(f"{name}: wall / rounds printed / rounds per minute",
            f"{run.seconds:.1f} s / {len(run.printed)} / {rate:.1f} (exit {run.exit_code})")
        if run.startup_s is not None:
            loop_s = run.ended - run.launched - run.startup_s
            row("  process start to search start / rounds per minute after it",
                f"{run.startup_s:.1f} s / {len(run.printed) / (loop_s / 60):.1f}")
    row("total bench wall time", f"{total_s:.1f} s")

    width = max(len(r[0]) for r in rows)
    print(f"\nchaos bench: {args.rounds} rounds, seed {args.seed}, workers {args.workers}, "
          f"embeddings {args.embeddings}, infra rate {args.infra_rate}, noise {args.noise}, LLM fault rate {args.fault_rate}")
    for name, value, verdict in rows:
        print(f"{name:<{width}}  {value}" + (f"   [{verdict}, must be 0]" if verdict else ""))
    for title, items in (("lost", a["lost"]), ("pending", a["pending"]), ("infra as score", a["infra_as_score"]),
                         ("median mismatch", a["median_mismatch"]), ("duplicates", a["duplicates"]),
                         ("lessons of missing nodes", a["orphan_lessons"]),
                         ("second-run rounds missing", a["run2_missing"]),
                         ("rounds with several final nodes", a["duplicate_rounds"])):
        if items:
            print(f"\n{title}:")
            for item in list(items)[:20]:
                print(f"  {item}")
    for node, outcomes in a["infra_failed_attempts"].items():
        print(f"infra_failed node {node}: attempts {outcomes}")
    print("\nresult:", "PASS" if ok else "FAIL")
    return ok


# ---- breaker phases: the LLM down, the disk full ------------------------------------------------

def llm_down_phase(root: Path, env: dict, args) -> dict:
    """Points the experiment at an LLM that answers 503 to everything; the search must stop by itself."""
    with FakeOpenAIServer(responder=["x"], faults=lambda body: "503") as down:
        config = root / "experiments" / EXPERIMENT / "config.yaml"
        original = config.read_text()
        config.write_text(re.sub(r"api_base: \S+", f"api_base: {down.base_url}", original))
        try:
            started = time.monotonic()
            done = subprocess.run([sys.executable, "-m", "evolveflow.cli", "run", EXPERIMENT, "--rounds", "500"],
                                  cwd=root, env=env, capture_output=True, text=True, timeout=args.timeout)
            seconds = time.monotonic() - started
            requests = len(down.requests)
            time.sleep(1.0)
            after = len(down.requests) - requests
        finally:
            config.write_text(original)
    said = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("evolveflow: stopped")]
    return {"exit": done.returncode, "seconds": seconds, "requests": requests, "after": after,
            "message": said[-1] if said else (done.stdout + done.stderr)[-300:]}


def disk_full_phase(root: Path, env: dict, args) -> dict | None:
    """Runs a copy of the experiment with its storage on a 64 MB tmpfs and fills it mid-run."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return None
    disk_root = root / "disk-full"
    shutil.copytree(root / "experiments", disk_root / "experiments")
    runs = disk_root / "runs"
    runs.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(runs)], capture_output=True).returncode:
        return None
    server = FakeOpenAIServer(responder=make_responder(args.seed)).start()
    try:
        config = disk_root / "experiments" / EXPERIMENT / "config.yaml"
        config.write_text(re.sub(r"api_base: \S+", f"api_base: {server.base_url}", config.read_text()))
        log = disk_root / "run.log"
        proc = start_search(disk_root, env, 500, log)
        report = runs / EXPERIMENT / "report.json"
        deadline = time.monotonic() + args.timeout
        while ((read_json(report) or {}).get("rounds") or 0) < 3:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_group(proc)
                return {"exit": proc.returncode, "message": log.read_text()[-300:]}
            time.sleep(0.2)
        with open(runs / "filler", "wb") as filler:
            try:
                while True:
                    filler.write(b"\0" * (1 << 20))
                    filler.flush()
            except OSError:
                pass
        full_at, requests_at_full = time.monotonic(), len(server.requests)
        proc.wait(timeout=args.timeout)
        seconds = time.monotonic() - full_at
        text = log.read_text(errors="replace")
        (runs / "filler").unlink()
        again = subprocess.run([sys.executable, "-m", "evolveflow.cli", "run", EXPERIMENT, "--rounds", "2"],
                               cwd=disk_root, env=env, capture_output=True, text=True, timeout=args.timeout)
        said = [line for line in text.splitlines() if line.startswith("evolveflow: stopped")]
        return {"exit": proc.returncode, "seconds": seconds, "requests": len(server.requests) - requests_at_full,
                "no_space": "No space left on device" in text, "traceback": "Traceback" in text,
                "resumed": again.returncode, "message": said[-1] if said else text[-300:]}
    finally:
        server.stop()
        subprocess.run(["umount", "-l", str(runs)], capture_output=True)


def print_breakers(llm: dict, disk: dict | None) -> bool:
    """Prints the breaker phases; returns whether both behaved (exit 3, nothing spent after)."""
    print("\n| breaker phase | value |\n|---|---|")
    print(f"| LLM down: exit status (must be 3) | {llm['exit']} |")
    print(f"| LLM down: seconds until the search stopped | {llm['seconds']:.1f} |")
    print(f"| LLM down: requests to the LLM / after the stop (must be 0) | {llm['requests']} / {llm['after']} |")
    print(f"| LLM down: message | {llm['message'][:160]} |")
    ok = llm["exit"] == 3 and llm["after"] == 0
    if disk is None:
        print("| disk full | skipped (needs root and mount) |")
        return ok
    print(f"| disk full: exit status (must be 3) | {disk['exit']} |")
    if "seconds" in disk:
        print(f"| disk full: seconds from full to exit | {disk['seconds']:.1f} |")
        print(f"| disk full: LLM requests after the disk filled (rounds in flight only) | {disk['requests']} |")
        print(f"| disk full: says 'No space left on device' / traceback | {disk['no_space']} / {disk['traceback']} |")
        print(f"| disk full: next run after freeing space, exit status (must be 0) | {disk['resumed']} |")
    print(f"| disk full: message | {disk['message'][:160]} |")
    return ok and disk["exit"] == 3 and disk.get("no_space", False) and disk.get("resumed") == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--embeddings", action="store_true", help="cognition.embeddings: true (default false)")
    parser.add_argument("--infra-rate", type=float, default=0.30)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--fault-rate", type=float, default=0.2)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per search run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary root and print its path")
    args = parser.parse_args()
    if args.rounds < 4:
        parser.error("--rounds must be at least 4")

    bench_started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="evolveflow-chaos-"))
    prefect = None
    server = FakeOpenAIServer(responder=make_responder(args.seed), fault_rate=args.fault_rate,
                              fault_kinds=LLM_FAULTS, seed=args.seed).start()
    try:
        exp = write_experiment(root, args, server.base_url)
        prefect, api_url, prefect_s = start_prefect(root / "prefect-home", root / "prefect-server.log")
        env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(root / "client-home"),
               "CHAOS_API_KEY": "dummy-not-a-secret", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        env.pop("OPENAI_API_KEY", None)
        print(f"chaos bench in {root}; Prefect API {api_url} (up in {prefect_s:.1f} s); fake LLM {server.base_url}",
              flush=True)

        run1 = Run(root / "run1.log")
        run_and_kill(root, env, args.rounds, args.rounds // 2, run1, args.timeout)
        tree_path = root / "runs" / EXPERIMENT / "tree.duckdb"
        before = snapshot(tree_path)
        pending = sum(1 for v in before["nodes"].values() if v[1] == "pending")
        kill_info = {"report_rounds": (run1.last_report or {}).get("rounds"), "max_round": before["max_round"],
                     "pending": pending}
        print(f"run 1 killed after {run1.seconds:.1f} s: {len(run1.printed)} rounds printed, tree max round "
              f"{before['max_round']}, {pending} pending node(s)", flush=True)

        run2 = Run(root / "run2.log")
        remaining = args.rounds - before["max_round"]
        run_to_end(root, env, remaining, run2, args.timeout)
        print(f"run 2 ({remaining} rounds) ended with exit {run2.exit_code} after {run2.seconds:.1f} s", flush=True)
        if run2.exit_code != 0:
            print(run2.log.read_text(errors="replace")[-3000:])

        a = audit(tree_path, args.rounds, before, [run1, run2],
                  load_true_score(exp / "evaluator.py"), root)
        passed = print_table(args, a, [run1, run2], server, prefect_s, time.monotonic() - bench_started, kill_info)
        breakers_ok = print_breakers(llm_down_phase(root, env, args), disk_full_phase(root, env, args))
        return 0 if passed and breakers_ok and run2.exit_code == 0 else 1
    finally:
        server.stop()
        if prefect is not None:
            stop_group(prefect)
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
