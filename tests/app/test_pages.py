"""Every page under Streamlit's AppTest: real core, real (tiny) training, no browser."""

import io
import json
import zipfile
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.config import TrainConfig
from tests.conftest import COLORS, copy_run, make_image, tiny_train_config, wait_for_jobs, write_leaky

APP = "../../app.py"  # AppTest resolves this against this test file's folder


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("TRANSFERLAB_DATA_ROOTS", str(tmp_path))  # the tests' generated image folders
    st.cache_resource.clear()  # the job registry is process-global
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception
    return at


def zip_of(folder):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(folder.rglob("*.png")):
            zf.write(p, f"colors/{p.relative_to(folder)}")
    return buf.getvalue()


def tiny_cfg(app, data):
    return TrainConfig(data=str(data), backbone="test_efficientnet", weights="random", img_size=64, epochs=3,
                       batch_size=4, freeze="full", early_stopping=0,
                       output_dir=app.session_state["cfg"]["output_dir"]).to_dict()


def test_data_page_zip_upload_shows_summary(app, tiny_folder):
    app.file_uploader(key="zip_up").set_value(("colors.zip", zip_of(tiny_folder), "application/zip")).run()
    assert not app.exception and not app.error
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Classes"] == "3" and metrics["train images"] == "18" and metrics["val images"] == "6"
    spec = json.loads(app.get("plotly_chart")[0].proto.spec)
    assert [t["name"] for t in spec["data"]] == ["train", "val"]


def test_data_page_bad_zip_is_a_sentence(app):
    app.file_uploader(key="zip_up").set_value(("data.zip", b"this is not a zip", "application/zip")).run()
    assert not app.exception
    assert "not a valid zip archive" in app.error[0].value


def test_sample_data_button(app):
    app.button(key="use_sample").click().run()
    assert not app.exception
    assert {m.label: m.value for m in app.metric}["Classes"] == "2"


def test_model_page_shows_parameter_counts(app):
    app.switch_page("pages/model.py").run()
    assert not app.exception
    assert app.radio(key="w_freeze").value == "auto"  # the default: chosen from the data
    app.radio(key="w_freeze").set_value("probe").run()
    assert app.session_state["cfg"]["freeze"] == "probe"
    assert any("2,562 of 3,373,570 parameters train" in c.value for c in app.caption)


def test_train_results_export_predict(app, tiny_folder):
    app.session_state["cfg"] = tiny_cfg(app, tiny_folder)
    app.switch_page("pages/train.py").run()
    app.button(key="start").click().run()
    wait_for_jobs(app)
    assert not app.exception
    assert any("Training completed" in s.value for s in app.success)
    charts = {json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec)
              for c in app.get("plotly_chart")}
    assert len(charts["Loss"]["data"][0]["y"]) == 3  # one point per epoch
    assert app.query_params["run"] == app.session_state["run_id"]

    app.switch_page("pages/results.py").run()
    assert not app.exception
    assert {"Accuracy", "Balanced accuracy", "Macro F1"} <= {m.label for m in app.metric}

    app.switch_page("pages/export.py").run()
    assert not app.exception
    assert app.get("download_button")

    app.switch_page("pages/predict.py").run()
    img = make_image(tiny_folder.parent / "query.png", COLORS["red"])
    app.file_uploader(key="predict_up").set_value([("query.png", img.read_bytes(), "image/png")]).run()
    assert not app.exception
    assert any("query.png" in m.value for m in app.markdown)


def test_data_page_folder_upload_and_unsafe_names(app, tiny_folder):
    files = [(f"colors/{p.relative_to(tiny_folder)}", p.read_bytes(), "image/png")
             for p in sorted(tiny_folder.rglob("*.png"))]
    app.file_uploader(key="dir_up").set_value(files).run()
    assert not app.exception and not app.error
    assert {m.label: m.value for m in app.metric}["Classes"] == "3"
    evil = files[:3] + [("colors/../../escape/red/x.png", files[0][1], "image/png")]
    app.file_uploader(key="dir_up").set_value(evil).run()
    assert "is not a plain relative path; refused" in app.error[0].value
    assert not (tiny_folder.parent.parent / "escape").exists()


