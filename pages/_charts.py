"""Plotly figure builders: plain data in, figure out (no st.* here, so they are easy to test)."""

from __future__ import annotations

import plotly.graph_objects as go

LAYOUT = {"height": 300, "margin": {"l": 40, "r": 10, "t": 40, "b": 40}, "legend": {"orientation": "h"}}


def counts_bar(summary: dict) -> go.Figure:
    fig = go.Figure([go.Bar(name=split, x=list(c), y=list(c.values())) for split, c in summary["counts"].items()])
    fig.update_layout(barmode="group", title="Images per class", **LAYOUT)
    return fig


def curves(epochs: list[dict], metric: str) -> go.Figure:
    """Train and validation `metric` ('loss' or 'acc') per epoch."""
    x = [e["epoch"] for e in epochs]
    fig = go.Figure([go.Scatter(x=x, y=[e[f"train_{metric}"] for e in epochs], name="train", mode="lines+markers"),
                     go.Scatter(x=x, y=[e[f"val_{metric}"] for e in epochs], name="validation",
                                mode="lines+markers")])
    fig.update_layout(title={"loss": "Loss", "acc": "Accuracy"}[metric], xaxis_title="epoch", **LAYOUT)
    return fig


def batch_curve(points: list[dict], field: str, title: str) -> go.Figure:
    """A per-batch series (loss or learning rate) against fractional epoch."""
    x = [p["epoch"] - 1 + p["step"] / p["steps_per_epoch"] for p in points]
    fig = go.Figure(go.Scatter(x=x, y=[p[field] for p in points], mode="lines", name=field))
    fig.update_layout(title=title, xaxis_title="epoch", **LAYOUT)
    return fig


def confusion(cm: list[list[int]], classes: list[str]) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=cm, x=classes, y=classes, colorscale="Blues", text=cm, texttemplate="%{text}",
                               hovertemplate="true %{y}<br>predicted %{x}<br>%{z} images<extra></extra>"))
    fig.update_layout(title="Confusion matrix", xaxis_title="predicted", yaxis_title="true",
                      yaxis_autorange="reversed", **{**LAYOUT, "height": 120 + 40 * len(classes)})
    return fig


def overlay(runs: dict[str, list[dict]], metric: str) -> go.Figure:
    fig = go.Figure([go.Scatter(x=[e["epoch"] for e in rows], y=[e[metric] for e in rows], name=name,
                                mode="lines+markers") for name, rows in runs.items()])
    fig.update_layout(title=f"{metric} by run", xaxis_title="epoch", **LAYOUT)
    return fig


def lr_curve(lrs: list[float], losses: list[float], suggestion: float) -> go.Figure:
    """The learning-rate range test: smoothed loss against a log learning-rate axis, the suggestion marked."""
    fig = go.Figure(go.Scatter(x=lrs, y=losses, mode="lines", name="loss"))
    fig.add_vline(x=suggestion, line_dash="dash", annotation_text=f"{suggestion:.1e}")
    fig.update_layout(title="Learning-rate range test", xaxis_title="learning rate", xaxis_type="log",
                      yaxis_title="loss (smoothed)", **LAYOUT)
    return fig


def task_curves(epochs: list[dict], metric: str = "acc") -> go.Figure:
    """Multi-task runs: each task's validation `metric` per epoch (and its training accuracy, dotted)."""
    rows = [e for e in epochs if e.get("tasks")]
    x = [e["epoch"] for e in rows]
    names = list(rows[0]["tasks"]) if rows else []
    traces = [go.Scatter(x=x, y=[e["tasks"][t][f"val_{metric}"] for e in rows], name=f"{t} (validation)",
                         mode="lines+markers") for t in names]
    if metric == "acc":
        traces += [go.Scatter(x=x, y=[e["tasks"][t]["train_acc"] for e in rows], name=f"{t} (train)",
                              mode="lines", line={"dash": "dot"}) for t in names]
    fig = go.Figure(traces)
    fig.update_layout(title={"loss": "Loss per task", "acc": "Accuracy per task"}[metric], xaxis_title="epoch",
                      **LAYOUT)
    return fig
