"""Inspect page: how sure the model is (calibration), where it fails (top losses), what it looks at (saliency),
which training labels look wrong, duplicates, and a map of the images. All read from the run folder."""

from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from core.analysis.inspect import calibration_report, inspect_run, loss_table, open_view, read_report, score_training
from core.data.derived import derive_dataset, sample_paths
from core.errors import DatasetError
from core.runs import RunDir
from pages._jobs import job_view
from pages._ui import get_registry, init_session, policy, run_picker
from pages._unknown import unknown_panel

init_session()
st.header("Inspect")
run = run_picker(key="inspect_run")
if run is None:
    st.stop()
try:
    view = open_view(run)
except (ValueError, FileNotFoundError) as exc:
    st.warning(str(exc))
    st.stop()


@st.cache_resource(max_entries=2, ttl=120, show_spinner="Opening the dataset…")
def run_dataset(path: str):
    """The run's dataset (None when it is gone): validation paths are relative to its real root (a zip's extracted
    folder, a folder's single top folder), training paths to the run's data path; the gallery looks in both."""
    try:
        return open_view(RunDir(Path(path))).dataset()
    except (DatasetError, ValueError, FileNotFoundError):
        return None


ds = run_dataset(str(run.path))
classes, root = view.classes, Path(ds.root) if ds else view.root
train_files = sample_paths(ds.train, view.root) if ds else {}  # training images by the names reports give them


@st.cache_resource(max_entries=2, show_spinner="Loading the model…")
def run_model(path: str):
    from core.analysis.inspect import load_run_model
    return load_run_model(RunDir(Path(path)))


def locate(rel: str) -> Path | None:
    """The image file a report row names, wherever the two naming rules above put it."""
    found = [p for p in (root / rel, view.root / rel) if p.is_file()]
    return found[0] if found else (Path(train_files[rel]) if rel in train_files else None)


def gallery(rows: list[dict], caption, limit: int = 24) -> None:
    shown = [(r, f) for r in rows if (f := locate(r["path"]))][:limit]
    if shown:
        st.image([str(f) for _, f in shown], width=140, caption=[caption(r) for r, _ in shown])
    elif rows:
        st.caption(f"The images are not at {root} any more; file names: " + ", ".join(r["path"] for r in rows[:10]))


def mislabel_editor(rows: list[dict], limit: int = 24) -> None:
    """The suspects, each with 'exclude' and 'relabel as': the edits become a new dataset, never the user's files."""
    shown = [(r, f) for r in rows if (f := locate(r["path"]))][:limit]
    if not shown:
        return gallery(rows, str)
    exclude, relabel = set(), {}
    for start in range(0, len(shown), 4):
        for col, (r, f) in zip(st.columns(4), shown[start:start + 4], strict=False):
            col.image(str(f), width=140, caption=f"{r['path']}: labelled {r['given']}, looks like {r['suggested']} "
                                                 f"(score {r['score']:.2f})")
            key = f"{run.run_id}:{r['path']}"
            if col.checkbox("exclude", key=f"mis_ex_{key}"):
                exclude.add(r["path"])
            others = [r["suggested"], *(c for c in classes if c not in (r["given"], r["suggested"]))]
            if (new := col.selectbox("relabel as", ["keep label", *others], key=f"mis_re_{key}")) != "keep label":
                relabel[r["path"]] = new
    st.caption(f"{len(exclude)} excluded, {len(relabel)} relabelled. The edited dataset is a new folder of links to "
               f"your files with the same split; your folder is not changed.")
    if st.button("Use the edited dataset", key="use_edited", type="primary", disabled=not (exclude or relabel)):
        use_edited(exclude, relabel)


def use_edited(exclude: set[str], relabel: dict[str, str]) -> None:
    """Derive the edited dataset, then let the Data page choose it (use_dataset: the one place that does)."""
    try:
        data = view.dataset()
        files = sample_paths(data.train, view.root)
        out = derive_dataset(data, policy().uploads_dir, {files.get(p, p) for p in exclude},
                             {files.get(p, p): c for p, c in relabel.items() if p not in exclude})
    except DatasetError as exc:
        st.error(str(exc))
        return
    st.session_state["use_derived"] = {
        "path": str(out), "label": f"run {run.run_id}'s data, {len(exclude)} excluded, {len(relabel)} relabelled",
        "note": "Now using the edited dataset from the Inspect page (links to your files, same split)."}
    st.switch_page("pages/data.py")


def job_button(label: str, key: str) -> None:
    """Every long analysis (training-image scores, mislabels, duplicates, heat-maps, map) as one job."""
    if analyses is not None and analyses.active:  # its view above the tabs shows it
        return
    if st.button(label, key=key, type="primary"):
        job = get_registry().submit_task("inspect", f"inspect {run.run_id}", lambda job: inspect_run(
            run, progress=job.on_phase, should_stop=job.stop_event.is_set))
        st.session_state[f"job_{run.run_id}"] = job.job_id
        st.rerun()


analyses = job_view(st.session_state.get(f"job_{run.run_id}"), key="analyses", name="Analyses")
calib_tab, loss_tab, saliency_tab, mislabel_tab, map_tab, unknown_tab = st.tabs(
    ["Calibration", "Top losses", "Saliency", "Mislabeled?", "Embedding map", "Unknown inputs"])
