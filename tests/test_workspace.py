"""The server's policy lives in core and is checked where a job is submitted: every route to a run reads only
from allowed folders, uploads never overwrite each other, and nothing that leaves the server names its paths."""

import json
import os
from pathlib import Path

import pytest

from core.config import TrainConfig
from core.errors import AccessError
from core.jobs import JobRegistry
from core.workspace import Workspace


@pytest.fixture
def ws(tmp_path):
    (tmp_path / "allowed").mkdir()
    return Workspace(tmp_path / "ws", (tmp_path / "allowed",))


def test_config_reading_outside_the_allowed_roots_is_refused(ws, tmp_path, tiny_folder):
    inside = ws.data_roots[0] / "set"
    inside.mkdir()
    ok = TrainConfig(data=str(inside), output_dir=str(ws.runs_dir))
    ws.check_config(ok)
    with pytest.raises(AccessError, match=r"The dataset /etc is outside the folders this server may read"):
        ws.check_config(ok.replace(data="/etc"))
    with pytest.raises(AccessError, match="The weights file .*passwd.pth is outside"):
        ws.check_config(ok.replace(weights="/etc/passwd.pth"))
    with pytest.raises(AccessError, match="output folder /tmp/elsewhere is outside this server's workspace"):
        ws.check_config(ok.replace(output_dir="/tmp/elsewhere"))
    # '..' and symbolic links are resolved before the check
    with pytest.raises(AccessError):
        ws.check_config(ok.replace(data=str(inside / ".." / ".." / "ws" / ".." / "..")))
    (ws.data_roots[0] / "link").symlink_to(tiny_folder)
    with pytest.raises(AccessError):
        ws.check_config(ok.replace(data=str(ws.data_roots[0] / "link")))


def test_registry_with_a_guard_queues_nothing_it_refuses(ws, tiny_config):
    reg = JobRegistry(output_dir=str(ws.runs_dir), guard=ws.check_config)
    cfg = tiny_config.replace(output_dir=str(ws.runs_dir))  # tiny_folder lies outside the allowed roots
    with pytest.raises(AccessError, match="The dataset .* is outside"):
        reg.submit(cfg)
    assert reg.jobs() == [] and not ws.runs_dir.exists()  # no job, no run folder


def test_uploads_are_stored_by_content_never_overwritten(ws):
    a = ws.store_upload(b"weights one", "model.pth", "weights")
    b = ws.store_upload(b"weights two", "model.pth", "weights")  # the same browser file name
    assert a != b and a.read_bytes() == b"weights one" and b.read_bytes() == b"weights two"
    assert ws.store_upload(b"weights one", "other-name.pth", "weights") == a and a.suffix == ".pth"


def test_nothing_that_leaves_the_server_names_its_paths(tiny_config, tmp_path):
    """The bundle (config.yaml, summary.json, model card), the run's summary.json and dataset.json hold no absolute
    path; files are relative to the dataset root and the dataset is named by its folder."""
    from core.engine.train import train
    from core.runs import RunDir
    (tiny_config_folder := Path(tiny_config.data)).joinpath("red", "notes.txt").write_text("not an image")
    result = train(tiny_config.replace(freeze="probe", epochs=1))
    run = Path(result.run_dir)
    secret = str(tmp_path)
    for f in [*(run / "bundle").iterdir(), run / "summary.json", run / "dataset.json"]:
        if f.suffix in (".json", ".yaml", ".md"):
            assert secret not in f.read_text(), f"{f.name} reveals {secret}"
    bundle_cfg = TrainConfig.load(run / "bundle" / "config.yaml")
    assert bundle_cfg.data == tiny_config_folder.name and bundle_cfg.output_dir == "runs"
    assert RunDir(run).read_summary().skipped == ["red/notes.txt"]
    assert json.loads((run / "dataset.json").read_text())["root"] == tiny_config_folder.name
    # the run's own config.yaml keeps the real path: resuming on this server needs it, and it never leaves
    assert TrainConfig.load(run / "config.yaml").data == tiny_config.data


def test_workspace_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "w"))
    monkeypatch.setenv("TRANSFERLAB_DATA_ROOTS", os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    ws = Workspace.from_env(Path("ignored"), tmp_path / "sample")
    assert ws.root == (tmp_path / "w").resolve()
    assert ws.allowed_roots() == [(tmp_path / p).resolve() for p in ("sample", "a", "b", "w")]


def test_an_uploaded_config_runs_in_the_workspace_and_is_checked(ws, tmp_path):
    inside = ws.data_roots[0] / "set"
    inside.mkdir()
    text = TrainConfig(data=str(inside), epochs=2, output_dir="/tmp/anywhere").to_yaml()
    cfg = ws.read_config(text, "mine.yaml")
    assert cfg.epochs == 2 and cfg.output_dir == str(ws.runs_dir)  # written where this server writes runs
    with pytest.raises(AccessError, match="The dataset /etc is outside"):
        ws.read_config(TrainConfig(data="/etc").to_yaml(), "evil.yaml")


def test_upload_and_scratch_folders_are_named_in_the_workspace(ws):
    one = ws.upload_folder(["b", "a"])
    assert one == ws.upload_folder(["a", "b"]) != ws.upload_folder(["a", "c"])  # the same upload, the same folder
    assert one.parent == ws.uploads_dir and one.name.startswith("folder-")
    with ws.scratch_folder("predict") as tmp:
        assert Path(tmp).parent == ws.root / "predict" and Path(tmp).is_dir()
    assert not Path(tmp).exists()
