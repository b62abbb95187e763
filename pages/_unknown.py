"""The Inspect page's "Unknown inputs" tab: the unknown-input score's histogram on the validation (and test) images
with its threshold, and the validation images closest to the threshold (core/analysis/unknown.py)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from pages._jobs import job_view
from pages._ui import get_registry, server_path


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
    other = _other_images(view)
    fig = go.Figure([go.Histogram(x=s.unknown, name=name, opacity=0.7, nbinsx=30)
                     for name, s in (("validation", val), ("test", splits.get("test"))) if s is not None
                     and s.unknown is not None] +
                    ([go.Histogram(x=other.scores, name="your other images", opacity=0.7, nbinsx=30)] if other else []))
    fig.add_vline(x=t, line_dash="dash", annotation_text="threshold")
    fig.update_layout(title="Unknown score", xaxis_title="score", yaxis_title="images", barmode="overlay", height=320)
    st.plotly_chart(fig, key="unknown_hist")
    order = np.argsort(np.abs(val.unknown - t))[:limit]
    st.caption("The validation images closest to the threshold:")
    gallery([{"path": val.paths[i], "score": float(val.unknown[i])} for i in order],
            lambda r: f"{r['path']}: {r['score']:.3g} ({'flagged' if r['score'] > t else 'accepted'})", limit)


def _other_images(view):
    """A folder of images unlike the training ones, scored as a job: their histogram joins the plot, with the share
    the model would call "none of these"."""
    key = f"unknown_other_{view.run.run_id}"

    def queue(path) -> None:
        from core.workflows.other_images import score_other_images
        job = get_registry().submit_task("unknown", f"score other images for {view.run.run_id}", lambda job:
                                         score_other_images(view.run.bundle_dir, path, progress=job.on_phase,
                                                            should_stop=job.stop_event.is_set))
        st.session_state[key] = job.job_id
    server_path("A folder of other images (optional): how many would be flagged?", "unknown_other_path",
                "Score these images", "unknown_other_go", "Other images", queue, columns=True)
    snap = job_view(st.session_state.get(key), key="unknown_other", name="Scoring the other images")
    other = snap.result if snap is not None and snap.status == "completed" else None
    if other is not None:
        kept = 1 - float((view.preds.splits["val"].unknown > other.threshold).mean())
        st.caption(f"{other.flagged:.0%} of the {len(other.paths)} images in {other.source} are flagged as unlike the "
                   f"training images (the threshold keeps {kept:.0%} of the validation images).")
    return other
