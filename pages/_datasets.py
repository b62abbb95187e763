"""Choosing the session's dataset: open it as the engine will (the summary the pages show), and the copy without
the validation images that leak from train. Used by the Data page; the Inspect page hands its edits to it."""

from pathlib import Path

import streamlit as st

from core.data.dataset import extract_dir_for, open_dataset
from core.data.derived import derive_dataset, sample_paths
from core.data.multitask import open_multitask, single_task_view
from core.data.multitask_datasets import with_first_dataset
from core.errors import ConfigError, DatasetError
from pages._ui import get_cfg, policy, set_cfg


def use_dataset(path: Path, label: str) -> bool:
    cfg = get_cfg()
    try:  # the engine opens it the same way: one extraction of a zip, one scan of the files (cached)
        new = with_first_dataset(cfg, path)  # datasets as tasks: the first task's dataset changes with it
        ds = open_multitask(new) if cfg.tasks else \
            open_dataset(path, cfg.val_fraction, cfg.seed, extract_dir=extract_dir_for(cfg.output_dir))
    except (DatasetError, ConfigError) as exc:
        st.error(str(exc))
        return False
    set_cfg(data=new.data, tasks=new.tasks)
    st.session_state["dataset_summary"] = ds.summary()
    st.session_state["dataset_label"] = label
    return True


def drop_leaked_from_val(leaked: list[str]) -> None:
    """A validation image with a copy in train overstates the score: use a derived dataset without it (a folder of
    links to the same files, same split; the user's folder is left as it is)."""
    cfg = get_cfg()
    try:
        ds = single_task_view(cfg)  # no tasks here: the class folders
        names = sample_paths(ds.val, ds.root)
        out = derive_dataset(ds, policy().uploads_dir, {names.get(p, p) for p in leaked}, {})
    except DatasetError as exc:
        st.error(str(exc))
        return
    if use_dataset(out, f"{st.session_state.get('dataset_label', 'dataset')}, without duplicates in val"):
        st.session_state["data_note"] = (f"Now using a copy without the {len(leaked)} validation image(s) that had "
                                         f"a copy in train (links to your files, same split).")
        st.rerun()