def test_a_new_session_reattaches_to_a_run_by_url(app, tiny_folder):
    app.session_state["cfg"] = tiny_cfg(app, tiny_folder)
    app.switch_page("pages/train.py").run()
    app.button(key="start").click().run()
    run_id = app.session_state["run_id"]
    fresh = AppTest.from_file(APP, default_timeout=60)
    fresh.query_params["run"] = run_id  # a reopened tab: new session, no dataset chosen, only the URL
    fresh.run()
    fresh.switch_page("pages/train.py").run()
    wait_for_jobs(fresh)
    assert not fresh.exception
    assert any("Training completed" in s.value for s in fresh.success)
    assert fresh.get("plotly_chart")


def test_uploaded_config_pointing_outside_the_allowed_roots_is_refused(app, tiny_folder):
    app.switch_page("pages/model.py").run()
    before = dict(app.session_state["cfg"])
    evil = TrainConfig(data="/etc", backbone="test_efficientnet", weights="random").to_yaml()
    app.file_uploader(key="cfg_up").set_value(("evil.yaml", evil.encode(), "application/x-yaml")).run()
    assert not app.exception
    assert any("evil.yaml was not loaded: The dataset /etc is outside the folders this server may read" in e.value
               for e in app.error)
    assert app.session_state["cfg"] == before  # nothing of it was taken
    fine = TrainConfig(data=str(tiny_folder), backbone="test_efficientnet", weights="random", epochs=2).to_yaml()
    app.file_uploader(key="cfg_up").set_value(("fine.yaml", fine.encode(), "application/x-yaml")).run()
    assert not app.exception and app.session_state["cfg"]["data"] == str(tiny_folder)
    assert app.session_state["cfg"]["epochs"] == 2


def test_start_refuses_a_config_outside_the_allowed_roots(app, tmp_path):
    """Whatever route put it in the session (an older upload, a hand-edited state), Start goes through the
    registry's guard: a sentence, and no job and no run folder."""
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    (outside / "a").mkdir(parents=True)
    (outside / "b").mkdir()
    app.session_state["cfg"] = {**tiny_cfg(app, outside)}
    app.switch_page("pages/train.py").run()
    app.button(key="start").click().run()
    assert not app.exception
    assert any("is outside the folders this server may read" in e.value for e in app.error)
    assert app.session_state["run_id"] is None
    runs = tmp_path / "ws" / "runs"
    assert not runs.exists() or not [p for p in runs.iterdir() if not p.name.startswith("_")]


def test_inspect_page_calibration_losses_saliency_and_the_analyses_job(app, session_run, tmp_path):
    run_id = copy_run(session_run, tmp_path / "ws" / "runs", tmp_path / "run-data").run_id
    app.session_state["run_id"] = run_id
    app.switch_page("pages/inspect.py").run()
    assert not app.exception
    labels = {m.label for m in app.metric}
    assert {"ECE before", "ECE after", "Temperature", "Validation images used"} <= labels
    titles = {json.loads(c.proto.spec)["layout"]["title"]["text"] for c in app.get("plotly_chart")}
    assert "Reliability diagram (validation)" in titles and "Unknown score" in titles  # its histogram
    assert any("closest to the threshold" in c.value for c in app.caption)
    assert any("highest loss first" in c.value for c in app.caption)
    assert any("Grad-CAM for" in str(i.proto) for i in app.get("image"))  # the saliency overlay is drawn

    app.selectbox(key="loss_true").set_value("red").run()  # a confusion-cell style filter
    assert not app.exception
    app.button(key="job_mislabels").click().run()
    wait_for_jobs(app)
    assert not app.exception
    assert any("flagged by confident learning" in c.value for c in app.caption)
    titles = {json.loads(c.proto.spec)["layout"]["title"]["text"] for c in app.get("plotly_chart")}
    assert "Embedding map (t-SNE), coloured by true class" in titles


