"""Streamlit-only helpers shared by the pages: session state, the process-wide job registry, config widgets.

Not a page (st.navigation lists the pages explicitly). Settings live in plain session-state keys, not in
widget keys, so they survive page switches; widgets are re-seeded from them on every run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from core.config import TrainConfig, field_meta
from core.errors import AccessError, ConfigError
from core.workspace import Workspace

if TYPE_CHECKING:
    from core.jobs import JobRegistry

APP_DIR = Path(__file__).resolve().parents[1]
SAMPLE_DATA = APP_DIR / "assets" / "sample_data"


def policy() -> Workspace:
    """This server's workspace and allowed data folders (core.workspace): the one policy every route checks."""
    return Workspace.from_env(APP_DIR / "workspace", SAMPLE_DATA)


def runs_dir() -> Path:
    return policy().runs_dir


@st.cache_resource
def get_registry() -> JobRegistry:
    """One registry per server process: the device is a process-wide resource; sessions share it. Every job it
    queues is checked against the workspace policy first (allowed data folders, output inside the workspace)."""
    from core.jobs import JobRegistry  # torch and the engine: imported on first use, after the first paint
    return JobRegistry(output_dir=str(runs_dir()), guard=policy().check_config)


def init_session() -> None:
    ss = st.session_state
    ss.setdefault("cfg", TrainConfig(output_dir=str(runs_dir())).to_dict())
    ss.setdefault("dataset_summary", None)
    ss.setdefault("run_id", None)


def get_cfg() -> TrainConfig:
    init_session()
    return TrainConfig(**st.session_state["cfg"])


def set_cfg(**changes) -> str | None:
    """Apply changes; returns the validation message instead of raising (shown with st.error)."""
    try:
        cfg = get_cfg().replace(**changes)
    except ConfigError as exc:
        return str(exc)
    st.session_state["cfg"] = cfg.to_dict()
    return None


def server_path(label: str, key: str, button: str, button_key: str, what: str, use: Callable[[Path], object],
                columns: bool = False) -> None:
    """A path typed by the user, checked against the workspace's allowed roots when the button is pressed and then
    handed to use(path); a refused path is shown as the policy's sentence. `columns`: the button beside the box."""
    box, press = st.columns([3, 1]) if columns else (st, st)
    text = box.text_input(label, key=key)
    if press.button(button, key=button_key) and text:
        try:
            use(policy().check_path(text, what))
        except AccessError as exc:
            st.error(str(exc))


def config_widget(name: str, label: str | None = None, *, container=st, **kwargs):
    """One widget for one TrainConfig field: default, range, choices and help come from the dataclass."""
    meta = field_meta(name)
    value = getattr(get_cfg(), name)
    label = label or name.replace("_", " ").capitalize()
    key = f"w_{name}"
    common = {"help": meta["help"], "key": key, **kwargs}
    if meta["choices"]:
        return container.selectbox(label, meta["choices"], index=list(meta["choices"]).index(value), **common)
    if isinstance(value, bool):
        return container.checkbox(label, value=value, **common)
    if isinstance(value, int):
        return container.number_input(label, int(meta["min"]), int(meta["max"]), value, step=1, **common)
    if isinstance(value, float):
        return container.number_input(label, float(meta["min"]), float(meta["max"]), value,
                                      format="%g", step=None, **common)
    return container.text_input(label, value=value, **common)


def config_fields(section: str, advanced: bool) -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)
            if field_meta(f.name)["section"] == section and field_meta(f.name)["advanced"] == advanced]


def current_run_id() -> str | None:
    """The run this session watches: session state first, then ?run=<id> (a reopened tab re-attaches)."""
    from core.runs import is_valid_run_id
    run_id = st.session_state.get("run_id") or st.query_params.get("run")
    return run_id if run_id and is_valid_run_id(run_id) else None


def run_picker(label: str = "Run", key: str = "run_pick", finished_only: bool = True):
    """Select box over runs on disk (newest first), each multi-task run followed by its tasks ("<run id> · task
    NAME": a run folder of that task alone); returns a RunDir or None."""
    from core.runs import list_runs
    runs = [r for r in list_runs(runs_dir(), task_views=True) if not finished_only or r.read_summary()]
    if not runs:
        st.info("No finished runs yet. Train a model on the Train page first.")
        return None
    ids = [r.run_id for r in runs]
    current, view = current_run_id(), st.session_state.get("run_view")  # a task stays picked across pages
    current = view if view in ids and current and view.startswith(current) else current
    index = ids.index(current) if current in ids else 0

    def describe(run_id: str) -> str:
        run = next(r for r in runs if r.run_id == run_id)
        s = run.read_summary()
        acc = f" · acc {s.val_accuracy:.3f}" if s.has_results else ""
        if run.task:
            return f"{run.parent_run.run_id} · task {run.task}{acc}"
        return f"{run_id} · {s.backbone} {s.freeze}{acc} · {s.status}" + (f" · {len(s.tasks)} tasks" if s.tasks
                                                                           else "")
    chosen = st.selectbox(label, ids, index=index, format_func=describe, key=key)
    run = next(r for r in runs if r.run_id == chosen)
    st.session_state["run_view"] = chosen
    st.session_state["run_id"] = run.parent_run.run_id if run.task else chosen
    return run
