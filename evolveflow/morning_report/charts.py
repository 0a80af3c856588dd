"""The report's Plotly figures, one function per chart (plotly is imported only here)."""
from __future__ import annotations

import math
import statistics

import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from evolveflow.morning_report.data import STATUSES, NodeRow, ReportData, best_so_far, noisy_nodes, subtree_sizes

COLOURS = {"ok": "#2ca02c", "candidate_error": "#d62728", "infra_failed": "#9467bd",
           "rejected": "#7f7f7f", "abandoned": "#ff7f0e", "pending": "#17becf"}
_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=40, b=40), hovermode="closest",
               legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))


def _short(text: str | None, limit: int = 120) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _hover(n: NodeRow) -> str:
    score = "-" if n.score is None else f"{n.score:.6g}"
    lines = [f"node {n.id} (parent {n.parent_id}), round {n.round}", f"{n.status}, score {score}"]
    if n.motivation:
        lines.append(_short(n.motivation))
    if n.error and n.status != "ok":
        lines.append("error: " + _short(n.error))
    return "<br>".join(lines)


def progress(data: ReportData) -> go.Figure:
    """Returns the best score over rounds, scored candidates above and every outcome below."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.78, 0.22], vertical_spacing=0.04)
    rounds, best = best_so_far(data.nodes)
    for status in STATUSES:
        group = [n for n in data.nodes if n.status == status]
        if not group:
            continue
        scored = [n for n in group if n.score is not None]
        style = dict(color=COLOURS[status], size=6, opacity=0.75)
        if scored:
            fig.add_trace(go.Scatter(
                x=[n.round for n in scored], y=[n.score for n in scored], mode="markers", name=status,
                legendgroup=status, marker=style, text=[_hover(n) for n in scored], hoverinfo="text"), 1, 1)
        fig.add_trace(go.Scatter(
            x=[n.round for n in group], y=[status] * len(group), mode="markers", name=status,
            legendgroup=status, showlegend=not scored, marker=dict(style, symbol="line-ns-open", size=10),
            text=[_hover(n) for n in group], hoverinfo="text"), 2, 1)
    fig.add_trace(go.Scatter(x=rounds, y=best, mode="lines", line_shape="hv", name="best so far",
                             line=dict(color="#1f77b4", width=2)), 1, 1)
    fig.update_layout(**_LAYOUT, height=520)
    fig.update_yaxes(title_text="score", row=1, col=1)
    present = [s for s in reversed(STATUSES) if any(n.status == s for n in data.nodes)]
    fig.update_yaxes(categoryorder="array", categoryarray=present, range=[-0.5, max(len(present), 2) - 0.5], row=2, col=1)
    fig.update_xaxes(title_text="round", row=2, col=1)
    return fig


def _node_colours(nodes: list[NodeRow]) -> list[str]:
    scores = [n.score for n in nodes if n.status == "ok" and n.score is not None]
    low, high = (min(scores), max(scores)) if scores else (0.0, 1.0)
    span = (high - low) or 1.0
    return [sample_colorscale("Viridis", [(n.score - low) / span])[0]
            if n.status == "ok" and n.score is not None else COLOURS.get(n.status, "#cccccc") for n in nodes]


TREE_LEVELS = 10  # columns drawn at once: labels such as "★ #1000 1.2345" still fit at 1,200 px


def tree_view(data: ReportData, levels: int = TREE_LEVELS) -> int | None:
    """Returns the node the icicle opens at: the root, or on a deep lineage the ancestor that puts the best
    in the next-to-last column drawn (the path bar above leads back up), so the best is always visible."""
    if len(data.lineage) < levels:
        return None
    return data.lineage[len(data.lineage) - levels + 1]


def tree(data: ReportData) -> go.Figure:
    """Returns the whole tree as an icicle: box size = subtree size, colour = score; click to zoom."""
    nodes = data.nodes
    known = {n.id for n in nodes}
    sizes = subtree_sizes(nodes)
    on_best = set(data.lineage)
    roots = [n for n in nodes if n.parent_id not in known]
    top = "" if len(roots) == 1 else "all"
    ids = [str(n.id) for n in nodes]
    parents = [str(n.parent_id) if n.parent_id in known else top for n in nodes]
    labels = [f"{'★ ' if n.id in on_best else ''}#{n.id} {'' if n.score is None else f'{n.score:.4g}'}"
              for n in nodes]
    colours = _node_colours(nodes)
    hover = [f"{_hover(n)}<br>subtree {sizes[n.id]} node(s){'<br>on the best lineage' if n.id in on_best else ''}"
             for n in nodes]
    values = [sizes[n.id] for n in nodes]
    if top:
        ids, parents, labels, colours, hover = ["all"] + ids, [""] + parents, ["all roots"] + labels, \
            ["#ffffff"] + colours, ["all roots"] + hover
        values = [len(nodes)] + values
    fig = go.Figure(go.Icicle(
        ids=ids, parents=parents, labels=labels, values=values, branchvalues="total", maxdepth=TREE_LEVELS,
        level="" if tree_view(data) is None else str(tree_view(data)),
        marker=dict(colors=colours, line=dict(color=["#000000" if i in {str(x) for x in on_best} else "#ffffff"
                                                      for i in ids], width=1)),
        hovertext=hover, hoverinfo="text", tiling=dict(orientation="h"), sort=False))
    fig.update_layout(**_LAYOUT, height=640)
    return fig


def _bins(max_round: int, target: int = 50) -> int:
    return max(1, math.ceil((max_round + 1) / target))


def failures(data: ReportData) -> go.Figure:
    """Returns candidates per outcome in bins of rounds (stacked), failures first."""
    width = _bins(max((n.round for n in data.nodes), default=0))
    fig = go.Figure()
    for status in STATUSES[1:] + ("ok",):
        counts: dict[int, int] = {}
        for n in data.nodes:
            if n.status == status:
                counts[n.round // width * width] = counts.get(n.round // width * width, 0) + 1
        if counts:
            xs = sorted(counts)
            fig.add_trace(go.Bar(x=xs, y=[counts[x] for x in xs], name=status, marker_color=COLOURS[status],
                                 opacity=0.35 if status == "ok" else 1.0,
                                 hovertemplate=f"{status}: %{{y}} in rounds %{{x}}–%{{customdata}}<extra></extra>",
                                 customdata=[x + width - 1 for x in xs], offset=0, width=width))
    fig.update_layout(**_LAYOUT, barmode="stack", height=360, xaxis_title=f"round (bins of {width})",
                      yaxis_title="candidates")
    return fig


def usage(data: ReportData) -> go.Figure:
    """Returns cumulative tokens (left axis) and known cost (right axis) against wall-clock time."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    times = [c.created_at for c in data.calls]
    prompt = completion = 0
    cost = 0.0
    cum_prompt, cum_completion, cum_cost, unknown = [], [], [], 0
    for c in data.calls:
        prompt += c.prompt_tokens
        completion += c.completion_tokens
        if c.cost_usd is None:
            unknown += 1
        else:
            cost += c.cost_usd
        cum_prompt.append(prompt)
        cum_completion.append(completion)
        cum_cost.append(cost)
    fig.add_trace(go.Scatter(x=times, y=cum_prompt, name="prompt tokens", mode="lines"), secondary_y=False)
    fig.add_trace(go.Scatter(x=times, y=cum_completion, name="completion tokens", mode="lines"), secondary_y=False)
    fig.update_layout(**_LAYOUT, height=360)
    fig.update_yaxes(title_text="tokens (cumulative)", secondary_y=False)
    if cost > 0:
        label = "cost USD" + (f" (known prices only; {unknown} call(s) unknown)" if unknown else "")
        fig.add_trace(go.Scatter(x=times, y=cum_cost, name=label, mode="lines", line=dict(dash="dot", color="#000")),
                      secondary_y=True)
        fig.update_yaxes(title_text="USD (cumulative)", secondary_y=True, rangemode="tozero")
    else:  # an all-zero line would get an axis of made-up ticks (0.049 … 0.884): say it instead
        what = "unknown" if unknown == len(data.calls) else "$0" if not unknown else "unknown/0"
        fig.update_yaxes(visible=False, secondary_y=True)
        fig.update_layout(title=dict(text=f"cost {what} for every call: not drawn", font=dict(size=13), x=0.5,
                                     xanchor="center"))
    return fig


def noise(data: ReportData) -> go.Figure | None:
    """Returns each repeated node's attempt scores around their mean, or None when none was repeated."""
    repeated = noisy_nodes(data)
    if not repeated:
        return None
    xs, ys, text = [], [], []
    for node_id, scores in repeated:
        mean = statistics.fmean(scores)
        for i, s in enumerate(scores, 1):
            xs.append(node_id)
            ys.append(s - mean)
            text.append(f"node {node_id}, attempt {i}: {s:.6g} (mean {mean:.6g}, spread {max(scores) - min(scores):.3g})")
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="markers", text=text, hoverinfo="text", name="attempt",
                               marker=dict(color="#1f77b4", size=7, opacity=0.7)))
    fig.update_layout(**_LAYOUT, height=320, xaxis_title="node", yaxis_title="attempt score − node mean")
    return fig
