"""TransferLab web app: the router. Pages live in pages/; all ML lives in core/.

The navigation is drawn before anything imports torch (seconds; tens on a busy machine): until st.navigation
runs, the browser shows Streamlit's list of the files in pages/ over a blank page.
"""

import streamlit as st

from pages._ui import get_registry, init_session  # light: core.jobs (torch) is imported on first use

st.set_page_config(page_title="TransferLab", page_icon=":material/model_training:", layout="wide")
init_session()

pages = {  # in the order a person works; the optional steps last
    "Build": [
        st.Page("pages/data.py", title="Data", icon=":material/folder_open:", url_path="data", default=True),
        st.Page("pages/model.py", title="Model", icon=":material/tune:", url_path="model"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:", url_path="train"),
        st.Page("pages/label.py", title="Label", icon=":material/label:", url_path="label"),
    ],
    "Understand": [
        st.Page("pages/results.py", title="Results", icon=":material/insights:", url_path="results"),
        st.Page("pages/inspect.py", title="Inspect", icon=":material/troubleshoot:", url_path="inspect"),
        st.Page("pages/predict.py", title="Predict", icon=":material/image_search:", url_path="predict"),
    ],
    "Deliver": [
        st.Page("pages/export.py", title="Export", icon=":material/download:", url_path="export"),
    ],
    "More": [
        st.Page("pages/adapt.py", title="Adapt", icon=":material/auto_awesome:", url_path="adapt"),
        st.Page("pages/distill.py", title="Distil", icon=":material/school:", url_path="distil"),
    ],
}
nav = st.navigation(pages)


def load_engine() -> None:
    """Import torch, timm and the training engine: seconds on the process's first run, free after that.

    Done here under our own message, so get_registry() below does not show "Running get_registry()." instead.
    """
    import core.jobs  # noqa: F401


@st.cache_resource(show_spinner=False)
def device_label() -> str:
    from core.device import describe_device
    return describe_device()


with st.sidebar:
    device = st.empty()
    summary = st.session_state.get("dataset_summary")
    if summary:
        n = sum(sum(c.values()) for c in summary["counts"].values())
        st.caption(f"Dataset · {len(summary['classes'])} classes, {n} images")
    else:
        st.caption("Dataset · none chosen yet")
with st.spinner("Loading TransferLab…"):
    load_engine()
    device.caption(f"Device · {device_label()}")
    active = get_registry().active_job()
if active:
    snap = active.snapshot()
    st.sidebar.caption(f"Running · {snap.title} ({snap.progress:.0%})")

nav.run()