def test_inspect_page_scores_a_folder_of_other_images_against_the_threshold(app, session_run, tmp_path):
    """Unknown inputs tab: a server folder of other images is scored as a job; their histogram joins the validation
    images' and a caption gives the share the model would call "none of these"."""
    run_id = copy_run(session_run, tmp_path / "ws" / "runs", tmp_path / "run-data").run_id
    for i, color in enumerate([(128, 128, 128), (230, 220, 30), (150, 30, 160)]):
        make_image(tmp_path / "others" / f"other_{i}.png", color, size=80, seed=100 + i)
    app.session_state["run_id"] = run_id
    app.switch_page("pages/inspect.py").run()
    app.text_input(key="unknown_other_path").set_value(str(tmp_path / "others")).run()
    app.button(key="unknown_other_go").click().run()
    wait_for_jobs(app)
    assert not app.exception and not app.error
    assert any("of the 3 images in" in c.value for c in app.caption)
    hist = [json.loads(c.proto.spec) for c in app.get("plotly_chart")
            if json.loads(c.proto.spec)["layout"]["title"]["text"] == "Unknown score"]
    assert any(t.get("name") == "your other images" for t in hist[0]["data"])


def open_leaky_dataset(app, tmp_path):
    """train/ and val/ of colour images with one train image copied into val, opened and searched for duplicates."""
    root = write_leaky(tmp_path / "leaky")
    app.text_input(key="server_path").set_value(str(root)).run()
    app.button(key="use_server").click().run()
    app.button(key="find_dups").click().run()
    return root


def test_data_page_finds_a_planted_duplicate_across_splits(app, tmp_path):
    open_leaky_dataset(app, tmp_path)
    assert not app.exception
    assert any("1 validation image(s) have a copy in train" in w.value for w in app.warning)


def test_results_page_warns_of_a_validation_copy_of_a_training_image(app, tmp_path):
    """The run's end finds the leak from the fingerprints its own decoding gathered; the Results page says so."""
    from core.engine.train import train
    cfg = tiny_train_config(write_leaky(tmp_path / "leaky"), Path(app.session_state["cfg"]["output_dir"]))
    app.session_state["run_id"] = Path(train(cfg.replace(freeze="probe", epochs=1)).run_dir).name
    app.switch_page("pages/results.py").run()
    assert not app.exception
    assert any(w.value.startswith("Leakage: 1 validation and 0 test image(s) have a copy") for w in app.warning)


@pytest.mark.slow  # several processes or real backbones: make test runs it, test-fast does not
@pytest.mark.usefixtures("quick_estimate")  # the estimate's own tests are in tests/plan
def test_model_page_advises_from_the_data(app, tiny_folder):
    """Auto: 'Advise me' runs the advisor as a job and shows the ranking, the settings and why."""
    app.session_state["cfg"] = {**app.session_state["cfg"], "data": str(tiny_folder)}
    app.switch_page("pages/model.py").run()
    app.button(key="advise").click().run()
    wait_for_jobs(app)
    assert not app.exception
    assert any("Auto would train: a **probe**, then **partial** fine-tuning" in s.value for s in app.success)
    assert any("5-fold cross-validation" in m.value for m in app.markdown)
    assert len(app.dataframe[-1].value) == 3  # the three offline backbones, ranked


def derived_counts(app, tmp_path) -> dict:
    """The counts of the dataset the session now uses, which must be a derived folder inside the workspace."""
    from pathlib import Path

    from core.data.dataset import open_dataset
    data = Path(app.session_state["cfg"]["data"])
    assert data.parent == tmp_path / "ws" / "uploads" and data.name.startswith("derived-"), data
    return open_dataset(data, val_fraction=0.5, seed=1).counts()  # a derived folder keeps its split whatever these


