"""The one view of a background job that every page uses: progress, Stop, the error, then the page's result.

Not a page. A page starts a job (core.jobs, through get_registry()) and keeps its id; `job_view` draws it. The
view polls the job's snapshot (a frozen copy taken under the job's lock) only while the job is queued or running:
when it ends, one full rerun re-defines the view without run_every, so a finished job costs nothing to show.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import streamlit as st

from pages._ui import get_registry

if TYPE_CHECKING:
    from core.jobs import JobSnapshot

POLL_EVERY_S = 1.0


def phase_text(snap: JobSnapshot) -> str:
    """The default progress line: the task's phase and how far it is ("scoring images 3/40")."""
    where = f" {snap.phase_done}/{snap.phase_total}" if snap.phase_total else ""
    return f"{snap.phase}{where}"


def job_view(job_id: str | None, result: Callable[[JobSnapshot], None] | None = None, *, key: str,
             name: str = "Job", text: Callable[[JobSnapshot], str] = phase_text,
             every: float = POLL_EVERY_S, stop: bool = True) -> JobSnapshot | None:
    """Draw the job `job_id` of this server (nothing when there is none) and return its snapshot.

    Queued: its place in the queue. Running: a progress bar with `text(snapshot)` and a Stop button. Failed:
    "`name` failed: <error>" with the traceback in an expander. Finished (completed or stopped): `result(snapshot)`,
    the page's own drawing. `key` keeps the widgets of several views on one page apart; stop=False leaves the Stop
    button to the page (one button for a group of jobs)."""
    snap = get_registry().snapshot(job_id) if job_id else None
    if snap is None:
        return None
    polling = snap.active

    def view() -> None:
        now = get_registry().snapshot(job_id)
        if polling and not now.active:
            st.rerun()  # the job ended: a full rerun re-defines this view without run_every (polling stops)
        if now.status == "queued":
            st.info(f"Queued (position {now.queue_position}) · {name} · waiting for the device.")
        elif now.active:
            st.progress(now.progress, text=text(now))
        elif now.error:
            st.error(f"{name} failed: {now.error}")
            with st.expander("Details for a bug report"):
                st.code(now.traceback or "")
        elif result is not None:
            result(now)
        if stop and now.active and st.button("Stop", key=f"{key}_stop"):
            get_registry().stop(job_id)
            st.toast("Stopping after the current step…")

    st.fragment(view, run_every=every if polling else None)()
    return snap
