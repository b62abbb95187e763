"""Distil page: finished runs teach a smaller student; three queued jobs (the distilled student, the same student
on labels alone, the side-by-side table) with progress and stop; the table of any earlier distillation."""

import pandas as pd
import streamlit as st

from core.config import TrainConfig, field_meta
from core.errors import AccessError, ConfigError
from core.models.backbones import CATALOGUE
from core.runs import RunDir, list_runs
from pages._jobs import job_view, phase_text
from pages._ui import get_cfg, get_registry, init_session, policy, runs_dir

init_session()
st.header("Distil")
st.caption("Knowledge distillation: one or more finished runs (the teachers; several = an ensemble) teach a "
           "student, usually a smaller, faster backbone. The student learns from the labels and from the teachers' "
           "softened predictions, and can also learn from unlabeled images. It is compared with the same student "
           "trained on the labels alone, with the same settings: only that row tells whether distilling helped.")
registry = get_registry()
cfg = get_cfg()


def finished_runs() -> list[RunDir]:
    return [r for r in list_runs(runs_dir()) if (r.bundle_dir / "model.safetensors").is_file()]


def describe(run: RunDir) -> str:
    s = run.read_summary()
    acc = f" · acc {s.val_accuracy:.1%}" if s and s.has_results else ""
    return f"{run.run_id} · {s.backbone if s else '?'} {s.freeze if s else ''}{acc}"


runs = finished_runs()
if not cfg.data:
    st.info("Choose a dataset on the Data page first; the Model page's settings (freezing, epochs, ...) apply to "
            "the student.")
elif not runs:
    st.info("No finished runs to teach yet: train a teacher on the Train page first (a larger backbone).")
else:
    by_id = {r.run_id: r for r in runs}
    teachers = st.multiselect("Teacher run(s)", list(by_id), format_func=lambda i: describe(by_id[i]),
                              key="distill_teachers", help=field_meta("teachers")["help"])
    names = [b.name for b in CATALOGUE] + ([cfg.backbone] if cfg.backbone not in {b.name for b in CATALOGUE} else [])
    c1, c2, c3 = st.columns(3)
    backbone = c1.selectbox("Student backbone", names, index=names.index(cfg.backbone), key="distill_student",
                            help="The network that learns; smaller is faster.")
    alpha = c2.number_input("Teacher weight (alpha)", 0.0, 1.0, cfg.distill_alpha, key="distill_alpha",
                            help=field_meta("distill_alpha")["help"])
    temp = c3.number_input("Temperature", 1.0, 20.0, cfg.distill_temperature, key="distill_temperature",
                           help=field_meta("distill_temperature")["help"])
    unlabeled = st.text_input("Unlabeled images (optional folder or .zip on the server)", cfg.unlabeled,
                              key="distill_unlabeled", help=field_meta("unlabeled")["help"])
    baseline = st.checkbox("Also train the student on the labels alone (the comparison row; doubles the time)",
                           value=True, key="distill_baseline")
    st.caption(f"Dataset `{cfg.data}` · freeze **{cfg.freeze}** · {cfg.epochs} epochs · batch {cfg.batch_size} "
               f"(from the Model page)")
    if st.button("Start distillation", key="distill_start", type="primary", disabled=not teachers):
        try:
            student = cfg.replace(backbone=backbone, teachers=tuple(str(by_id[t].path) for t in teachers),
                                  distill_alpha=alpha, distill_temperature=temp, unlabeled=unlabeled.strip())
            policy().check_config(student)
            from core.workflows.distillation import queue_distillation
            st.session_state["distill_jobs"] = queue_distillation(registry, student, baseline)
        except (ConfigError, AccessError) as exc:
            st.error(str(exc))


def running_text(role: str, snap) -> str:
    if snap.last_batch is None:
        return f"{role}: {snap.status} · {phase_text(snap)}"
    return f"{role}: {snap.status} · epoch {snap.last_batch.epoch}/{snap.info.epochs}"


def finished(role: str, snap) -> None:
    accuracy = snap.summary and snap.summary.has_results
    st.progress(1.0, text=f"{role}: {snap.status}" + (f" · validation accuracy {snap.summary.val_accuracy:.1%}"
                                                     if accuracy else ""))


jobs = st.session_state.get("distill_jobs") or {}
snaps = [job_view(job_id, lambda snap, role=role: finished(role, snap), key=f"distill_{role}", stop=False,
                  name=role.capitalize(), text=lambda snap, role=role: running_text(role, snap), every=2.0)
         for role, job_id in jobs.items()]
if any(s is not None and s.active for s in snaps) and st.button("Stop", key="distill_stop"):
    for job_id in jobs.values():
        registry.stop(job_id)
    st.toast("Stopping after the current batch…")

st.subheader("Distillations")
distilled = [r for r in list_runs(runs_dir()) if r.config.is_file() and TrainConfig.load(r.config).teachers]
if not distilled:
    st.caption("None yet.")
else:
    from core.export.compare import read_table
    pick = st.selectbox("Distilled run", [r.run_id for r in distilled], key="distill_pick")
    run = next(r for r in distilled if r.run_id == pick)
    rows = read_table(run)
    if rows:
        st.dataframe(pd.DataFrame([{"role": r.role, "run": r.name, "backbone": r.backbone, "freeze": r.freeze,
                                    "val accuracy": r.val_accuracy, "parameters (M)": round(r.params / 1e6, 2),
                                    "bundle MB": r.bundle_mb, "CPU ms/image": r.latency_ms} for r in rows]),
                     hide_index=True, key="distill_table")
        st.caption("CPU latency: ONNX Runtime, batch 1, one thread, median of alternating runs on this server.")
    else:
        st.caption("No table yet: it is built when the student (and its baseline) have finished.")
        if st.button("Build the table now", key="distill_build"):
            from core.workflows.distillation import queue_table
            task = queue_table(registry, run)
            st.session_state["distill_jobs"] = {"table": task.job_id}
            st.rerun()
