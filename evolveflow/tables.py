"""CLI rendering with rich: one score format; boxed tables on a terminal, aligned plain text when piped."""
from __future__ import annotations

from typing import IO, Any, Iterable, Sequence

from rich import box
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

# Piped output never wraps, whatever the reader's terminal: one record stays one line for grep.
PLAIN_WIDTH = 100_000


def fmt_score(value: Any) -> str:
    """The one score format of CLI output: 6 significant digits, trailing zeros kept; '-' for none."""
    if value is None:
        return "-"
    try:
        return f"{float(value):#.6g}"
    except (TypeError, ValueError):
        return str(value)


def fmt_delta(value: float) -> str:
    """A score change in the score format, always signed."""
    return f"{value:+#.6g}"


def fmt_cost(usd: float | None) -> str:
    """A cost in dollars; 'unknown' when a price was unknown."""
    return "unknown" if usd is None else f"${usd:.4f}"


def make_console(file: IO[str] | None = None, force_terminal: bool | None = None) -> Console:
    """A console on stdout (or file): colours and wrapping on a terminal, unwrapped plain text otherwise."""
    probe = Console(file=file, force_terminal=force_terminal)
    if probe.is_terminal:
        return probe
    return Console(file=file, width=PLAIN_WIDTH, no_color=True, highlight=False, emoji=False)


def is_plain(console: Console) -> bool:
    """True when output goes to a file or pipe."""
    return not console.is_terminal


def table(console: Console, columns: Sequence[str], rows: Iterable[Sequence[Any]],
          right: Sequence[str] = (), header: bool = True) -> Table:
    """A table of str cells: boxed on a terminal; borderless, one line a row when piped."""
    plain = is_plain(console)
    out = Table(box=None if plain else box.SIMPLE_HEAVY, pad_edge=not plain,
                padding=(0, 2) if plain else (0, 1), header_style="" if plain else "bold", show_edge=not plain,
                show_header=header)
    for name in columns:
        out.add_column(name, justify="right" if name in right else "left", no_wrap=plain, overflow="fold")
    for row in rows:
        # Text, not markup: a motivation like "use [x]" must print as written.
        out.add_row(*(Text(" ".join(str(c).split()) if plain else str(c)) for c in row))
    return out


def line(console: Console, text: str, style: str = "") -> None:
    """Prints one line as written (no markup), styled on a terminal."""
    console.print(Text(text, style="" if is_plain(console) else style), soft_wrap=True)


def print_code(console: Console, code: str) -> None:
    """Prints a program exactly as stored, so a copy or a redirect runs."""
    console.out(code if code.endswith("\n") else code + "\n", end="", highlight=False)


def print_diff(console: Console, diff: str) -> None:
    """Prints a unified diff: coloured on a terminal, as is (a patch file) when piped."""
    if is_plain(console):
        print_code(console, diff)
    else:
        console.print(Syntax(diff, "diff", theme="ansi_dark", background_color="default"))


def cell(value: Any) -> str:
    """A query result value as text: NULL for none, floats in the score format."""
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return fmt_score(value)
    return str(value)


def show_status(console: Console, report: dict[str, Any], source: str) -> None:
    """The status of a search: outcomes, scores, usage and cost, and whether it is running."""
    best, usage, running = report["best"], report["usage"], report.get("running")
    lost = report.get("round_numbers_lost") or 0
    lost_note = f" ({lost} more round number(s) ended with no node: killed or failed before it was written)" if lost else ""
    line(console, f"{report['experiment']}: rounds {report['rounds']}{lost_note}, nodes {report['nodes']} "
                  f"({source}, {report['generated_at']})", "bold")
    if running and running.get("phase") == "starting":
        line(console, f"starting: a search on {report['experiment']} is starting (pid {running['pid']}, "
                      f"since {running['since']})", "yellow")
    else:
        line(console, f"running: pid {running['pid']}, {running['rounds_done']} rounds done in this run" if running
             else "not running", "green" if running else "dim")
    console.print(table(console, ("outcome", "nodes"), sorted(report["by_status"].items()), right=("nodes",)))
    facts = [
        ("initial score", fmt_score(report["initial_score"])),
        ("best score", f"{fmt_score(best['score'])} (node {best['id']}, round {best['round']})" if best else "-"),
        ("LLM calls", str(usage["llm_calls"])),
        ("tokens", f"{usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion"),
        ("cost", fmt_cost(usage["cost_usd"])),
    ]
    console.print(table(console, ("", ""), facts, header=False))


def show_best(console: Console, report: dict[str, Any], source: str) -> None:
    """The best program: score, attempts, its lineage, then its code (a runnable file when piped)."""
    best = report["best"]
    header = (f"best of {report['experiment']}: node {best['id']}, score {fmt_score(best['score'])} "
              f"({best['attempts']} evaluation attempt(s); {source})")
    if is_plain(console):
        # Comments, so that `evolveflow best X > best.py` is the program with its story on top.
        lines = [f"# {header}", "# lineage (root -> best):"] + [
            f"#   node {s['id']:>5}  round {s['round']:>4}  score {fmt_score(s['score']):>12}  "
            f"{s.get('status', '-'):<15}  {' '.join(s['motivation'].split())[:80]}" for s in report["lineage"]]
        print_code(console, "\n".join(lines))
    else:
        line(console, header, "bold")
        rows = [(str(s["id"]), str(s["round"]), fmt_score(s["score"]), s.get("status", "-"), s["motivation"])
                for s in report["lineage"]]
        console.print(table(console, ("node", "round", "score", "status", "motivation"), rows,
                            right=("node", "round", "score")))
    print_code(console, best["code"])
