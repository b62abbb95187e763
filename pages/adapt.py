"""Adapt page: optional unlabeled images, self-supervised adaptation of the backbone as a job, and the honest
before/after: the linear-probe accuracy of the backbone on your labeled images before and after adapting."""

from pathlib import Path

import streamlit as st

from core.config import field_meta
from core.errors import AccessError, ConfigError, DatasetError
from core.runs import list_runs
from pages._jobs import job_view
from pages._ui import config_widget, get_cfg, get_registry, init_session, policy, runs_dir, server_path, set_cfg

init_session()
st.header("Adapt")
st.write("Optional: before fine-tuning, the backbone can learn what your images look like without labels: from a "
         "folder or zip of unlabeled images, and always from your training images without their labels. The probe "
         "accuracy before and after shows at once whether it helped; often it does not, so it is off unless you "
         "start it here.")


def use_unlabeled(path: Path) -> None:
    from core.data.dataset import extract_dir_for
    from core.data.unlabeled import list_unlabeled
    try:
        found = list_unlabeled(path, extract_dir_for(get_cfg().output_dir) / "unlabeled")
    except DatasetError as exc:
        st.error(str(exc))
        return
    set_cfg(unlabeled=str(path))
    st.success(f"{len(found)} unlabeled images found in {path.name}.")


st.subheader("Unlabeled images")
zip_tab, server_tab = st.tabs(["Upload a zip", "Folder on the server"])
with zip_tab:
    up = st.file_uploader("Unlabeled images as a .zip", type="zip", key="unlabeled_zip")
    if up is not None and st.session_state.get("unlabeled_zip_done") != up.file_id:
        st.session_state["unlabeled_zip_done"] = up.file_id
        use_unlabeled(policy().store_upload(up.getvalue(), up.name, "unlabeled"))
with server_tab:
    server_path("Folder path (searched recursively)", "unlabeled_path", "Use this folder", "use_unlabeled",
                "The unlabeled images", use_unlabeled)
cfg = get_cfg()
st.caption(f"Pool: {'`' + Path(cfg.unlabeled).name + '` + ' if cfg.unlabeled else ''}the training images of "
           f"`{cfg.portable().data or 'no dataset yet'}`.")
if cfg.unlabeled and st.button("Use the training images only", key="clear_unlabeled"):
    set_cfg(unlabeled="")
    st.rerun()

st.subheader("Adapt the backbone")
cols = st.columns(3)
objective = cols[0].selectbox("Objective", ("simsiam", "reconstruct"), key="adapt_objective_pick",
                              help=field_meta("adapt_objective")["help"])
start = config_widget("adapt_from", "Start from", container=cols[1])
epochs = config_widget("adapt_epochs", "Epochs", container=cols[2])
if st.button("Adapt", key="adapt_start", type="primary", disabled=not cfg.data):
    job_cfg = cfg.replace(adapt_objective=objective, adapt_from=start, adapt_epochs=int(epochs))
    try:
        policy().check_config(job_cfg)
    except (ConfigError, AccessError) as exc:
        st.error(str(exc))
    else:
        from core.engine.adapt import adapt

        def task(job, c=job_cfg):
            return adapt(c, [job], stop=job.stop_event)
        title = f"adapt {cfg.backbone} ({objective}) on {cfg.portable().data}"
        st.session_state["adapt_job"] = get_registry().submit_task("adapt", title, task).job_id
if not cfg.data:
    st.caption("Choose a labeled dataset on the Data page first: the probe before/after is measured on it.")


def show_result(adaptation: dict, run_dir: str, backbone: str, key: str) -> None:
    b, a = adaptation.get("probe_before"), adaptation.get("probe_after")
    cols = st.columns(3)
    cols[0].metric("Probe accuracy before", f"{b:.1%}" if b is not None else "-")
    cols[1].metric("After adapting", f"{a:.1%}" if a is not None else "-",
                   delta=f"{(a - b) * 100:+.1f} points" if a is not None and b is not None else None)
    cols[2].metric("Images", adaptation.get("pool_images", 0))
    weights = Path(run_dir) / adaptation["weights"] if adaptation.get("weights") else None
    if weights and st.button("Train from these weights", key=f"use_{key}"):
        problem = set_cfg(weights=str(weights), backbone=backbone)
        st.error(problem) if problem else st.success(f"The Model page now starts from {weights.name} of this run.")


def show_adapted(snap) -> None:
    res = snap.result
    st.write(res.summary.note)
    show_result(res.adaptation, res.run_dir, res.summary.backbone, "job")


job_view(st.session_state.get("adapt_job"), show_adapted, key="adapt", name="Adaptation")

past = [(r, s) for r in list_runs(runs_dir()) if (s := r.read_summary()) and s.adaptation]
if past:
    st.subheader("Earlier adaptations")
    for run, s in past[:10]:
        with st.expander(f"{run.run_id} · {s.backbone} · {s.adaptation['objective']} from {s.adaptation['start']} "
                         f"· {s.status}"):
            st.write(s.note)
            show_result(s.adaptation, str(run.path), s.backbone, run.run_id)
