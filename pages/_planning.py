"""The Model page's panels that run planning jobs: the advisor ('Advise me'), the learning-rate sweep, and the
CPU-latency measurement of the catalogue; each drawn by the shared job view."""

import streamlit as st

from core.config import TrainConfig
from core.errors import AccessError, ConfigError
from pages._charts import lr_curve
from pages._jobs import job_view, phase_text
from pages._ui import get_registry, policy, set_cfg


def start_job(state_key: str, kind: str, title: str, cfg: TrainConfig, work) -> None:
    """Queue `work(cfg, dataset, progress=, should_stop=)` as a job (after the server's policy check) and remember
    it under state_key for its job view."""
    try:
        policy().check_config(cfg)
    except (ConfigError, AccessError) as exc:
        st.error(str(exc))
        return

    def task(job):
        from core.data.multitask import single_task_view
        return work(cfg, single_task_view(cfg), progress=job.on_phase, should_stop=job.stop_event.is_set)
    st.session_state[state_key] = get_registry().submit_task(kind, title, task).job_id


def advisor_panel(cfg: TrainConfig | None) -> None:
    """'Advise me': the advisor runs as a job (it computes features, seconds to a minute): the ranking of the
    offline backbones, the settings it would train and why, the time estimate."""
    if cfg is None or not cfg.data:
        st.caption("Choose a dataset on the Data page to see what auto would choose.")
        return
    if st.button("Advise me", key="advise"):
        from core.plan.advisor import advise
        start_job("advice_job", "plan", f"advice for {cfg.portable().data}", cfg, advise)
    job_view(st.session_state.get("advice_job"), show_advice, key="advice", name="Advice",
             text=lambda snap: f"Looking at the data: {phase_text(snap)}")


def show_advice(snap) -> None:
    advice = snap.result
    st.dataframe([{"backbone": r.backbone, "parameters (M)": r.params_m, "input": f"{r.input_size} px",
                   "probe accuracy (5-fold)": f"{r.probe_accuracy:.1%}"} for r in advice.ranking], hide_index=True)
    c = advice.config
    what = (f"a **probe**, then **{c.freeze}** fine-tuning from its head for up to {c.epochs} epochs, and deliver "
            f"the better of the two on validation" if advice.probe_first else f"**{c.freeze}**, {c.epochs} epochs")
    st.success(f"Auto would train: {what} ({c.backbone}, {c.img_size or 'native'} px). After training, the "
               f"Results page says which was delivered, with both validation accuracies.")
    st.write(advice.paragraph)


def lr_finder_panel(cfg: TrainConfig) -> None:
    """A learning-rate range test as a job; its curve, and the suggestion applied with one click."""
    if not cfg.data:
        return
    if st.button("Find a learning rate", key="lr_find", help="Trains a copy of the model for 60 short steps "
                 "while the learning rate grows, and suggests one a decade below where the loss is lowest."):
        from core.plan.lr_finder import find_lr
        start_job("lr_job", "lr-find", f"learning-rate sweep on {cfg.portable().data}", cfg, find_lr)
    job_view(st.session_state.get("lr_job"), show_lr, key="lr", name="Learning-rate sweep")


def show_lr(snap) -> None:
    found = snap.result
    st.plotly_chart(lr_curve(found.lrs, found.losses, found.suggestion), key="lr_chart")
    st.caption(found.describe())
    if st.button(f"Use {found.suggestion:.1e}", key="use_lr"):
        set_cfg(lr=float(f"{found.suggestion:.1e}"))
        st.session_state.pop("w_lr", None)  # the widget keeps its own value otherwise
        st.rerun()


def latency_measured(snap) -> None:
    if st.session_state.pop("latency_job", None):
        st.rerun()  # the catalogue above re-reads the measured times
