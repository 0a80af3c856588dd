"""What `evolveflow run` prints while a search runs and when it ends: a live bar on a terminal, lines otherwise."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from evolveflow.tables import fmt_cost, fmt_delta, fmt_score


def round_line(summary: dict[str, Any]) -> str:
    """One line about a finished round."""
    status = summary["status"]
    detail = ""
    if status != "ok" and summary.get("error"):
        detail = "  " + " ".join(str(summary["error"]).split())[:90]
    elif summary.get("score") is not None and summary.get("parent_score") is not None:
        detail = f"  ({fmt_delta(summary['score'] - summary['parent_score'])} vs parent {summary['parent']})"
    seconds = sum(v for k, v in summary["timings"].items() if k not in ("llm", "llm_rate_wait", "evaluator"))
    return (f"round {summary['round']:>4}  node {summary['node']:>5}  {status:<15} "
            f"score {fmt_score(summary.get('score')):>12}  best {fmt_score(summary.get('best')):>12}  "
            f"{seconds:5.2f}s{detail}")


def summary_text(summary: dict[str, Any]) -> str:
    """The end-of-run summary."""
    initial, best = summary.get("initial_score"), summary.get("best_score")
    usage = summary["usage"]
    return "\n".join([
        "",
        f"search {summary['experiment']} stopped ({summary['stop_reason']}) after "
        f"{summary['rounds_done']} rounds in {summary['seconds']} s",
        f"  initial score {fmt_score(initial)}   best score {fmt_score(best)} (node {summary['best_node']})"
        + (f"   improvement {fmt_delta(best - initial)}" if initial is not None and best is not None else ""),
        "  outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["by_status"].items()))
        + f"; duplicates rejected {summary['duplicates_rejected']} exact, "
        f"{summary.get('near_duplicates_rejected', 0)} near; lessons {summary['lessons_written']}",
        f"  LLM calls {usage['llm_calls']}, tokens {usage['prompt_tokens']}+{usage['completion_tokens']}, "
        f"cost {fmt_cost(usage['cost_usd'])}",
        f"  stored in {summary['storage']}   (evolveflow best / evolveflow status)",
    ])


class RoundDisplay:
    """Shows finished rounds: a live bar (done/asked, rounds in flight, best, last outcome, elapsed)
    under their lines on a terminal, else lines."""

    def __init__(self, rounds: int | None = None, console: Console | None = None):
        self.rounds = rounds
        self.console = console or Console()
        self.done = 0
        self._bar: Progress | None = None
        self._in_flight = ""

    @property
    def live(self) -> bool:
        return bool(self.rounds) and self.console.is_terminal

    def _start_bar(self) -> Progress:
        if self._bar is None:  # started with the rounds: Prefect's start-up output comes before
            self._bar = Progress(
                TextColumn("[bold]rounds"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[in_flight]}"),
                TextColumn("best {task.fields[best]}"), TextColumn("last {task.fields[last]}"),
                TimeElapsedColumn(), console=self.console)
            self._bar.add_task("rounds", total=self.rounds, best="-", last="-", in_flight=self._in_flight)
            self._bar.start()
        return self._bar

    def in_flight(self, count: int, stopping: bool = False) -> None:
        """Shows how many rounds are running (the live bar only; called every half second)."""
        text = f"{'stopping, ' if stopping else ''}{count} in flight"
        if not self.live or text == self._in_flight and self._bar is not None:
            return
        self._in_flight = text
        self._start_bar().update(self._bar.task_ids[0], in_flight=text)

    def waiting(self, line: str) -> None:
        """Says which rounds are still running when they take long."""
        if self.live:
            self._start_bar().console.print(Text(line), soft_wrap=True)
        else:
            print(line, flush=True)

    def round(self, summary: dict[str, Any]) -> None:
        """Shows one finished round."""
        self.done += 1
        if not self.live:
            print(round_line(summary), flush=True)
            return
        self._start_bar()
        self._bar.console.print(Text(round_line(summary)), soft_wrap=True)  # above the bar
        self._bar.update(self._bar.task_ids[0], completed=self.done,
                         best=fmt_score(summary.get("best")), last=summary["status"])

    def close(self) -> None:
        """Stops the live bar, leaving its last state on screen."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def summary(self, summary: dict[str, Any]) -> None:
        """Shows the end-of-run summary."""
        self.close()
        if self.live:
            self.console.print(Text(summary_text(summary)), soft_wrap=True)
        else:
            print(summary_text(summary), flush=True)


_display = RoundDisplay()


@contextmanager
def use_display(display: RoundDisplay) -> Iterator[RoundDisplay]:
    """Routes print_round and print_summary to display while the block runs."""
    global _display
    previous, _display = _display, display
    try:
        yield display
    finally:
        display.close()
        _display = previous


def print_round(summary: dict[str, Any]) -> None:
    """Shows one finished round on the current display (a plain line by default)."""
    _display.round(summary)


def show_in_flight(count: int, stopping: bool = False) -> None:
    """Shows how many rounds are running on the current display (nothing on plain lines)."""
    _display.in_flight(count, stopping)


def show_waiting(line: str) -> None:
    """Shows which rounds the search still waits for on the current display."""
    _display.waiting(line)


def print_summary(summary: dict[str, Any]) -> None:
    """Shows the end-of-run summary on the current display."""
    _display.summary(summary)
