"""Data page: choose a dataset (sample, zip, folder upload, server folder) and inspect its summary."""

from pathlib import Path

import streamlit as st

from core.config import default_task_name
from core.data.dataset import IMG_EXTENSIONS
from core.data.multitask import open_multitask, single_task_view
from core.data.multitask_datasets import with_task_dataset
from core.data.uploads import save_uploaded_files
from core.errors import ConfigError, DatasetError
from pages._charts import counts_bar
from pages._datasets import drop_leaked_from_val, use_dataset
from pages._ui import SAMPLE_DATA, get_cfg, init_session, policy, server_path, set_cfg

init_session()
st.header("Data")
st.write("Labeled photos, one folder per class (`cats/…`, `dogs/…`), or `train/` and `val/` folders of "
         "class folders. Upload a zip or a whole folder, or start with the sample data.")


if handoff := st.session_state.pop("use_derived", None):  # the Inspect page's edited dataset: chosen here
    if use_dataset(Path(handoff["path"]), handoff["label"]):
        st.session_state["data_note"] = handoff["note"]


sample_tab, zip_tab, dir_tab, server_tab = st.tabs(["Sample data", "Upload a zip", "Upload a folder",
                                                    "Folder on the server"])
with sample_tab:
    st.write("A small ants-vs-bees set (from PyTorch's transfer-learning tutorial) that ships with the app.")
    if st.button("Use the sample data", key="use_sample", type="primary"):
        use_dataset(SAMPLE_DATA, "sample: ants vs bees")

with zip_tab:
    up = st.file_uploader("Dataset as a .zip", type="zip", key="zip_up")
    if up is not None and st.session_state.get("zip_done") != up.file_id:
        target = policy().store_upload(up.getvalue(), up.name, "zips")
        st.session_state["zip_done"] = up.file_id
        use_dataset(target, f"zip: {Path(up.name).name}")

with dir_tab:
    files = st.file_uploader("Choose a folder", accept_multiple_files="directory", key="dir_up",
                             type=[e.lstrip(".") for e in IMG_EXTENSIONS])
    target = policy().upload_folder([f.file_id for f in files]) if files else None
    if target and st.session_state.get("dir_done") != target.name:
        try:
            root = save_uploaded_files([(f.name, f.getvalue()) for f in files], target)
            st.session_state["dir_done"] = target.name
            use_dataset(root, f"folder: {len(files)} files")
        except DatasetError as exc:
            st.error(str(exc))

with server_tab:
    st.caption("Allowed roots: " + ", ".join(f"`{r}`" for r in policy().allowed_roots()) + ". The operator "
               "adds more with the TRANSFERLAB_DATA_ROOTS environment variable.")
    server_path("Folder path", "server_path", "Use this folder", "use_server", "The folder",
                lambda path: use_dataset(path, f"folder: {path}"))



def use_labels(path: Path | None) -> None:
    """Make the run multi-task with this labels file over the chosen images (None: back to the class folders)."""
    cfg = get_cfg()
    if path is not None and cfg.data:
        try:
            st.session_state["dataset_summary"] = open_multitask(cfg.replace(tasks=str(path))).summary()
        except (DatasetError, ConfigError) as exc:
            st.error(str(exc))
            return
    set_cfg(tasks=str(path or ""), **({} if path else {"task_weights": ""}))
    if path is None and cfg.data:
        use_dataset(Path(cfg.data), st.session_state.get("dataset_label", "dataset"))


def add_task(path: Path, name: str) -> bool:
    """One more labeled dataset as a task (the dataset chosen above is the first task)."""
    try:
        cfg = with_task_dataset(get_cfg(), path, name, st.session_state.get("first_task_name", ""))
        st.session_state["dataset_summary"] = open_multitask(cfg).summary()
    except (DatasetError, ConfigError) as exc:
        st.error(str(exc))
        return False
    set_cfg(data=cfg.data, tasks=cfg.tasks)
    return True


