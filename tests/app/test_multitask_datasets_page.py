"""The Data page's multi-task datasets: the chosen dataset is the first task, more are added from a server folder
or an uploaded zip, each task's classes and counts are shown, and a new main dataset replaces the first task."""

import io
import zipfile

from tests.app import test_pages
from tests.conftest import make_image

app = test_pages.app  # the same fixture: a fresh app in a temporary workspace


def test_datasets_as_tasks_from_a_folder_and_a_zip(app, tmp_path):
    hue, light = tmp_path / "hue", tmp_path / "light"
    for c, rgb in (("red", (220, 40, 40)), ("blue", (40, 60, 220))):
        for i in range(6):
            make_image(hue / c / f"{c}{i}.png", rgb, seed=i)
    for i, src in enumerate(sorted(hue.rglob("*.png"))):  # the same photos, labeled again
        (light / ("bright" if i % 2 else "dark")).mkdir(parents=True, exist_ok=True)
        (light / ("bright" if i % 2 else "dark") / src.name).write_bytes(src.read_bytes())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, src in enumerate(sorted(hue.rglob("*.png"))[:8]):
            zf.write(src, f"size/{'big' if i % 2 else 'small'}/{i}.png")

    app.text_input(key="server_path").set_value(str(hue))
    app.button(key="use_server").click().run()
    app.text_input(key="first_task_name").set_value("species")
    app.text_input(key="task_path").set_value(str(light))
    app.button(key="add_task").click().run()
    assert not app.exception and not app.error
    assert app.session_state["cfg"]["tasks"] == f"species={hue},light={light}"
    assert app.session_state["cfg"]["data"] == str(hue)
    table = app.dataframe[0].value
    assert set(table["task"]) == {"species", "light"} and set(table["class"]) == {"red", "blue", "bright", "dark"}
    assert any("12 image(s) are in more than one dataset" in c.value for c in app.caption)

    app.file_uploader(key="task_zip_up").set_value(("my size.zip", buf.getvalue(), "application/zip")).run()
    assert "task name 'my size'" in app.error[0].value  # named after the zip by default: not a valid name
    app.text_input(key="task_name").set_value("size").run()  # the upload is tried again with the name
    assert not app.exception and not app.error
    tasks = app.session_state["cfg"]["tasks"]
    assert tasks.startswith(f"species={hue},light={light},size=") and tasks.endswith(".zip")
    assert set(app.dataframe[0].value["task"]) == {"species", "light", "size"}

    app.text_input(key="task_name").set_value("")
    app.text_input(key="task_path").set_value(str(tmp_path / "nope"))
    app.button(key="add_task").click().run()
    assert "Task 'nope'" in app.error[0].value and "does not exist" in app.error[0].value
    assert app.session_state["cfg"]["tasks"] == tasks  # unchanged

    app.button(key="clear_labels").click().run()
    assert not app.exception and app.session_state["cfg"]["tasks"] == ""
    assert app.session_state["cfg"]["data"] == str(hue)
