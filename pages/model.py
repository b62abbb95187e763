"""Model page: backbone, weights, what to freeze, hyperparameters, augmentation preview, config file."""

from pathlib import Path

import streamlit as st

from core.config import TrainConfig
from core.errors import AccessError, ConfigError, WeightsError
from core.models import weights_source as source_rules
from core.models.backbones import CATALOGUE, create_model
from core.models.freeze import describe_freeze
from core.plan.latency import cached_latency
from pages._jobs import job_view
from pages._planning import advisor_panel, latency_measured, lr_finder_panel
from pages._ui import config_fields, config_widget, get_cfg, get_registry, init_session, policy, runs_dir, set_cfg

init_session()
st.header("Model")

FREEZE_TEXT = {
    "auto": "**Auto** (default) – TransferLab trains two candidates and keeps the better on your validation "
            "images: a probe on the pretrained features (seconds), then fine-tuning of the last stages that starts "
            "from it and stops when validation stops improving; a time budget shortens training to fit. Press "
            "*Advise me* below to see the plan and why before you train.",
    "probe": "**Probe** – the pretrained network is frozen and only a new final layer learns. Fastest by far "
             "(each image goes through the network once), good when your photos look like everyday photos.",
    "partial": "**Partial** – the last few stages of the network adapt as well, the pretrained "
               "part at a lower learning rate. On everyday photos (ants/bees, 3 epochs) it measured at least as "
               "accurate as full at two thirds of the time.",
    "full": "**Full** – the whole network adapts, the pretrained part at a lower learning rate. Slowest; "
            "worth trying when partial falls short on very unusual images.",
    "gradual": "**Gradual** – the new layer learns first, then the network is unfrozen stage by stage "
               "(fastai-style). Gentle on small datasets.",
}


def start_from_run_picker(cfg: TrainConfig) -> None:
    """'finished run': a run from the history, or a run folder / bundle folder / bundle .zip by path; its
    backbone and preprocessing come with it, its head too when the classes are the same."""
    from core.runs import list_runs
    runs = {str(r.path): r for r in list_runs(runs_dir(), task_views=True)  # a multi-task run: each task
            if (r.bundle_dir / "model.safetensors").exists()}
    labels = {p: f"{r.run_id} · {(s := r.read_summary()).backbone} on {s.dataset} · acc {s.val_accuracy or 0:.3f}"
              for p, r in runs.items() if r.read_summary()}
    options = [""] + list(labels) + ([cfg.init_from] if cfg.init_from and cfg.init_from not in labels else [])
    picked = st.selectbox("Finished run", options, index=options.index(cfg.init_from), key="w_init_run",
                          format_func=lambda p: labels.get(p, p or "choose a run"))
    typed = st.text_input("or a run folder, bundle folder or bundle .zip on this server", key="w_init_path")
    path = typed.strip() or picked
    if not path:
        st.info("Choose a finished run, or give its path.")
        return
    try:
        policy().check_path(path, "The run to start from")
        changes, src = source_rules.run_changes(path)
    except (ConfigError, AccessError) as exc:
        st.error(str(exc))
        return
    err = set_cfg(**changes)
    st.error(err) if err else st.caption(source_rules.describe_run_source(src))


@st.cache_data(show_spinner=False)
def freeze_counts(backbone: str, freeze: str, stages: int, num_classes: int) -> dict:
    return describe_freeze(TrainConfig(backbone=backbone, freeze=freeze, trainable_stages=stages), num_classes)


st.subheader("Backbone")
latency = cached_latency()
st.dataframe([{"name": b.name, "parameters (M)": b.params_m, "input": f"{b.input_size} px",
               "CPU ms/image": latency.get(b.name), "weights": ", ".join(b.weight_sources),
               "offline": "yes" if "bundled" in b.weight_sources else "needs download", "notes": b.note}
              for b in CATALOGUE], hide_index=True)
if st.button("Measure CPU latency here" if not latency else "Measure CPU latency again", key="measure_latency",
             help="Each catalogue backbone exported to ONNX and timed in ONNX Runtime on this machine's CPU (batch "
                  "1, one thread): what one prediction costs. About half a minute; kept for next time."):
    from core.plan.latency import measure_latency
    st.session_state["latency_job"] = get_registry().submit_task(
        "latency", "CPU latency of the catalogue",
        lambda job: measure_latency(tuple(b.name for b in CATALOGUE), progress=job.on_phase)).job_id
job_view(st.session_state.get("latency_job"), latency_measured, key="latency", name="Latency measurement",
         text=lambda snap: f"Measuring: {snap.phase}")
cfg = get_cfg()
names = [b.name for b in CATALOGUE]
c1, c2 = st.columns(2)
backbone = c1.selectbox("Backbone", names + ([cfg.backbone] if cfg.backbone not in names else []),
                        index=(names + [cfg.backbone]).index(cfg.backbone), key="w_backbone",
                        help="Any timm model name also works from the CLI.")
