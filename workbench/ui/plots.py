"""Plotly figures for the pages (data in, figure out; nothing computed beyond layout)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

POS, NEG, NEUTRAL = "#d62728", "#1f77b4", "#7f7f7f"


def _layout(fig: go.Figure, title: str, height: int = 360) -> go.Figure:
    fig.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=40, b=10),
                      template="plotly_white", legend=dict(orientation="h", y=-0.15))
    return fig


def token_bars(tokens: pd.DataFrame, title: str, n: int = 15) -> go.Figure:
    """Horizontal bars of top (red) and bottom (blue) tokens; `tokens` has side, rank, token, logit."""
    top = tokens[tokens["side"] == "top"].sort_values("rank").head(n)
    bottom = tokens[tokens["side"] == "bottom"].sort_values("rank").head(n)
    fig = go.Figure()
    fig.add_bar(y=[repr(t) for t in top["token"]][::-1], x=list(top["logit"])[::-1], orientation="h",
                marker_color=POS, name="top tokens (promoted)")
    fig.add_bar(y=[repr(t) for t in bottom["token"]][::-1], x=list(bottom["logit"])[::-1], orientation="h",
                marker_color=NEG, name="bottom tokens (suppressed)")
    fig.update_yaxes(type="category")
    return _layout(fig, title, height=max(320, 22 * (len(top) + len(bottom)) + 80))


def overlaid_histograms(hists: dict[str, dict[str, object]], title: str) -> go.Figure:
    """Normalised step histograms, one per corpus label: {label: {'edges', 'counts'}}."""
    colors = {"concept": POS, "neutral": NEG, "corpus": NEUTRAL}
    fig = go.Figure()
    for label, h in hists.items():
        edges = np.asarray(h["edges"], dtype=float)
        counts = np.asarray(h["counts"], dtype=float)
        density = counts / max(counts.sum(), 1.0)
        centres = (edges[:-1] + edges[1:]) / 2 if len(edges) == len(counts) + 1 else np.arange(len(counts))
        fig.add_scatter(x=centres, y=density, mode="lines", line_shape="hvh", fill="tozeroy", opacity=0.5,
                        name=f"{label} (n={int(counts.sum()):,})",
                        line=dict(color=colors.get(label.split()[0], None)))
    fig.update_xaxes(title="gate pre-activation")
    fig.update_yaxes(title="fraction of tokens")
    return _layout(fig, title)


def line_by_layer(frame: pd.DataFrame, y: str, color: str, title: str, y_range: Sequence[float] | None = None) -> go.Figure:
    fig = go.Figure()
    for key, rows in frame.groupby(color):
        rows = rows.sort_values("layer")
        fig.add_scatter(x=rows["layer"], y=rows[y], mode="lines+markers", name=str(key))
    fig.update_xaxes(title="layer", dtick=1)
    fig.update_yaxes(title=y, range=list(y_range) if y_range else None)
    return _layout(fig, title, height=320)


def effect_bars(contrast: pd.DataFrame, title: str, n: int = 30) -> go.Figure:
    rows = contrast.head(n)
    labels = [f"L{int(r.layer)}/{int(r.neuron)}" for r in rows.itertuples()]
    fig = go.Figure(go.Bar(x=labels, y=rows["effect_size"],
                           marker_color=[POS if v > 0 else NEG for v in rows["effect_size"]]))
    fig.update_xaxes(type="category", title="layer/neuron")
    fig.update_yaxes(title="effect size (concept vs neutral)")
    return _layout(fig, title, height=320)


def density_histogram(densities: Sequence[float], this: float | None, title: str) -> go.Figure:
    """log10 firing density of every feature of an SAE, this feature marked (or said dead); dead ones counted
    in the title, not plotted (log of 0)."""
    d = np.asarray(densities, dtype=float)
    live = np.log10(d[d > 0])
    fig = go.Figure(go.Histogram(x=live, nbinsx=40, marker_color=NEUTRAL, name="features"))
    if this and this > 0:
        fig.add_vline(x=float(np.log10(this)), line_color=POS, line_width=3,
                      annotation_text="this feature", annotation_position="top")
    fig.update_xaxes(title="log10 firing density (fraction of tokens)")
    fig.update_yaxes(title="features")
    if this is not None and not this > 0:  # a dead feature has no place on a log axis: say so inside the plot
        fig.add_annotation(text="this feature is dead (density 0, off the log axis)", xref="paper", yref="paper",
                           x=1.0, y=0.98, xanchor="right", yanchor="top", showarrow=False,
                           bgcolor="rgba(255, 255, 255, 0.85)",
                           font=dict(color=POS))
    dead = int((d <= 0).sum())
    return _layout(fig, f"{title} · {len(live):,} live, {dead:,} dead", height=300)


def activation_bars(examples: pd.DataFrame, title: str) -> go.Figure:
    """The top examples' activations, labelled by their token and article."""
    rows = examples.sort_values("rank")
    labels = [f"{r.rank + 1}. {r.token.strip() or repr(r.token)} · {r.title}"[:48] for r in rows.itertuples()]
    fig = go.Figure(go.Bar(x=list(rows["activation"])[::-1], y=labels[::-1], orientation="h", marker_color=POS))
    fig.update_xaxes(title="activation")
    fig.update_yaxes(type="category")
    return _layout(fig, title, height=max(260, 24 * len(rows) + 80))


def share_bars(long: pd.DataFrame, title: str, group: str = "entry") -> go.Figure:
    """Compared edits as horizontal grouped bars: one group per metric (its name on the left, long
    names fit), one bar per edit. `long` has `group` (a library entry: edits/library.py
    key_metrics; a method: benchmark/compare.py chart_frame), metric, value: the edited model's
    values, shares from 0 to 1."""
    fig = go.Figure()
    metrics = list(dict.fromkeys(long["metric"]))[::-1]  # top to bottom in the order given
    groups = list(long.groupby(group, sort=False))
    for name, rows in groups[::-1]:  # a horizontal group draws its first bar at the bottom: first entry on top
        by = dict(zip(rows["metric"], rows["value"], strict=True))
        fig.add_bar(y=metrics, x=[by.get(m) for m in metrics], orientation="h", name=str(name),
                    text=[None if by.get(m) is None else f"{by[m]:.2f}" for m in metrics], textposition="outside")
    fig.update_layout(barmode="group")
    fig.update_yaxes(type="category", automargin=True)
    fig.update_xaxes(title="edited model (concept rows: low is good; controls and generations: as the base)",
                     range=[0, 1.1], title_font=dict(size=11))
    fig = _layout(fig, title, height=max(320, 22 * len(metrics) * max(1, long[group].nunique()) + 140))
    fig.update_layout(legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0, traceorder="reversed"),
                      margin=dict(t=80))  # above the bars, in the entries' order
    return fig
