"""The `evolveflow` command: run, status, best, init, knowledge add."""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any, Sequence

from evolveflow.abort import SearchAborted
from evolveflow.breakers import SearchStopped
from evolveflow.experiment import load_experiment
from evolveflow.user_errors import is_user_error


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    flags = {
        "pipeline.sample_n": args.sample_n, "evaluation.script": args.eval_script,
        "pipeline.parallel.num_workers": args.workers, "api.model": args.model,
        "pipeline.seed": args.seed, "database.sampling.algorithm": args.algorithm,
    }
    if args.eval_script:
        flags["evaluation.script"] = str(Path(args.eval_script).resolve())
    return {k: v for k, v in flags.items() if v is not None}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace) -> int:
    import time

    started = time.monotonic()
    overrides = _overrides(args)
    # Everything that can be checked without Prefect is checked first: a bad config or an
    # evaluator that cannot start is one line and exit 2 in about a second, not after ~10 s.
    exp = load_experiment(args.experiment, config_file=args.config, overrides=overrides)
    for notice in exp.notices:
        print(f"evolveflow: {notice}", flush=True)
    if exp.config.api.missing_key():
        raise CliError(exp.config.api.missing_key())
    from evolveflow.evaluation import check_evaluator, isolation_for
    from evolveflow.evaluator_spec import evaluator_spec

    spec = evaluator_spec(exp)
    check_evaluator(spec)
    print(f"evolveflow: {isolation_for(spec).describe()}", flush=True)
    # With PREFECT_API_URL the search talks to that server; without it Prefect starts a temporary one.
    starts_server = "" if os.environ.get("PREFECT_API_URL") else \
        "; Prefect starts a local server on first use; that can take ~20 s"
    print(f"evolveflow: {args.rounds} rounds of {args.experiment} (config and evaluator checked in "
          f"{time.monotonic() - started:.1f} s{starts_server})", flush=True)

    from evolveflow.search_lock import SearchLock

    # Taken now, not when the flow starts: status says "starting" and a second run is refused
    # during Prefect's start-up. The flow (same process) inherits it.
    lock = SearchLock.hold_while_starting(exp.lock_path)
    try:
        return _run_search(args, overrides)
    finally:
        lock.release()


