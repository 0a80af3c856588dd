"""What `evolveflow run` prints while a search runs and when it ends."""
from __future__ import annotations

from typing import Any


def _fmt(score: float | None) -> str:
    return "      -" if score is None else f"{score:.6f}"


def print_round(summary: dict[str, Any]) -> None:
    """Prints one line per finished round."""
    status = summary["status"]
    detail = ""
    if status != "ok" and summary.get("error"):
        detail = "  " + " ".join(str(summary["error"]).split())[:90]
    elif summary.get("score") is not None and summary.get("parent_score") is not None:
        detail = f"  ({summary['score'] - summary['parent_score']:+.6f} vs parent {summary['parent']})"
    seconds = sum(v for k, v in summary["timings"].items() if k not in ("llm", "evaluator"))
    print(
        f"round {summary['round']:>4}  node {summary['node']:>5}  {status:<15} "
        f"score {_fmt(summary.get('score'))}  best {_fmt(summary.get('best'))}  {seconds:5.2f}s{detail}",
        flush=True,
    )


def print_summary(summary: dict[str, Any]) -> None:
    """Prints the end-of-run summary."""
    initial, best = summary.get("initial_score"), summary.get("best_score")
    usage = summary["usage"]
    cost = "unknown" if usage["cost_usd"] is None else f"${usage['cost_usd']:.4f}"
    lines = [
        "",
        f"search {summary['experiment']} stopped ({summary['stop_reason']}) after "
        f"{summary['rounds_done']} rounds in {summary['seconds']} s",
        f"  initial score {_fmt(initial).strip()}   best score {_fmt(best).strip()} (node {summary['best_node']})"
        + (f"   improvement {best - initial:+.6f}" if initial is not None and best is not None else ""),
        "  outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["by_status"].items()))
        + f"; duplicates rejected {summary['duplicates_rejected']} exact, "
        f"{summary.get('near_duplicates_rejected', 0)} near; lessons {summary['lessons_written']}",
        f"  LLM calls {usage['llm_calls']}, tokens {usage['prompt_tokens']}+{usage['completion_tokens']}, cost {cost}",
        f"  stored in {summary['storage']}   (evolveflow best / evolveflow status)",
    ]
    print("\n".join(lines), flush=True)