def test_data_page_drops_duplicates_from_validation(app, tmp_path):
    root = open_leaky_dataset(app, tmp_path)
    app.button(key="drop_dups").click().run()
    assert not app.exception and not app.error
    counts = derived_counts(app, tmp_path)
    assert counts["val"] == {"blue": 3, "green": 3, "red": 3} and counts["train"] == {"blue": 3, "green": 3, "red": 3}
    assert (root / "val" / "red" / "copy.png").exists()  # the user's folder is left as it was
    assert any("without the 1 validation image(s)" in s.value for s in app.success)


def test_inspect_page_excludes_and_relabels_mislabel_suspects(app, session_run, tmp_path):
    from core.analysis.inspect import inspect_run, read_report
    from core.data.dataset import open_dataset
    run = copy_run(session_run, tmp_path / "ws" / "runs", tmp_path / "run-data")
    cfg = TrainConfig.load(run.config)
    inspect_run(run, saliency_images=0)  # what the page's analyses job writes
    dropped, moved = read_report(run, "mislabels.json")[:2]
    new_class = next(c for c in COLORS if c != moved["given"])
    app.session_state["run_id"] = run.run_id
    app.switch_page("pages/inspect.py").run()
    app.checkbox(key=f"mis_ex_{run.run_id}:{dropped['path']}").check().run()
    app.selectbox(key=f"mis_re_{run.run_id}:{moved['path']}").set_value(new_class).run()
    app.button(key="use_edited").click().run()
    assert not app.exception and not app.error
    expected = open_dataset(cfg.data, cfg.val_fraction, cfg.seed).counts()
    expected["train"][dropped["given"]] -= 1
    expected["train"][moved["given"]] -= 1
    expected["train"][new_class] += 1
    assert derived_counts(app, tmp_path) == expected
    assert any("edited dataset" in s.value for s in app.success)  # shown on the Data page, with a link to Train


def test_model_page_starts_from_a_finished_run(app, tiny_folder, session_run, tmp_path):
    """'finished run' beside bundled / hub / file: a run from the history sets init_from and its backbone."""
    run = copy_run(session_run, tmp_path / "ws" / "runs", tmp_path / "run-data").path
    app.switch_page("pages/model.py").run()
    app.radio(key="w_weights_source").set_value("finished run").run()
    app.selectbox(key="w_init_run").set_value(str(run)).run()
    assert not app.exception and not app.error
    cfg = app.session_state["cfg"]
    assert cfg["init_from"] == str(run) and cfg["backbone"] == "test_efficientnet"
    assert any(f"from run {run.name}" in c.value and "Lineage: random initialisation" in c.value
               for c in app.caption)
    app.text_input(key="w_init_path").input(str(tiny_folder)).run()  # a path that is no run: a sentence
    assert "neither a run folder nor a model bundle" in app.error[0].value
    app.text_input(key="w_init_path").input("").run()
    app.radio(key="w_weights_source").set_value("hub").run()  # back to pretrained weights
    assert app.session_state["cfg"]["init_from"] == "" and not app.error


