"""The report as one self-contained HTML page: Plotly's JavaScript inlined, every text escaped."""
from __future__ import annotations

import statistics
from collections import Counter
from html import escape

import plotly.io as pio
from plotly.offline import get_plotlyjs

from evolveflow.morning_report import charts
from evolveflow.morning_report.data import ReportData, leaderboard, noisy_nodes

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:0 16px 40px;color:#222}
h1{margin:18px 0 4px}h2{margin-top:34px;border-bottom:1px solid #ddd;padding-bottom:4px}
nav a{margin-right:12px}table{border-collapse:collapse;width:100%;margin:8px 0}
th,td{border-bottom:1px solid #eee;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f6f6f6;position:sticky;top:0}td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f8f8f8;padding:8px;overflow:auto;max-height:420px;font-size:12px}
.scroll{max-height:520px;overflow:auto;border:1px solid #eee}.muted{color:#777}
.up{color:#2ca02c}.down{color:#d62728}summary{cursor:pointer;color:#1f5fa8}
.pill{display:inline-block;padding:0 6px;border-radius:8px;color:#fff;font-size:12px}
"""


_SCROLL_TO_END = ("<script>for(const e of document.querySelectorAll('.at-end'))e.scrollTop=e.scrollHeight;"
                  "</script>")


def _num(value: float | None, digits: str = ".6g") -> str:
    return "-" if value is None else format(value, digits)


def _pill(status: str) -> str:
    return f'<span class="pill" style="background:{charts.COLOURS.get(status, "#999")}">{escape(status)}</span>'


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(rows_cell for rows_cell in row) + "</tr>" for row in rows)
    return f'<div class="{cls}"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _td(text: object, num: bool = False) -> str:
    return f'<td{" class=num" if num else ""}>{escape(str(text))}</td>'


def _delta(score: float | None, parent_score: float | None) -> str:
    if score is None or parent_score is None:
        return "<td class=num>-</td>"
    d = score - parent_score
    d = 0.0 if abs(d) <= 1e-12 * max(1.0, abs(score)) else d  # float noise is no change
    return f'<td class="num {"up" if d > 0 else "down" if d < 0 else ""}">{d:+.4g}</td>'


def _figure(fig) -> str:
    # Plotly's JSON escapes "</" so node text cannot close the script element.
    return pio.to_html(fig, include_plotlyjs=False, full_html=False, default_width="100%",
                       config={"displaylogo": False, "responsive": True})


def _summary(data: ReportData) -> str:
    counts = Counter(n.status for n in data.nodes)
    index = data.by_id()
    best = index.get(data.best_id)
    initial = data.nodes[0] if data.nodes else None
    usage = data.usage
    cost = "unknown" if usage["cost_usd"] is None else f"${usage['cost_usd']:.4f}"
    gain = (f" ({best.score - initial.score:+.6g} over the initial {initial.score:.6g})"
            if best and initial and initial.score is not None else "")
    parts = [
        f"<b>{len(data.nodes)}</b> nodes over <b>{max((n.round for n in data.nodes), default=0)}</b> rounds: "
        + ", ".join(f"{_pill(s)} {c}" for s, c in counts.most_common()),
        f"best score <b>{_num(best.score if best else None)}</b> (node {best.id if best else '-'}){escape(gain)}",
        f"LLM calls {usage['llm_calls']}, tokens {usage['prompt_tokens']:,} + {usage['completion_tokens']:,}, cost {cost}",
    ]
    return "<p>" + "<br>".join(parts) + "</p>"


def _runs(data: ReportData) -> str:
    rows = [[_td(r["started_at"]), _td(r["ended_at"] or "-"), _td(r["rounds_asked"], True),
             _td("-" if r["rounds_done"] is None else r["rounds_done"], True), _td(r["stop_reason"] or "running")]
            for r in data.runs]
    return _table(["started", "ended", "rounds asked", "rounds done", "stop reason"], rows)


def _lineage(data: ReportData) -> str:
    index = data.by_id()
    rows, previous = [], None
    for node_id in data.lineage:
        n = index[node_id]
        rows.append([_td(n.id, True), _td(n.round, True), _td(_num(n.score), True),
                     _delta(n.score, previous), _td(charts._short(n.motivation, 200))])
        previous = n.score
    # Long lineages scroll, opened at the bottom: the best is the row a reader comes for.
    return _table(["node", "round", "score", "Δ", "motivation"], rows, "scroll at-end" if len(rows) > 15 else "")


def _leaderboard(data: ReportData) -> str:
    rows = []
    for rank, (n, parent) in enumerate(leaderboard(data), 1):
        spread = f" ±{n.score_spread:.2g}" if n.score_spread else ""
        diff = (f"<details><summary>diff from node {n.parent_id} ({n.edit.count(chr(10)) + 1} lines)</summary>"
                f"<pre>{escape(n.edit)}</pre></details>" if n.edit else '<div class="muted">no diff</div>')
        rows.append([_td(rank, True), _td(n.id, True), _td(_num(n.score) + spread, True), _td(n.round, True),
                     _td("-" if n.parent_id is None else n.parent_id, True), _delta(n.score, parent.score if parent else None),
                     f"<td>{escape(charts._short(n.motivation, 160))}{diff}</td>"])
    return _table(["#", "node", "score", "round", "parent", "Δ parent", "motivation and diff"], rows)


def _lessons(data: ReportData) -> str:
    lessons = [n for n in data.nodes if n.analysis]
    if not lessons:
        return '<p class="muted">no lessons written yet</p>'
    rows = [[_td(n.round, True), _td(n.id, True), f"<td>{_pill(n.status)}</td>", _td(_num(n.score), True),
             _td(n.analysis)] for n in reversed(lessons)]
    return f"<p>{len(lessons)} lessons, newest first.</p>" + _table(["round", "node", "outcome", "score", "lesson"], rows, "scroll")


def _failure_reasons(data: ReportData) -> str:
    reasons = Counter((n.status, charts._short((n.error or "").splitlines()[0] if n.error else "(no reason)", 140))
                      for n in data.nodes if n.status not in ("ok", "pending"))
    if not reasons:
        return '<p class="muted">no failures</p>'
    rows = [[f"<td>{_pill(s)}</td>", _td(c, True), _td(r)] for (s, r), c in reasons.most_common(15)]
    return _table(["outcome", "count", "most common reasons (first line)"], rows)


def _noise(data: ReportData) -> str:
    repeated = noisy_nodes(data)
    if not repeated:
        return ('<p class="muted">no node was scored more than once, so the evaluator\'s noise was not measured '
                "(evaluations are repeated only to confirm suspicious scores).</p>")
    spreads = [max(s) - min(s) for _, s in repeated]
    return (f"<p>{len(repeated)} node(s) scored more than once; spread (max − min) median "
            f"{statistics.median(spreads):.3g}, largest {max(spreads):.3g}.</p>" + _figure(charts.noise(data)))


def render(data: ReportData) -> str:
    """Returns the whole report as one HTML document."""
    sections = [
        ("progress", "Best score over rounds", "<p class=muted>Every candidate is a point coloured by outcome; "
         "the bottom strip holds those without a score. Drag to zoom, double-click to reset.</p>"
         + _figure(charts.progress(data))),
        ("lineage", "Lineage of the best", _lineage(data)),
        ("tree", "The whole tree", "<p class=muted>Box size = subtree size, colour = score (failures in their "
         "outcome's colour), ★ = on the best's lineage. Click a box to zoom into its subtree."
         + (" The best is deep: the tree opens at its ancestor, the path bar above leads back to the root."
            if charts.tree_view(data) is not None else "") + "</p>"
         + _figure(charts.tree(data))),
        ("leaderboard", "Leaderboard", _leaderboard(data)),
        ("lessons", "Lessons", _lessons(data)),
        ("failures", "Failures by class over time", _figure(charts.failures(data)) + _failure_reasons(data)),
        ("usage", "Tokens and cost over time", _figure(charts.usage(data)) if data.calls
         else '<p class="muted">no LLM calls recorded</p>'),
        ("noise", "Evaluator noise", _noise(data)),
        ("runs", "Runs", _runs(data)),
    ]
    nav = " ".join(f'<a href="#{key}">{escape(title)}</a>' for key, title, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{escape(title)}</h2>{content}</section>' for key, title, content in sections)
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(data.experiment)}: morning report</title><style>{_CSS}</style>"
        f"<script>{get_plotlyjs()}</script></head><body>"
        f"<h1>{escape(data.experiment)}</h1><p class=muted>evolveflow report, generated {escape(data.generated_at)}</p>"
        f"{_summary(data)}<nav>{nav}</nav>{body}{_SCROLL_TO_END}</body></html>"
    )