sources = source_rules.sources_for(backbone)
current = source_rules.current_source(cfg)
source = c2.radio("Pretrained weights", sources, horizontal=True, key="w_weights_source",
                  help=source_rules.SOURCE_HELP,
                  index=sources.index(current) if current in sources else 0)
weights = source_rules.weights_for(cfg, source)
if source == source_rules.FROM_RUN:
    start_from_run_picker(cfg)
if source == "file":
    up = st.file_uploader("Weights file", type=["safetensors", "pth", "pt"], key="weights_up")
    if up is not None:
        path = policy().store_upload(up.getvalue(), up.name, "weights")  # by content: never overwrites another
        try:
            source_rules.check_weights_file(backbone, path)
            weights = str(path)
            st.success(f"{up.name} fits {backbone} (stored as {path.name}).")
        except WeightsError as exc:
            st.error(str(exc))
            weights = None
    if weights is None:
        st.info("Upload a weights file, or choose another source.")
if source != source_rules.FROM_RUN and (err := set_cfg(**source_rules.pretrained_changes(cfg, backbone, weights))):
    st.error(err)
backbone = get_cfg().backbone  # a finished run's own, when starting from one

st.subheader("What to train")
cfg = get_cfg()
freeze = st.radio("Freezing", list(FREEZE_TEXT), index=list(FREEZE_TEXT).index(cfg.freeze), horizontal=True,
                  key="w_freeze")
st.markdown(FREEZE_TEXT[freeze])
stages = config_widget("trainable_stages", "Trainable stages") if freeze == "partial" else cfg.trainable_stages
summary = st.session_state.get("dataset_summary")
n_classes = len(summary["classes"]) if summary else 2
changes = {"freeze": freeze, "trainable_stages": int(stages)}
if freeze == "auto":
    changes["budget_min"] = config_widget("budget_min", "Time budget (minutes, 0 = none)")
    advisor_panel(get_cfg().replace(backbone=backbone, weights=weights or "bundled", **changes) if weights else None)
else:
    counts = freeze_counts(backbone, freeze, int(stages), n_classes)
    st.caption(f"{counts['trainable']:,} of {counts['total']:,} parameters train "
               f"({counts['trainable'] / counts['total']:.1%}); {counts['trainable_stages']} of {counts['stages']} "
               f"backbone stages" + (" at the start, more each epoch" if freeze == "gradual" else "") + ".")

st.subheader("Hyperparameters")
lr_finder_panel(get_cfg())
cols = st.columns(4)
for i, name in enumerate(config_fields("optim", advanced=False)):
    changes[name] = config_widget(name, container=cols[i % 4])
with st.expander("Advanced"):
    cols = st.columns(3)
    advanced = [n for s in ("data", "model", "optim", "hardware") for n in config_fields(s, advanced=True)]
    for i, name in enumerate(["val_fraction", "seed", *advanced]):
        if name != "trainable_stages":
            changes[name] = config_widget(name, container=cols[i % 3])
err = set_cfg(**changes)
if err:
    st.error(err)

st.subheader("Augmentation preview")
if summary and st.button("Show augmented samples", key="aug_preview"):
    from core.data.augment import preview
    from core.models.backbones import data_config
    paths = [p for ex in summary["examples"].values() for p in ex[:1]][:4]
    model = create_model(TrainConfig(backbone=get_cfg().backbone, weights="random"), 2)
    images = preview(paths, data_config(model, get_cfg().img_size), get_cfg().augmentation, per_image=4)
    st.image(images, width=130, caption=[Path(p).parent.name for p in paths for _ in range(4)])
elif not summary:
    st.caption("Choose a dataset on the Data page to preview augmentation.")

st.subheader("Config file")
c1, c2 = st.columns(2)
c1.download_button("Download config (YAML)", data=get_cfg().to_yaml(), file_name="transferlab.yaml",
                   mime="application/x-yaml", key="cfg_dl", on_click="ignore")
loaded = c2.file_uploader("Load a config", type=["yaml", "yml"], key="cfg_up")
if loaded is not None and st.session_state.get("cfg_loaded") != loaded.file_id:
    try:
        new = policy().read_config(loaded.getvalue().decode("utf-8", "replace"), loaded.name)
        st.session_state["cfg"] = new.to_dict()
        st.session_state["cfg_loaded"] = loaded.file_id
        for key in [k for k in st.session_state if str(k).startswith("w_")]:
            del st.session_state[key]  # widgets keep their own state and would write it back over the loaded config
        st.rerun()
    except (ConfigError, AccessError) as exc:
        st.error(f"{loaded.name} was not loaded: {exc}")
st.page_link("pages/train.py", label="Next: train", icon=":material/arrow_forward:")
