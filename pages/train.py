"""Train page: start/stop, and a live panel polling the job's snapshot while it runs."""

from dataclasses import asdict

import streamlit as st

from core.config import describe_tasks
from core.errors import AccessError, ConfigError
from core.runs import RunDir, Status
from pages._charts import batch_curve, curves, task_curves
from pages._jobs import job_view, phase_text
from pages._ui import current_run_id, get_cfg, get_registry, init_session, runs_dir

init_session()
st.header("Train")
registry = get_registry()
cfg = get_cfg()

if cfg.data:
    st.caption(f"Dataset `{cfg.data}` · `{cfg.backbone}` ({cfg.weights} weights) · freeze **{cfg.freeze}** · "
               f"{cfg.epochs} epochs · batch {cfg.batch_size} · lr {cfg.lr:g} · augmentation {cfg.augmentation}"
               + (f" · multi-task, {describe_tasks(cfg.tasks)}" if cfg.tasks else ""))
else:  # no st.stop(): a tab opened on ?run=<id> must still show that run
    st.info("Choose a dataset on the Data page to start a training.")
    st.page_link("pages/data.py", label="Go to Data", icon=":material/folder_open:")
if st.button("Start training", key="start", type="primary", disabled=not cfg.data):
    busy = registry.active_job()
    try:  # the registry checks the config against this server's policy (allowed folders) before queueing it
        job = registry.submit(cfg)
    except (ConfigError, AccessError) as exc:
        st.error(str(exc))
        st.stop()
    st.session_state["run_id"] = job.job_id
    st.query_params["run"] = job.job_id
    if busy:
        st.info(f"Another job ({busy.snapshot().title}) is using the device; yours is queued and starts when it "
                f"ends.")

run_id = current_run_id()
if run_id:
    st.session_state["run_id"] = run_id
    st.query_params["run"] = run_id
job = registry.get(run_id)
polling = job is not None and job.snapshot().active

others = [j for j in registry.jobs() if j.job_id != run_id]
if others:
    with st.expander(f"Other trainings on this server ({len(others)})"):
        for other in others:
            snap = other.snapshot()
            c1, c2 = st.columns([4, 1])
            c1.write(f"`{snap.job_id}` · {snap.title} · **{snap.status}** {snap.progress:.0%}")
            if c2.button("Watch", key=f"watch_{snap.job_id}"):
                st.session_state["run_id"] = snap.job_id
                st.query_params["run"] = snap.job_id
                st.rerun()


# The status polls every 2 s, the charts every 4 s (re-sending four charts is most of a poll's cost;
# bench/polling.py measures what watching tabs cost a training).
STATUS_EVERY_S, CHARTS_EVERY_S = 2.0, 4.0


def batch_text(snap) -> str:
    b = snap.last_batch
    if b is None:  # before the first batch: looking at the data, caching features, ...
        return phase_text(snap)
    return (f"epoch {b.epoch}/{snap.info.epochs} · batch {b.step}/{b.steps_per_epoch} · {b.images_per_sec:.0f} "
            f"images/s · ETA {b.eta:.0f} s")


def outcome(snap) -> None:
    s = snap.summary
    acc = f" · validation accuracy {s.val_accuracy:.1%}" if s and s.has_results else ""
    if s and s.tasks:  # multi-task: every task's own accuracy
        acc = " · validation accuracy " + ", ".join(f"{k} {t['val']['accuracy']:.1%}"
                                                    for k, t in s.tasks.items() if t.get("val"))
    test = f" · test accuracy {s.test.accuracy:.1%}" if s and s.test else ""
    st.success(f"Training {snap.status}{acc}{test}")
    if s and s.has_results:
        st.page_link("pages/results.py", label="See the results", icon=":material/insights:")


@st.fragment(run_every=CHARTS_EVERY_S if polling else None)
def live_charts() -> None:
    snap = registry.snapshot(run_id)
    if snap.info:
        st.caption(f"{snap.info.trainable_params:,} of {snap.info.total_params:,} parameters trainable · "
                   f"{sum(snap.info.counts['train'].values())} train / {sum(snap.info.counts['val'].values())} "
                   f"val images · {snap.info.device}")
    draw_figures(live_figures(snap.job_id, len(snap.epochs), len(snap.batches), snap))


@st.cache_resource(max_entries=64, show_spinner=False)
def live_figures(run_id: str, n_epochs: int, n_batches: int, _snap) -> dict:
    """Figures for one state of a job, built once and shared by every session watching it (building plotly
    figures is most of a poll's cost; bench/polling.py measures the effect of many watchers)."""
    return figures([asdict(e) for e in _snap.epochs], [asdict(b) for b in _snap.batches])


def figures(epochs: list[dict], batches: list[dict]) -> dict:
    out = {}
    if epochs:
        out["loss_chart"], out["acc_chart"] = curves(epochs, "loss"), curves(epochs, "acc")
        if epochs[-1].get("tasks"):  # multi-task: the accuracy above is joint (every labeled task right)
            out["task_acc_chart"], out["task_loss_chart"] = task_curves(epochs, "acc"), task_curves(epochs, "loss")
    if batches:
        out["batch_loss_chart"] = batch_curve(batches, "loss", "Loss per batch")
        out["lr_chart"] = batch_curve(batches, "lr", "Learning rate")
    return out


def draw_figures(figs: dict) -> None:
    cols = st.columns(2)
    for i, (key, fig) in enumerate(figs.items()):
        cols[i % 2].plotly_chart(fig, key=key)


def show_from_disk(run_id: str) -> None:
    run = RunDir(runs_dir() / run_id)
    if not run.path.is_dir():
        st.warning(f"Run {run_id} was not found.")
        return
    status = run.read_status().get("status")
    st.info(f"Run {run_id}: {status}." + (" The server stopped while it was training; it can go on from its "
                                          "last finished epoch." if status == "interrupted" else ""))
    if status == Status.INTERRUPTED and st.button("Resume training", key="resume"):
        try:
            registry.resume(run)
        except (ConfigError, AccessError) as exc:
            st.error(str(exc))
            st.stop()
        st.rerun()
    draw_figures(figures(run.read_metrics(), []))


if run_id is None:
    st.info("No training yet. Press Start.")
elif registry.get(run_id) is None:  # not in this server process (e.g. after a restart): the run folder
    show_from_disk(run_id)
else:
    job_view(run_id, outcome, key="train", name="Training", text=batch_text, every=STATUS_EVERY_S)
    live_charts()