with st.expander("Several labelings of the same images (multi-task, optional)", expanded=bool(get_cfg().tasks)):
    st.write("A labels file turns the run multi-task: one shared backbone, one head per task, one exported model "
             "per task. CSV (or JSON): a path relative to the image folder, then one column per task; leave a cell "
             "empty where an image has no label for that task.")
    st.code("path,species,light\ntrain/ants/1.jpg,ants,bright\ntrain/bees/7.jpg,,dark", language="text")
    up = st.file_uploader("Labels file", type=["csv", "json"], key="labels_up")
    if up is not None and st.session_state.get("labels_done") != up.file_id:
        st.session_state["labels_done"] = up.file_id
        use_labels(policy().store_upload(up.getvalue(), up.name, "labels"))
    server_path("Or a labels file on the server", "labels_path", "Use this labels file", "use_labels",
                "The labels file", use_labels, columns=True)
    st.write("Or one labeled dataset per task: the dataset chosen above is the first task; add a folder of class "
             "folders (or a zip of one) for each further task, e.g. the same photos sorted into other class folders. "
             "The same photo in two datasets (same bytes) is one image with both labels.")
    left, right = st.columns(2)
    if not get_cfg().task_spec.datasets:
        left.text_input("Name of the first task", key="first_task_name",
                        placeholder=default_task_name(get_cfg().data) if get_cfg().data else "e.g. species")
    task_name = right.text_input("Name of the task to add (default: its folder or zip name)", key="task_name")
    up = st.file_uploader("Add a task: its dataset as a .zip", type="zip", key="task_zip_up")
    if up is not None and st.session_state.get("task_zip_done") != up.file_id:  # retried until it works (a name)
        if add_task(policy().store_upload(up.getvalue(), up.name, "zips"), task_name or default_task_name(up.name)):
            st.session_state["task_zip_done"] = up.file_id
    server_path("Or its folder (or zip) on the server", "task_path", "Add as a task", "add_task",
                "The task's dataset", lambda path: add_task(path, task_name), columns=True)
    if get_cfg().tasks:
        given = "datasets" if get_cfg().task_spec.datasets else "labels from"
        st.success(f"Multi-task run: {given} `{get_cfg().portable().tasks}`. Task loss weights are on the Model "
                   f"page (advanced).")
        if st.button("Back to one task (the class folders)", key="clear_labels"):
            use_labels(None)
            st.rerun()

summary = st.session_state.get("dataset_summary")
if not summary:
    st.stop()

st.divider()
st.subheader(f"Dataset · {st.session_state.get('dataset_label', '')}")
if note := st.session_state.pop("data_note", None):
    st.success(note)
    st.page_link("pages/train.py", label="Train on it", icon=":material/arrow_forward:")
counts = summary["counts"]
cols = st.columns(4)
cols[0].metric("Classes", len(summary["classes"]))
for col, split in zip(cols[1:], ("train", "val", "test"), strict=True):
    if split in counts:
        col.metric(f"{split} images", sum(counts[split].values()))
for w in summary["warnings"]:
    st.warning(w)
st.plotly_chart(counts_bar(summary), key="counts_chart")
if summary.get("task_counts"):  # multi-task: labeled images per task and class (the chart shows the first task)
    if summary.get("task_sources"):
        st.caption("Tasks: " + ", ".join(f"**{t}** from `{src}`" for t, src in summary["task_sources"].items())
                   + f" · {summary['shared_images']} image(s) are in more than one dataset (one image, their labels)")
    st.dataframe([{"task": task, "class": c, **{split: n[c] for split, n in splits.items()}}
                  for task, splits in summary["task_counts"].items() for c in splits["train"]], hide_index=True)

st.subheader("Examples per class")
for name, paths in summary["examples"].items():
    st.caption(f"**{name}** · {counts['train'][name]} train")
    if paths:
        st.image(paths, width=110)

if summary["skipped"]:
    with st.expander(f"{len(summary['skipped'])} file(s) skipped", expanded=True):
        st.dataframe([{"file": Path(s["path"]).name, "folder": Path(s["path"]).parent.name, "reason": s["reason"]}
                      for s in summary["skipped"]], hide_index=True)
if not get_cfg().tasks and st.button("Look for duplicates and leakage", key="find_dups"):
    from core.data.duplicates import find_duplicates
    cfg = get_cfg()
    with st.spinner("Fingerprinting every image (cached for next time)…"):
        ds = single_task_view(cfg)  # no tasks here: the class folders
        st.session_state["dup_report"] = (cfg.data, find_duplicates(ds), Path(ds.root))
if (dups := st.session_state.get("dup_report")) and dups[0] == get_cfg().data:  # kept for the button below
    _, report, root = dups
    if not report.groups:
        st.success(f"No duplicates among {report.num_images} images.")
    elif report.leaked("val"):
        st.warning(f"{len(report.leaked('val'))} validation image(s) have a copy in train: the validation score "
                   f"would overstate the model. Drop them from validation before training.")
        if st.button("Drop duplicates from validation", key="drop_dups", type="primary"):
            drop_leaked_from_val(report.leaked("val"))
    for g in report.groups[:30]:
        kind = "exact copies" if g.kind == "exact" else "near-duplicates (resized, re-encoded, cropped or mirrored)"
        st.caption(f"{kind}{' across splits' if g.leaks else ''}")
        st.image([str(root / m.path) for m in g.members], width=110,
                 caption=[f"{m.split}: {m.path}" for m in g.members])
st.page_link("pages/adapt.py", label="Optional: unlabeled images, self-supervised adaptation",
             icon=":material/auto_awesome:")
st.page_link("pages/model.py", label="Next: choose the model", icon=":material/arrow_forward:")
