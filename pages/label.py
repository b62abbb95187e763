"""Label page: a pool of unlabeled images, the ones whose labels would help a finished run's model most (ranked by
a job, core/analysis/suggest.py), one click per image to label it, and "train again" on the run's dataset plus the
new labels (a derived dataset: links to the files, the run's split; its runs' lineage names the labeling round)."""

from pathlib import Path

import streamlit as st

from core.analysis.suggest import (
    DEFAULT_METHOD,
    METHODS,
    labeled_dataset,
    pseudo_labels,
    suggest_for_run,
    use_pseudo_labels,
)
from core.data.dataset import IMG_EXTENSIONS, extract_dir_for
from core.data.uploads import save_uploaded_files
from core.errors import AccessError, ConfigError, DatasetError
from pages._datasets import use_dataset
from pages._jobs import job_view
from pages._ui import get_registry, init_session, policy, run_picker, runs_dir, server_path

NONE = "__none__"  # "none of these": an image of no class (kept out, a candidate for a new class)
SKIP = "__skip__"
COLUMNS = 4

init_session()
st.header("Label")
st.write("Photos are cheap, labels are slow. Give a pool of unlabeled images: the ones whose labels would help the "
         "chosen run's model most come first. Label them with one click each, then train again on the run's images "
         "plus your new labels.")
run = run_picker(key="label_run")
if run is None:
    st.stop()
ss = st.session_state
answers: dict[str, str] = ss.setdefault(f"labels_{run.run_id}", {})  # pool image -> class, SKIP or NONE


def use_pool(path: Path, label: str) -> None:
    ss["label_pool"], ss["label_pool_label"] = str(path), label
    ss.pop(f"suggest_job_{run.run_id}", None)


st.subheader("1 · The pool")
upload_tab, server_tab = st.tabs(["Upload images", "Folder on the server"])
with upload_tab:
    files = st.file_uploader("Unlabeled images", accept_multiple_files=True, key="pool_up",
                             type=[e.lstrip(".") for e in IMG_EXTENSIONS])
    if files and ss.get("pool_done") != (target := policy().upload_folder([f.file_id for f in files])).name:
        try:
            use_pool(save_uploaded_files([(f.name, f.getvalue()) for f in files], target), f"{len(files)} uploaded "
                                                                                            f"images")
            ss["pool_done"] = target.name
        except DatasetError as exc:
            st.error(str(exc))
with server_tab:
    st.caption("Any layout, searched recursively; a .zip works too. Allowed roots: "
               + ", ".join(f"`{r}`" for r in policy().allowed_roots()) + ".")
    server_path("Folder (or .zip) on the server", "pool_path", "Use this pool", "use_pool", "The pool",
                lambda path: use_pool(path, f"folder: {path}"))
pool = ss.get("label_pool")
if not pool:
    st.stop()

st.subheader("2 · Suggestions")
st.caption(f"Pool · {ss['label_pool_label']}")
left, right = st.columns(2)
k = left.number_input("Images to suggest", 1, 200, 20, key="label_k")
method = right.selectbox("Method", METHODS, index=METHODS.index(DEFAULT_METHOD), key="label_method",
                         help="margin / entropy: the images the model is least sure about; coreset: the images "
                              "least like any labeled one; typiclust: typical images of unlabeled clusters (a few "
                              "labels in all); mix / badge: unsure and diverse (badge by the gradients of the "
                              "model's last layer). The default won the label-savings bench.")
job_key = f"suggest_job_{run.run_id}"
if st.button("Suggest images to label", key="suggest", type="primary"):
    run_path, out = run.path, extract_dir_for(runs_dir())
    job = get_registry().submit_task("suggest", f"suggest images for {run.run_id}", lambda job: suggest_for_run(
        run_path, pool, int(k), method, out, progress=job.on_phase, should_stop=job.stop_event.is_set))
    ss[job_key] = job.job_id
    st.rerun()