def test_adapt_page_unlabeled_folder_job_and_before_after_probe(app, tiny_folder, tmp_path):
    """The Adapt page: a server folder of unlabeled images (checked against the allowed roots), an adaptation
    job, and its before/after probe accuracy; then 'Train from these weights' sets the config."""
    pool = tmp_path / "pool"
    for i in range(4):
        make_image(pool / f"u{i}.png", (90, 90, 200), seed=50 + i)
    app.session_state["cfg"] = {**tiny_cfg(app, tiny_folder), "adapt_epochs": 1, "adapt_from": "random"}
    app.switch_page("pages/adapt.py").run()
    app.text_input(key="unlabeled_path").set_value("/etc").run()
    app.button(key="use_unlabeled").click().run()
    assert any("outside the folders this server may read" in e.value for e in app.error)
    app.text_input(key="unlabeled_path").set_value(str(pool)).run()
    app.button(key="use_unlabeled").click().run()
    assert not app.exception and app.session_state["cfg"]["unlabeled"] == str(pool)
    assert any("4 unlabeled images found" in s.value for s in app.success)
    app.selectbox(key="adapt_objective_pick").set_value("reconstruct").run()
    app.button(key="adapt_start").click().run()
    wait_for_jobs(app)  # then the job's own view shows its result ("Earlier adaptations" lists the same metrics)
    assert not app.exception and not app.error
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Probe accuracy before"].endswith("%") and metrics["After adapting"].endswith("%")
    app.button(key="use_job").click().run()
    assert app.session_state["cfg"]["weights"].endswith("adapted.safetensors")


def test_distil_page_queues_student_baseline_and_table(app, tiny_folder):
    from core.engine.train import train
    cfg = TrainConfig.from_dict({**tiny_cfg(app, tiny_folder), "freeze": "probe", "epochs": 2})
    teacher = train(cfg)
    app.session_state["cfg"] = cfg.to_dict()
    app.switch_page("pages/distill.py").run()
    assert not app.exception
    app.multiselect(key="distill_teachers").set_value([Path(teacher.run_dir).name]).run()
    assert app.selectbox(key="distill_student").value == "test_efficientnet"  # the Model page's backbone
    app.button(key="distill_start").click().run()
    assert not app.exception and not app.error
    wait_for_jobs(app)  # the student, its baseline and the table: queued together
    assert not app.error  # a job's failure: its error
    texts = [p.proto.text for p in app.get("progress")]
    assert any(t.startswith("student: completed") for t in texts), texts
    assert any(t.startswith("baseline: completed") for t in texts), texts
    assert any(t.startswith("table: completed") for t in texts), texts
    app.run()
    table = app.dataframe[0].value
    assert list(table["role"]) == ["teacher", "student (distilled)", "student (labels only)"]


def test_label_page_pool_suggestions_skip_none_and_train_again(app, session_run, tmp_path):
    from core.data.derived import labeling_of
    run = copy_run(session_run, tmp_path / "ws" / "runs", tmp_path / "run-data")
    pool = tmp_path / "pool"
    for name, color in COLORS.items():
        make_image(pool / f"{name}_new.png", color, seed=50)
    app.session_state["run_id"] = run.run_id
    app.switch_page("pages/label.py").run()
    app.text_input(key="pool_path").set_value(str(pool)).run()
    app.button(key="use_pool").click().run()
    app.button(key="suggest").click().run()
    wait_for_jobs(app)
    assert not app.exception
    app.button(key="none_0").click().run()
    app.button(key="skip_1").click().run()
    app.button(key="lab_2_0").click().run()
    assert any("3 suggested · 1 labeled · 1 skipped · 1 none of these" in c.value for c in app.caption)
    app.button(key="train_again").click().run()
    assert not app.exception and not app.error
    new_run = app.session_state["run_id"]
    assert new_run != run.run_id and app.query_params["run"] == new_run
    data = app.session_state["cfg"]["data"]
    assert labeling_of(data) == {"round": 1, "labels": 1, "total": 1, "run": run.run_id, "pseudo": 0}  # all answered
    from core.runs import RunDir
    new = RunDir(tmp_path / "ws" / "runs" / new_run)
    wait_for_jobs(app)  # the new run trains on the derived dataset
    assert new.read_status()["status"] == "completed", new.read_status()
    app.switch_page("pages/results.py").run()  # its lineage names the labeling round
    assert any(f"run {new_run} on derived-" in c.value and "(1 label from suggestions, labeling round 1" in c.value
               for c in app.caption)
