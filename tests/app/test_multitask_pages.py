"""The multi-task path through the app under AppTest: a labels file on the Data page, a run on the Train page with
per-task curves, per-task metrics on Results, a bundle per task on Export."""

import json

from tests.app import test_pages
from tests.app.test_pages import tiny_cfg
from tests.conftest import make_image, wait_for_jobs

app = test_pages.app  # the same fixture: a fresh app in a temporary workspace


def test_labels_file_run_results_and_export(app, tmp_path):
    root = tmp_path / "shots"
    lines = ["path,hue,light"]
    for hue, rgb in (("red", (220, 40, 40)), ("blue", (40, 60, 220))):
        for light, scale in (("bright", 1.0), ("dark", 0.35)):
            for i in range(4):
                make_image(root / f"{hue}_{light}_{i}.png", tuple(int(c * scale) for c in rgb), seed=i)
                lines.append(f"{hue}_{light}_{i}.png,{hue},{'' if i == 0 else light}")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(lines) + "\n")

    app.text_input(key="labels_path").set_value(str(labels))
    app.button(key="use_labels").click().run()
    app.text_input(key="server_path").set_value(str(root))  # a flat folder: no class folders needed
    app.button(key="use_server").click().run()
    assert not app.exception and not app.error
    assert app.session_state["cfg"]["tasks"] == str(labels)
    task_table = app.dataframe[0].value
    assert set(task_table["task"]) == {"hue", "light"}

    app.session_state["cfg"] = {**tiny_cfg(app, root), "tasks": str(labels)}
    app.switch_page("pages/train.py").run()
    app.button(key="start").click().run()
    wait_for_jobs(app)
    assert not app.exception
    done = next(s.value for s in app.success if "Training completed" in s.value)
    assert "hue" in done and "light" in done
    titles = {json.loads(c.proto.spec)["layout"]["title"]["text"] for c in app.get("plotly_chart")}
    assert {"Accuracy per task", "Loss per task"} <= titles

    app.switch_page("pages/results.py").run()
    assert not app.exception
    assert app.radio(key="res_task").options == ["hue", "light"]
    app.radio(key="res_task").set_value("light").run()
    assert not app.exception

    app.switch_page("pages/export.py").run()
    assert not app.exception
    labels_of = [b.label for b in app.get("download_button")]
    assert "Bundle of task 'hue' (.zip)" in labels_of and "All tasks in one model (TorchScript)" in labels_of

    # every task is a run of its own in the pickers: Results, Inspect, Predict and Export serve it
    run_id = app.session_state["run_id"]
    assert f"{run_id} · task light" in " ".join(app.selectbox(key="run_pick").options)
    assert any(b.key == "make_onnx" for b in app.button)  # the multi-output ONNX, made and checked as a job
    app.selectbox(key="run_pick").set_value(f"{run_id}-light").run()
    assert not app.exception
    assert "Bundle of task 'hue' (.zip)" not in [b.label for b in app.get("download_button")]
    assert "Download model bundle (.zip)" in [b.label for b in app.get("download_button")]
    app.switch_page("pages/results.py").run()
    assert not app.exception and app.selectbox(key="run_pick").value == f"{run_id}-light"  # the task stays picked
    assert "Accuracy" in {m.label for m in app.metric}
    app.switch_page("pages/inspect.py").run()
    assert not app.exception and app.selectbox(key="inspect_run").value == f"{run_id}-light"
    assert {"ECE before", "Temperature"} <= {m.label for m in app.metric}
    app.switch_page("pages/predict.py").run()
    query = make_image(tmp_path / "query.png", (220, 40, 40))
    app.file_uploader(key="predict_up").set_value([("query.png", query.read_bytes(), "image/png")]).run()
    assert not app.exception
    assert any("query.png" in m.value and ("bright" in m.value or "dark" in m.value) for m in app.markdown)
