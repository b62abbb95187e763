"""Predict page: top-k classes for uploaded or camera images with a trained run's model."""

from pathlib import Path

import streamlit as st

from core.data.dataset import IMG_EXTENSIONS, check_image
from core.export.bundle import load_bundle
from pages._ui import init_session, policy, run_picker

init_session()
st.header("Predict")


@st.cache_resource(max_entries=2, show_spinner="Loading the model…")
def loaded_model(bundle_dir: str):
    return load_bundle(bundle_dir)


run = run_picker()
if run is None:
    st.stop()
if not (run.bundle_dir / "model.safetensors").exists():
    st.info("A multi-task run predicts through its tasks: pick \"· task NAME\" above." if run.task_views() else
            "This run has no trained model.")
    st.stop()
model = loaded_model(str(run.bundle_dir))
k = st.slider("How many classes to show", 1, max(1, len(model.classes)), min(3, len(model.classes)), key="topk")
files = st.file_uploader("Images", accept_multiple_files=True, type=[e.lstrip(".") for e in IMG_EXTENSIONS],
                         key="predict_up")
shot = st.camera_input("…or take a photo", key="camera")
items = [(f.name, f.getvalue()) for f in files or []] + ([("camera.jpg", shot.getvalue())] if shot else [])
if not items:
    st.stop()
with policy().scratch_folder("predict") as tmp:  # removed when done, also on error
    paths, bad = [], []
    for i, (name, data) in enumerate(items):
        p = Path(tmp) / f"{i}{Path(name).suffix.lower() or '.jpg'}"
        p.write_bytes(data)
        reason = check_image(p)
        if reason:  # a statement, not an expression: Streamlit's magic would print the expression's None
            bad.append((name, reason))
        else:
            paths.append((name, p))
    for name, reason in bad:
        st.error(f"{name}: {reason}")
    results = model.assess([p for _, p in paths], topk=k) if paths else []
    for (name, p), got in zip(paths, results, strict=True):
        top = got.top
        c1, c2 = st.columns([1, 3])
        c1.image(p.read_bytes(), width=160)
        c2.markdown(f"**{name}** → **{top[0][0]}** ({top[0][1]:.1%})")
        if got.unknown:
            c2.warning(f"Looks unlike the training images (unknown score {got.unknown_score:.3g} > threshold "
                       f"{model.unknown_threshold:.3g}): probably none of these classes; the closest is shown.")
        c2.dataframe([{"class": c, "probability": round(v, 4)} for c, v in top], hide_index=True)
        if c2.toggle("Where the model looks (Grad-CAM)", key=f"sal_{name}"):
            from core.analysis.saliency import saliency_for_image
            from core.data.images import load_image
            shown = c2.selectbox("for class", model.classes, index=model.classes.index(top[0][0]), key=f"salc_{name}")
            heat, _, _ = saliency_for_image(model.model, model.transform, load_image(p), model.classes.index(shown))
            c1.image(heat, width=160, caption=f"evidence for {shown}")
