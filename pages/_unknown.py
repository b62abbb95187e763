"""The Inspect page's "Unknown inputs" tab: the unknown-input score's histogram on the validation (and test) images
with its threshold, and the validation images closest to the threshold (core/analysis/unknown.py)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import plotly.graph_objects as go
import streamlit as st


def unknown_panel(tab, view, gallery: Callable, limit: int = 12) -> None:
    with tab:
        _panel(view, gallery, limit)


def _panel(view, gallery: Callable, limit: int) -> None:
    u, splits = view.summary.unknown or {}, view.preds.splits
    if "threshold" not in u or splits["val"].unknown is None:
        st.info(u.get("note") or "This run has no unknown-input score (it was trained before the score existed).")
        return
    t, val = float(u["threshold"]), splits["val"]
    cols = st.columns(3)
    cols[0].metric("Method", u["method"] + (f", k = {u['k']}" if u.get("k") else ""))
    cols[1].metric("Threshold", f"{t:.4g}")
    cols[2].metric("Validation images flagged", f"{float((val.unknown > t).mean()):.1%}")
    st.caption(f"Higher = more unlike the training images. Above the threshold an image is reported as \"none of "
               f"these\" (the closest class is still shown); it accepts {u.get('accept', 0.95):.0%} of the validation "
               f"images. `predict --unknown-threshold` moves it.")
    fig = go.Figure([go.Histogram(x=s.unknown, name=name, opacity=0.7, nbinsx=30)
                     for name, s in (("validation", val), ("test", splits.get("test"))) if s is not None
                     and s.unknown is not None])
    fig.add_vline(x=t, line_dash="dash", annotation_text="threshold")
    fig.update_layout(title="Unknown score", xaxis_title="score", yaxis_title="images", barmode="overlay", height=320)
    st.plotly_chart(fig, key="unknown_hist")
    order = np.argsort(np.abs(val.unknown - t))[:limit]
    st.caption("The validation images closest to the threshold:")
    gallery([{"path": val.paths[i], "score": float(val.unknown[i])} for i in order],
            lambda r: f"{r['path']}: {r['score']:.3g} ({'flagged' if r['score'] > t else 'accepted'})", limit)
