"""Data page: choose a dataset (sample, zip, folder upload, server folder) and inspect its summary."""

import hashlib
from pathlib import Path

import streamlit as st

from core.data.dataset import IMG_EXTENSIONS, open_dataset
from core.data.uploads import save_uploaded_files
from core.errors import DatasetError
from pages._charts import counts_bar
from pages._ui import SAMPLE_DATA, allowed_roots, get_cfg, init_session, set_cfg, workspace

init_session()
st.header("1 · Data")
st.write("Labeled photos, one folder per class (`cats/…`, `dogs/…`), or `train/` and `val/` folders of "
         "class folders. Upload a zip or a whole folder, or start with the sample data.")


def use_dataset(path: Path, label: str) -> None:
    cfg = get_cfg()
    try:
        ds = open_dataset(path, cfg.val_fraction, cfg.seed, extract_dir=workspace() / "uploads" / "extracted")
    except DatasetError as exc:
        st.error(str(exc))
        return
    set_cfg(data=str(path))
    st.session_state["dataset_summary"] = ds.summary()
    st.session_state["dataset_label"] = label


sample_tab, zip_tab, dir_tab, server_tab = st.tabs(["Sample data", "Upload a zip", "Upload a folder",
                                                    "Folder on the server"])
with sample_tab:
    st.write("A small ants-vs-bees set (from PyTorch's transfer-learning tutorial) that ships with the app.")
    if st.button("Use the sample data", key="use_sample", type="primary"):
        use_dataset(SAMPLE_DATA, "sample: ants vs bees")

with zip_tab:
    up = st.file_uploader("Dataset as a .zip", type="zip", key="zip_up")
    if up is not None and st.session_state.get("zip_done") != up.file_id:
        data = up.getvalue()
        target = workspace() / "uploads" / f"{hashlib.blake2b(data, digest_size=8).hexdigest()}.zip"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        st.session_state["zip_done"] = up.file_id
        use_dataset(target, f"zip: {Path(up.name).name}")

with dir_tab:
    files = st.file_uploader("Choose a folder", accept_multiple_files="directory", key="dir_up",
                             type=[e.lstrip(".") for e in IMG_EXTENSIONS])
    if files:
        ident = hashlib.blake2b("|".join(sorted(f.file_id for f in files)).encode(), digest_size=8).hexdigest()
        if st.session_state.get("dir_done") != ident:
            try:
                root = save_uploaded_files([(f.name, f.getvalue()) for f in files],
                                           workspace() / "uploads" / f"folder-{ident}")
                st.session_state["dir_done"] = ident
                use_dataset(root, f"folder: {len(files)} files")
            except DatasetError as exc:
                st.error(str(exc))

with server_tab:
    roots = allowed_roots()
    st.caption("Allowed roots: " + ", ".join(f"`{r}`" for r in roots) + ". The operator adds more with "
               "the TRANSFERLAB_DATA_ROOTS environment variable.")
    folder = st.text_input("Folder path", key="server_path")
    if st.button("Use this folder", key="use_server") and folder:
        path = Path(folder).expanduser().resolve()
        if not any(path == r or r in path.parents for r in roots):
            st.error(f"{path} is outside the allowed roots; ask the operator to add it to "
                     f"TRANSFERLAB_DATA_ROOTS.")
        else:
            use_dataset(path, f"folder: {path}")

summary = st.session_state.get("dataset_summary")
if not summary:
    st.stop()

st.divider()
st.subheader(f"Dataset · {st.session_state.get('dataset_label', '')}")
counts = summary["counts"]
cols = st.columns(4)
cols[0].metric("Classes", len(summary["classes"]))
for col, split in zip(cols[1:], ("train", "val", "test"), strict=True):
    if split in counts:
        col.metric(f"{split} images", sum(counts[split].values()))
for w in summary["warnings"]:
    st.warning(w)
st.plotly_chart(counts_bar(summary), key="counts_chart")

st.subheader("Examples per class")
for name, paths in summary["examples"].items():
    st.caption(f"**{name}** · {counts['train'][name]} train")
    if paths:
        st.image(paths, width=110)

if summary["skipped"]:
    with st.expander(f"{len(summary['skipped'])} file(s) skipped", expanded=True):
        st.dataframe([{"file": Path(s["path"]).name, "folder": Path(s["path"]).parent.name, "reason": s["reason"]}
                      for s in summary["skipped"]], hide_index=True)
st.page_link("pages/model.py", label="Next: choose the model", icon=":material/arrow_forward:")
