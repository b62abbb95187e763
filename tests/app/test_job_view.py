"""The one job view every page uses (pages/_jobs.py), under AppTest with jobs the test holds at will: progress and
Stop while it runs, the page's result when it is done, the error with its traceback when it fails, and polling
only while the job is active (the fragment is defined with run_every, then without)."""

import threading

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from pages._ui import get_registry

SCRIPT = """
import streamlit as st
from pages._jobs import job_view
job_view(st.session_state.get("job"), lambda snap: st.success(f"done: {snap.result}"), key="t", name="Test job")
"""


@pytest.fixture
def app(tmp_path, monkeypatch):
    """A page with one job view, and the run_every of every fragment it defines, in order."""
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "ws"))
    st.cache_resource.clear()  # the job registry is process-global
    real, run_every = st.fragment, []

    def recording(func=None, **kwargs):
        run_every.append(kwargs.get("run_every"))
        return real(func, **kwargs)
    monkeypatch.setattr(st, "fragment", recording)
    at = AppTest.from_string(SCRIPT, default_timeout=30)
    at.run_every = run_every
    return at


def held_job(release: threading.Event, fail: bool = False):
    """A job that reports a phase and waits for `release` (or its Stop) before it returns 42 or raises."""
    def task(job):
        job.on_phase("counting", 1, 4)
        while not (release.wait(0.05) or job.stop_event.is_set()):
            pass
        if fail:
            raise ValueError("the numbers did not add up")
        return 42
    job = get_registry().submit_task("test", "a held job", task)
    for _ in range(200):  # running: the worker took it and reported its phase
        if job.snapshot().phase == "counting":
            break
        threading.Event().wait(0.05)
    assert job.snapshot().status == "running"
    return job


def test_no_job_draws_nothing(app):
    app.run()
    assert not app.exception and not app.get("progress") and app.run_every == []


def test_progress_while_running_then_result_and_polling_stops(app):
    release = threading.Event()
    job = held_job(release)
    app.session_state["job"] = job.job_id
    app.run()
    assert not app.exception
    assert [p.proto.text for p in app.get("progress")] == ["counting 1/4"]
    assert [b.key for b in app.button] == ["t_stop"]
    assert app.run_every[-1] == 1.0  # polls while the job runs

    release.set()
    assert job.finished.wait(30)
    app.run()
    assert not app.exception
    assert [s.value for s in app.success] == ["done: 42"]
    assert not app.get("progress") and not app.button
    assert app.run_every[-1] is None  # defined without run_every once the job has ended: no more polling


def test_stop_button_stops_the_job(app):
    job = held_job(threading.Event())
    app.session_state["job"] = job.job_id
    app.run()
    app.button(key="t_stop").click().run()
    assert job.stop_event.is_set()
    assert job.finished.wait(30)
    app.run()
    assert job.snapshot().status == "stopped" and app.run_every[-1] is None


def test_a_failure_is_a_sentence_with_the_traceback_aside(app):
    release = threading.Event()
    job = held_job(release, fail=True)
    app.session_state["job"] = job.job_id
    release.set()
    assert job.finished.wait(30)
    app.run()
    assert not app.exception
    assert [e.value for e in app.error] == ["Test job failed: the numbers did not add up"]
    assert app.expander[0].label == "Details for a bug report"
    assert "ValueError" in app.code[0].value
    assert not app.success