unknown_panel(unknown_tab, view, gallery)

with calib_tab:
    c = calibration_report(view)
    cols = st.columns(4)
    cols[0].metric("ECE before", f"{c['ece_before']:.3f}")
    cols[1].metric("ECE after", f"{c['ece_after']:.3f}", delta=f"{c['ece_after'] - c['ece_before']:+.3f}",
                   delta_color="inverse")
    cols[2].metric("Temperature", f"{c['temperature']:.2f}")
    cols[3].metric("Validation images used", c["num"])
    st.caption("Expected calibration error: the average gap between the confidence shown and the accuracy "
               "reached, over 15 confidence bins. The temperature ships with the model (bundle, Predict page).")
    if c["warning"]:
        st.warning(c["warning"])
    fig = go.Figure([go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect", line={"dash": "dot"})] + [
        go.Bar(x=[(r["lo"] + r["hi"]) / 2 for r in c[key] if r["count"]], y=[r["accuracy"] for r in c[key]
               if r["count"]], width=1 / 30, name=name, customdata=[r["count"] for r in c[key] if r["count"]],
               hovertemplate="accuracy %{y:.2f}<br>%{customdata} images<extra></extra>")
        for key, name in (("reliability_before", "before"), ("reliability_after", "after temperature scaling"))])
    fig.update_layout(title="Reliability diagram (validation)", xaxis_title="confidence", yaxis_title="accuracy",
                      height=360, barmode="group")
    st.plotly_chart(fig, key="reliability")

with loss_tab:
    split = st.radio("Images", ["validation", "training"], horizontal=True, key="loss_split")
    if split == "training" and not (view.out / "train_outputs.npz").exists():
        st.info("Training images have not been scored yet: run the analyses below (a job with progress).")
        job_button("Run the analyses", "job_losses")
        rows = []
    else:
        outputs = view.preds.splits["val"] if split == "validation" else score_training(view)
        rows = loss_table(outputs, classes, view.temperature)
    f1, f2 = st.columns(2)
    true_c = f1.selectbox("True class", ["any", *classes], key="loss_true")
    pred_c = f2.selectbox("Predicted class", ["any", *classes], key="loss_pred")
    rows = [r for r in rows if true_c in ("any", r["true"]) and pred_c in ("any", r["predicted"])]
    st.caption(f"{len(rows)} images, highest loss first (probabilities calibrated).")
    gallery(rows, lambda r: f"{r['path']}: {r['true']} → {r['predicted']} ({r['confidence']:.0%}, loss "
                            f"{r['loss']:.2f})")

with saliency_tab:
    val = view.preds.splits["val"]
    pick = st.selectbox("Validation image", val.paths, key="sal_image")
    target = st.selectbox("Class", ["predicted class", *classes], key="sal_class")
    if pick and (root / pick).is_file():
        from core.analysis.saliency import saliency_for_image
        from core.data.images import load_image
        model, transform = run_model(str(run.path))
        img, cls, probs = saliency_for_image(model, transform, load_image(root / pick),
                                             None if target == "predicted class" else classes.index(target))
        a, b = st.columns(2)
        a.image(str(root / pick), caption=f"{pick} (labelled {classes[val.labels[val.paths.index(pick)]]})")
        b.image(img, caption=f"Grad-CAM for '{classes[cls]}'")

with mislabel_tab:
    mis = read_report(run, "mislabels.json")
    if mis is None:
        st.write("Cross-validated heads on the pretrained features give every training image a probability from "
                 "a model that never saw its label; confident learning (cleanlab) ranks them.")
        job_button("Find likely mislabeled images", "job_mislabels")
    else:
        flagged = [m for m in mis if m["flagged"]]
        st.caption(f"{len(flagged)} of {len(mis)} training images flagged by confident learning; lowest label "
                   f"quality first.")
        mislabel_editor(mis)
    dup = read_report(run, "duplicates.json")
    if dup and dup["groups"]:
        st.subheader(f"Duplicates ({len(dup['groups'])} groups)")
        for g in dup["groups"][:20]:
            st.caption(f"{g['kind']}: " + ", ".join(f"{m['split']}/{Path(m['path']).name}" for m in g["members"]))

with map_tab:
    points = read_report(run, "embedding.json")
    if points is None:
        st.write("A t-SNE map of the features the model pooled: similar images sit together; mistakes are crosses.")
        job_button("Compute the map", "job_map")
    else:
        fig = go.Figure([go.Scatter(
            x=[p["x"] for p in pts], y=[p["y"] for p in pts], mode="markers", name=name,
            text=[f"{p['split']}/{p['path']}<br>{p['true']} → {p['predicted']}" for p in pts],
            marker={"symbol": ["circle" if p["correct"] else "x" for p in pts], "size": 7},
            hovertemplate="%{text}<extra></extra>")
            for name in classes if (pts := [p for p in points if p["true"] == name])])
        fig.update_layout(title="Embedding map (t-SNE), coloured by true class", height=480)
        st.plotly_chart(fig, key="embedding")
