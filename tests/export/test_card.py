"""The run record and the model card: what a run was trained on (hashes), with what, and what it is good for."""

import json
from pathlib import Path

from core.config import TrainConfig
from core.data.dataset import open_dataset
from core.export.artifacts import export_run
from core.export.record import content_hash, dataset_files, read_record


def test_record_names_every_file_with_its_hash_and_the_environment(trained_run):
    record = read_record(trained_run.path)
    assert record == read_record(trained_run.bundle_dir)  # travels with the bundle
    files = record["dataset"]["files"]
    assert {len(files["train"]), len(files["val"])} == {18, 6}
    assert all(len(f["hash"]) == 32 and not f["path"].startswith("/") for f in files["train"] + files["val"])
    assert record["dataset"]["content_hash"] == content_hash(files)
    assert record["split"]["seed"] == 0 and record["config"]["data"] == "colors"
    assert record["environment"]["libraries"]["torch"].startswith("2.")
    assert record["environment"]["code_version"]
    assert record["metrics"]["val"]["num"] == 6
    assert [p["step"] for p in record["provenance"]] == ["initialised", "fine-tuned"]
    data = Path(TrainConfig.load(trained_run.config).data)
    assert str(data.parent) not in json.dumps(record)  # names, never locates, the server's data


def test_content_hash_changes_when_one_image_changes(tiny_folder):
    ds = open_dataset(tiny_folder)
    before = content_hash({s: dataset_files(ds, s) for s in ("train", "val")})
    img = sorted(tiny_folder.rglob("*.png"))[0]
    img.write_bytes(img.read_bytes() + b"\0")
    after = content_hash({s: dataset_files(ds, s) for s in ("train", "val")})
    assert before != after


def test_card_names_dataset_hash_versions_limits_and_export_checks(run_copy):
    run = run_copy  # the export below rewrites the card
    record = read_record(run.path)
    card = (run.bundle_dir / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: timm")
    assert record["dataset"]["content_hash"] in card
    assert f"torch {record['environment']['libraries']['torch']}" in card
    assert f"timm {record['environment']['libraries']['timm']}" in card
    assert "Trained on 18 images: 6 to 6 per class" in card
    assert "Few training images for blue, green, red" in card
    assert "No separate test split" in card
    assert "## Exports" not in card

    export_run(run, "onnx")
    card = (run.bundle_dir / "README.md").read_text()
    assert "| onnx | `model.onnx` |" in card and "| passed |" in card
    assert 'session.run(None, {"input0"' in card