def train_again(labels: dict[str, str], pseudo: dict[str, str]) -> None:
    """The run's dataset plus these labels (and pseudo-labels) as a derived dataset, chosen for the session, and
    its training queued."""
    try:
        data, cfg = labeled_dataset(run.path, labels, policy().uploads_dir, pseudo)
        cfg = cfg.replace(output_dir=str(runs_dir()))
        ss["cfg"] = cfg.to_dict()  # the run's settings on the new dataset: the Model and Train pages show them
        if not use_dataset(data, f"run {run.run_id}'s data + {len(labels)} new labels"):
            return
        job = get_registry().submit(cfg)
    except (ValueError, DatasetError, ConfigError, AccessError) as exc:
        st.error(str(exc))
        return
    ss[f"labels_{run.run_id}"] = {}
    ss["run_id"] = job.job_id
    st.query_params["run"] = job.job_id
    st.switch_page("pages/train.py")


def answer(path: str, value: str) -> None:
    answers[path] = value


def card(i: int, r, classes: list[str], keys: bool) -> None:
    """One suggested image with a button per class, "skip" and "none of these"; with keys, the keyboard answers
    for it (1-9 the classes in order, S skip, N none of these)."""
    now = "unlike every class: a new one?" if r.unknown else f"now {r.predicted} {r.confidence:.0%}"
    st.image(r.path, width=160, caption=f"{Path(r.path).name} · {now}")
    for c, name in enumerate(classes):
        st.button(name, key=f"lab_{i}_{c}", on_click=answer, args=(r.path, name), use_container_width=True,
                  shortcut=str(c + 1) if keys and c < 9 else None)
    a, b = st.columns(2)
    a.button("skip", key=f"skip_{i}", on_click=answer, args=(r.path, SKIP), shortcut="S" if keys else None)
    b.button("none of these", key=f"none_{i}", on_click=answer, args=(r.path, NONE), shortcut="N" if keys else None)


def cards(todo: list, classes: list[str], keys: bool) -> None:
    """The images in rows of COLUMNS; with keys, the keyboard answers for the first one."""
    for start in range(0, len(todo), COLUMNS):
        for col, (i, r) in zip(st.columns(COLUMNS), todo[start:start + COLUMNS], strict=False):
            with col.container(border=True, key=f"card_{i}"):
                card(i, r, classes, keys and i == todo[0][0])


def grid(snap) -> None:
    """The method's picks not answered yet, each with one button per class, "skip" and "none of these"; the
    images the unknown-input score puts outside every class apart, as candidates for a new class."""
    picks = [r for r in snap.result or [] if r.picked]
    classes = run.read_summary().classes
    labeled = {p: c for p, c in answers.items() if c not in (SKIP, NONE)}
    nones = sum(c == NONE for c in answers.values())
    st.metric("Labeled this round", len(labeled))
    st.caption(f"{len(picks)} suggested · {len(labeled)} labeled · {sum(c == SKIP for c in answers.values())} "
               f"skipped · {nones} none of these (left out: candidates for a new class)")
    todo = [(i, r) for i, r in enumerate(picks) if r.path not in answers]
    known, new = [t for t in todo if not t[1].unknown], [t for t in todo if t[1].unknown]
    if todo:
        st.caption(f"Keyboard: 1-{min(len(classes), 9)} label the first image as the class in that place, S skips "
                   f"it, N marks it none of these.")
    cards(known, classes, keys=True)
    if new:
        st.markdown("**Unlike every class: candidates for a new class?** The model scores these outside all of "
                    "its classes. Label them if they belong to one; otherwise 'none of these' keeps them out.")
        cards(new, classes, keys=not known)
    if picks and not todo:
        st.success("Every suggestion answered. Train again, or suggest more.")
    mode = st.radio("Pseudo-labels", ["auto", "on", "off"], horizontal=True, key="label_pseudo",
                    help="Also train on the pool images the model labels at >= 90% confidence. auto: only when the "
                         "run is at least 60% accurate (below that they did not help in the label-savings bench).")
    pseudo = pseudo_labels(snap.result or [], set(answers)) if use_pseudo_labels(
        mode, run.read_summary().val_accuracy) else {}
    st.caption(f"{len(pseudo)} pseudo-labeled pool image(s) will join them." if pseudo else "No pseudo-labels.")
    if st.button(f"Train again with {len(labeled)} new label(s)", key="train_again", type="primary",
                 disabled=not labeled):
        ss["label_train_request"] = (labeled, pseudo)
        st.rerun(scope="app")  # this draws inside the job view's fragment: switching pages is the whole app's


job_view(ss.get(job_key), grid, key="suggest_job", name="Suggestions")
if request := ss.pop("label_train_request", None):
    train_again(*request)
