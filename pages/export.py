"""Export page: the model bundle, the weights, the config; ONNX / int8 ONNX / TorchScript files made as jobs and
offered only once they pass their check on the validation images (the figures sit beside the download)."""

import streamlit as st

from core.config import TrainConfig
from core.export.bundle import export_zip, shipped_temperature
from core.export.card import load_snippet
from core.export.parity import FILES, export_file, read_checks
from pages._jobs import job_view
from pages._ui import get_registry, init_session, run_picker

FORMATS = {  # format -> (label, who it is for)
    "onnx": ("ONNX", "apps and servers without PyTorch: ONNX Runtime, OpenCV, browsers (onnxruntime-web)"),
    "onnx-int8": ("ONNX int8", "phones and small CPUs: about 4x smaller, quantized on your training images"),
    "torchscript": ("TorchScript", "C++ (libtorch) and PyTorch Mobile"),
}


def job_key(run_id: str, fmt: str) -> str:
    return f"export_job:{run_id}:{fmt}"


def start_export(run, fmt: str, multi: bool = False) -> None:
    """A job exporting the run (multi: a multi-task run's one file with every task, core/export/multitask_onnx)."""
    from core.export.artifacts import export_run
    from core.export.multitask_onnx import export_multitask_run
    export = export_multitask_run if multi else export_run
    job = get_registry().submit_task("export", f"{FORMATS[fmt][0]} export of {run.run_id}",
                                     lambda job: export(run, fmt, progress=job.on_phase,
                                                        should_stop=job.stop_event.is_set))
    st.session_state[job_key(run.run_id, fmt)] = job.job_id


def export_row(run, fmt: str, checks: dict, multi: bool = False) -> None:
    """One format: its job's view while it runs (the page is redrawn when it ends), else its check and download."""
    from core.export import multitask_onnx
    label, blurb = FORMATS[fmt]
    files, export_path = (multitask_onnx.FILES, multitask_onnx.export_file) if multi else (FILES, export_file)
    st.markdown(f"**{label}** · {blurb}")
    snap = job_view(st.session_state.get(job_key(run.run_id, fmt)), key=f"export_{fmt}", name=f"{label} export")
    if snap is not None and snap.active:
        return
    check = checks.get(fmt)
    left, right = st.columns([1, 2])
    if check is not None and check.passed:
        path = export_path(run, fmt)
        left.download_button(f"Download {files[fmt]}", data=lambda: path.read_bytes(), file_name=files[fmt],
                             mime="application/octet-stream", key=f"dl_{fmt}", on_click="ignore")
        right.caption(f"Check passed: {check.summary_line()}. sha256 `{check.sha256[:16]}…`")
    elif check is not None:
        right.warning(f"Not offered: it failed its check. {check.reason} ({check.summary_line()})")
    if left.button("Export again" if check else "Export and check", key=f"make_{fmt}"):
        start_export(run, fmt, multi)
        st.rerun()


def export_rows(formats: tuple[str, ...], read, multi: bool = False) -> None:
    checks = read(run)
    for fmt in formats:
        export_row(run, fmt, checks, multi)


init_session()
st.header("Export")
run = run_picker()
if run is None:
    st.stop()
if (summary := run.read_summary()) and summary.tasks:  # multi-task: a bundle per task and one multi-output file
    from core.export.multitask import FILE, task_bundle_zip
    from core.export.multitask_onnx import read_checks as read_multi_checks
    st.write("A multi-task run exports one timm bundle per task (each loads alone with timm's `local-dir:`; pick "
             "\"· task NAME\" above for its ONNX and TorchScript files) and one model that returns every task's "
             "calibrated probabilities in one pass: TorchScript (`tasks.json` inside names them) or ONNX (one output "
             "per task, named after it), checked on every task's validation images before it is offered.")
    for i, task in enumerate(summary.tasks):
        st.download_button(f"Bundle of task '{task}' (.zip)", key=f"dl_task_{i}", on_click="ignore",
                           data=lambda task=task: task_bundle_zip(run.path, task).read_bytes(),
                           file_name=f"{run.run_id}-{task}-model.zip", mime="application/zip")
    if (run.path / FILE).exists():
        st.download_button("All tasks in one model (TorchScript)", data=lambda: (run.path / FILE).read_bytes(),
                           file_name=FILE, mime="application/octet-stream", key="dl_multi", on_click="ignore")
    if run.task_views():  # runs made before task views have no bundles to build the ONNX file from
        export_rows(("onnx", "onnx-int8"), read_multi_checks, multi=True)
    st.stop()
bundle = run.bundle_dir
if not (bundle / "model.safetensors").exists():
    st.warning("This run has no trained model to export.")
    st.stop()

st.write("The bundle is a timm / Hugging Face model folder: `config.json` (architecture, class names, "
         "preprocessing), `model.safetensors`, plus the training `config.yaml`, `summary.json`, `record.json` (data "
         "hashes, versions) and a model card (README).")
c1, c2, c3 = st.columns(3)
# Callables: the files are read only when clicked, so reruns of this page stay cheap.
c1.download_button("Download model bundle (.zip)", data=lambda: export_zip(run).read_bytes(),
                   file_name=f"{run.run_id}-model.zip", mime="application/zip", key="dl_bundle",
                   type="primary", on_click="ignore")
c2.download_button("Weights only (.safetensors)", data=lambda: (bundle / "model.safetensors").read_bytes(),
                   file_name=f"{run.run_id}.safetensors", mime="application/octet-stream", key="dl_weights",
                   on_click="ignore")
c3.download_button("Training config (.yaml)",  # a task's: the multi-task run's, which made its weights
                   data=lambda: TrainConfig.load((run.parent_run or run).config).portable().to_yaml(),
                   file_name="config.yaml",
                   mime="application/x-yaml", key="dl_config", on_click="ignore")

st.subheader("Deployable files, checked before they are offered")
st.caption("Each file takes float32 NCHW images exactly as the bundle's timm transform makes them and returns "
           "calibrated class probabilities; class names and preprocessing are inside it. Before it is offered, "
           "every validation image goes through the file and through the trained model: the top-1 must agree "
           "(int8: at most 1 point of accuracy lost). The figures also go into the model card.")


export_rows(tuple(FORMATS), read_checks)

st.subheader("Load it elsewhere")
st.code(load_snippet(run.run_id, shipped_temperature(bundle), "the unzipped folder"), language="python")
st.code(f"python -m core predict {run.run_id}-model.zip photo.jpg      # or from the command line\n"
        f"python -m core export runs/{run.parent_run.run_id + ' --task ' + run.task if run.task else run.run_id}"
        " --format onnx          # onnx | onnx-int8 | torchscript, checked",
        language="bash")