def _run_search(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    import logging

    from flows.search import evolve_search  # Prefect import takes seconds: only when needed

    # Before the rounds start (Prefect start-up, initial evaluation) SIGTERM acts like Ctrl-C;
    # during the rounds flows/signals.py turns both into a clean stop.
    signal.signal(signal.SIGTERM, _interrupt)
    # A failed task's traceback is noise on the console: the outcome is recorded in the tree
    # and shown in the progress line; the Prefect UI still has the full task-run logs.
    logging.getLogger("prefect.task_runs").setLevel(logging.CRITICAL)
    from evolveflow.progress import RoundDisplay, use_display

    with use_display(RoundDisplay(rounds=args.rounds)):  # a live bar on a terminal, lines otherwise
        evolve_search(
            experiment=args.experiment, rounds=args.rounds,
            config_file=str(args.config) if args.config else None, overrides=overrides,
            root=str(Path.cwd()), progress=True,
        )
    return 0


def _report(experiment: str, lineage_status: bool = False) -> tuple[dict, str]:
    """The search's report: the running search's snapshot, else built from the tree (read-only).

    lineage_status adds each lineage node's status when the tree is readable (not in the snapshot).
    """
    from evolveflow.search_lock import is_locked, read_holder, starting_since
    from storage.report import build_report, read_report
    from storage.tree import TreeStore

    exp = load_experiment(experiment)
    if is_locked(exp.lock_path):
        report = read_report(exp.report_path)
        starting = starting_since(exp.lock_path, exp.report_path)
        if starting is None and report is not None:
            return report, "live snapshot from the running search"
        if starting is None:  # a flow started without `evolveflow run` (a deployment), in its first seconds
            holder = read_holder(exp.lock_path)
            starting = {"pid": holder.get("pid"), "since": str(holder.get("started", "-")).split(" ")[-1]}
        return _starting_report(exp, report, starting)
    if not exp.tree_path.exists():
        raise CliError(f"{exp.name} has not been run yet: evolveflow run {exp.name} --rounds 10")
    with TreeStore(exp.tree_path, read_only=True, lock_wait_s=5) as tree:
        report = build_report(tree, exp.name, metrics_max_chars=exp.config.evaluation.metrics_max_chars)
        if lineage_status:
            status = {n.id: n.status.value for n in tree.nodes([s["id"] for s in report["lineage"]])}
            for step in report["lineage"]:
                step["status"] = status.get(step["id"], "-")
        return report, f"from {exp.tree_path}"


def _starting_report(exp: Any, previous: dict | None, starting: dict) -> tuple[dict, str]:
    """The report of a search that is starting: the previous search's figures, or none yet."""
    running = {"phase": "starting", "pid": starting["pid"], "since": starting["since"], "rounds_done": 0}
    if previous is not None:
        return {**previous, "running": running}, "last report of the previous search"
    from storage.report import empty_report

    if exp.tree_path.exists():  # the starting search holds it (DuckDB's lock) until its first report
        return empty_report(exp.name, running), "no report published yet (the starting search holds the tree)"
    return empty_report(exp.name, running), "nothing has run yet"


def cmd_status(args: argparse.Namespace) -> int:
    report, source = _report(args.experiment)
    if args.json:
        print(json.dumps(report, indent=1, default=str))
        return 0
    from evolveflow.tables import make_console, show_status

    show_status(make_console(), report, source)
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    from evolveflow.tables import make_console, print_diff, show_best

    console = make_console()
    if args.diff:  # from the parent: what the last step changed (the lineage shows the steps before)
        from evolveflow.tree_queries import best_diff

        best, parent, diff = best_diff(load_experiment(args.experiment))
        if parent is None:
            raise CliError(f"the best of {args.experiment} is node {best}, the initial program: no parent to diff from")
        print_diff(console, diff or f"node {best} has the same code as its parent {parent}\n")
        return 0
    report, source = _report(args.experiment, lineage_status=True)
    if report["best"] is None:
        running = report.get("running") or {}
        starting = (f": a search on it is starting (pid {running['pid']}, since {running['since']})"
                    if running.get("phase") == "starting" else "")
        raise CliError(f"{args.experiment} has no evaluated node yet{starting}")
    show_best(console, report, source)
    return 0


def cmd_lessons(args: argparse.Namespace) -> int:
    from evolveflow.tables import fmt_score, make_console, table
    from evolveflow.tree_queries import matching_lessons, read_only, recent_lessons

    if args.limit < 1:
        raise CliError(f"--limit must be at least 1, not {args.limit}")
    exp = load_experiment(args.experiment)
    with read_only(exp, "lessons") as con:
        found = (matching_lessons(exp, con, args.query, args.limit) if args.query
                 else recent_lessons(con, args.limit))
    if not found:
        print(f"{exp.name}: no lesson" + (f" matches {args.query!r}" if args.query else " written yet"))
        return 0
    console = make_console()
    rows = [(str(f["node"]), str(f["round"]), fmt_score(f["score"]), f["status"] or "-", f["lesson"]) for f in found]
    console.print(table(console, ("node", "round", "score", "status", "lesson"), rows,
                        right=("node", "round", "score")))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from evolveflow.tree_queries import export_parquet, read_only

    dest = Path(args.parquet)
    if dest.exists() and not dest.is_dir():
        raise CliError(f"--parquet {dest}: is a file; give a folder (new or existing) for the .parquet files")
    exp = load_experiment(args.experiment)
    with read_only(exp, "export") as con:
        try:
            counts = export_parquet(con, dest)
        except (FileExistsError, NotADirectoryError) as exc:  # e.g. a parent of dest is a file
            raise CliError(f"--parquet {dest}: cannot make the folder ({exc.strerror}: {exc.filename})") from None
    for name, rows in counts.items():
        print(f"{Path(args.parquet) / (name + '.parquet')}: {rows} rows")
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    import duckdb

    from evolveflow.tables import cell, make_console, table
    from evolveflow.tree_queries import QueryRefused, read_only, run_sql

    exp = load_experiment(args.experiment)
    with read_only(exp, "sql") as con:
        try:
            columns, rows = run_sql(con, args.query)
        except (QueryRefused, duckdb.Error) as exc:
            raise CliError(f"sql: {' '.join(str(exc).split())}") from None
    if args.json:
        print(json.dumps([dict(zip(columns, r)) for r in rows], indent=1, default=str))
        return 0
    console = make_console()
    console.print(table(console, columns, ([cell(v) for v in r] for r in rows)))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from evolveflow.scaffold import scaffold_experiment

    target = scaffold_experiment(args.name, Path.cwd() / "experiments")
    print(f"created {target}: edit input.md, initial_program.py and evaluator.py, then\n"
          f"  evolveflow run {args.name} --rounds 10")
    return 0


def cmd_knowledge_add(args: argparse.Namespace) -> int:
    from evolveflow.knowledge import add_knowledge
    from storage.knowledge_files import load_knowledge_dir, load_knowledge_file

    items: list[dict] = []
    for path in args.files:
        path = Path(path)
        if path.is_dir():
            items += load_knowledge_dir(path)
        elif path.is_file():
            items += load_knowledge_file(path)
        else:
            raise CliError(f"{path}: no such file or folder")
    if args.title or args.content:
        if not (args.title and args.content):
            raise CliError("--title and --content go together")
        items.append({"title": args.title, "content": args.content, "source": "cli"})
    if not items:
        raise CliError("nothing to add: give files/folders, or --title and --content")
    added = add_knowledge(args.experiment, items)
    print(f"added {added} knowledge item(s) to {args.experiment} ({len(items) - added} already there)")
    return 0


def cmd_reeval(args: argparse.Namespace) -> int:
    from flows.reeval import reevaluate

    results = reevaluate(experiment=args.experiment, node_ids=args.nodes or None, root=str(Path.cwd()))
    if not results:
        print(f"{args.experiment}: no infra_failed node to re-evaluate")
    for node_id, status in results.items():
        print(f"node {node_id}: {status}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2), like every other evolveflow error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"evolveflow: error: {message} (see: {self.prog} --help)\n")


def _rounds(text: str) -> int:
    """Parses --rounds: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def cmd_report(args: argparse.Namespace) -> int:
    from evolveflow.morning_report import write_html_report
    from evolveflow.search_lock import is_locked
    from storage.tree import TreeStore

    exp = load_experiment(args.experiment)
    if is_locked(exp.lock_path):
        raise CliError(f"a search on {exp.name} is running and holds its tree; it writes "
                       f"{exp.storage_dir / 'report.html'} when it ends (`evolveflow status {exp.name}` works meanwhile)")
    if not exp.tree_path.exists():
        raise CliError(f"{exp.name} has not been run yet: evolveflow run {exp.name} --rounds 10")
    with TreeStore(exp.tree_path, read_only=True, lock_wait_s=5) as tree:
        path = write_html_report(tree, exp.name, Path(args.output or exp.storage_dir / "report.html"))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, self-contained: open it in any browser, offline)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="evolveflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run (or continue) a search")
    run.add_argument("experiment", help="name under experiments/ or a path to an experiment folder")
    run.add_argument("--rounds", type=_rounds, required=True, help="rounds to run in this invocation")
    run.add_argument("--sample-n", type=int, help="pipeline.sample_n: parent + inspirations per round")
    run.add_argument("--eval-script", help="evaluation.script: an executable called with the candidate's path")
    run.add_argument("--config", type=Path, help="a YAML file merged after the experiment's config.yaml")
    run.add_argument("--workers", type=int, help="pipeline.parallel.num_workers")
    run.add_argument("--model", help="api.model (any litellm model string)")
    run.add_argument("--seed", type=int, help="pipeline.seed")
    run.add_argument("--algorithm", choices=["ucb1", "greedy", "random", "island"], help="database.sampling.algorithm")
    run.set_defaults(func=cmd_run)

    for name, func, text in (("status", cmd_status, "show a search's state"),
                             ("best", cmd_best, "print the best program and its lineage")):
        p = sub.add_parser(name, help=text)
        p.add_argument("experiment")
        if name == "status":
            p.add_argument("--json", action="store_true", help="print the full report as JSON")
        else:
            p.add_argument("--diff", action="store_true", help="print the best program's diff from its parent")
        p.set_defaults(func=func)

    lessons = sub.add_parser("lessons", help="list the lessons written about nodes, newest first")
    lessons.add_argument("experiment")
    lessons.add_argument("--query", help="rank lessons by relevance to this text (LanceDB search)")
    lessons.add_argument("--limit", type=int, default=20, help="at most this many lessons (default 20)")
    lessons.set_defaults(func=cmd_lessons)

    export = sub.add_parser("export", help="write the tree's tables as Parquet files")
    export.add_argument("experiment")
    export.add_argument("--parquet", required=True, metavar="DIR", help="folder for nodes/attempts/llm_calls/runs.parquet")
    export.set_defaults(func=cmd_export)

    sql = sub.add_parser("sql", help="run one read-only SQL query on the tree (tables nodes, attempts, llm_calls, runs)")
    sql.add_argument("experiment")
    sql.add_argument("query")
    sql.add_argument("--json", action="store_true", help="print the rows as JSON")
    sql.set_defaults(func=cmd_sql)

    report = sub.add_parser("report", help="write the morning report: one self-contained HTML file")
    report.add_argument("experiment")
    report.add_argument("-o", "--output", type=Path, help="the HTML file (default runs/EXP/report.html)")
    report.set_defaults(func=cmd_report)

    reeval = sub.add_parser("reeval", help="re-evaluate nodes whose evaluator failed (infra_failed)")
    reeval.add_argument("experiment")
    reeval.add_argument("--nodes", type=int, nargs="*", help="only these node ids")
    reeval.set_defaults(func=cmd_reeval)

    init = sub.add_parser("init", help="scaffold a new experiment that runs as is")
    init.add_argument("name")
    init.set_defaults(func=cmd_init)

    knowledge = sub.add_parser("knowledge", help="manage an experiment's domain knowledge")
    ksub = knowledge.add_subparsers(dest="knowledge_command", required=True)
    add = ksub.add_parser("add", help="add knowledge items (.md/.txt/.json/.jsonl files or --title/--content)")
    add.add_argument("experiment")
    add.add_argument("files", nargs="*")
    add.add_argument("--title")
    add.add_argument("--content")
    add.set_defaults(func=cmd_knowledge_add)
    return parser


_FRAME = re.compile(r'^File "([^"]+)", line (\d+)')


def _one_line(exc: BaseException) -> str:
    """The error as one line; a Python traceback in it shrinks to its error and the place it was raised."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")), None)
    if start is not None and start + 1 < len(lines):
        trace = lines[start + 1:]
        frames = [m for m in map(_FRAME.match, trace) if m and not m[1].startswith("<")]
        # The innermost frame in the user's own files says most; library frames say least.
        own = [m for m in frames if "site-packages" not in m[1] and "/lib/python" not in m[1]]
        where = (own or frames)[-1] if frames else None
        lines = lines[:start] + [trace[-1] + (f" ({Path(where[1]).name}, line {where[2]})" if where else "")]
    return " ".join(lines)


def _exit_leaving_rounds(code: int) -> None:
    """Exits now, leaving aborted rounds' daemon threads (blocked on an LLM reply) as they are.

    Exit handlers run (Prefect stops its temporary server, flushes logs); interpreter teardown,
    which would make DuckDB's bindings report the objects those threads still hold, does not.
    """
    import atexit

    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; user errors print one line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. `evolveflow best X | head`: the reader has gone, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0
    except SearchAborted as exc:  # the second Ctrl-C: the summary is printed already
        print(f"evolveflow: {exc}", file=sys.stderr)
        _exit_leaving_rounds(130)
    except SearchStopped as exc:  # a circuit breaker: the summary is printed already
        print(f"evolveflow: {exc}", file=sys.stderr)
        _exit_leaving_rounds(3)
    except Exception as exc:
        # Known user-facing failures, from here or deeper layers, carry clear messages of their own.
        if not is_user_error(exc):
            raise
        print(f"evolveflow: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evolveflow: interrupted", file=sys.stderr)
        _exit_leaving_rounds(130)


if __name__ == "__main__":
    sys.exit(main())
