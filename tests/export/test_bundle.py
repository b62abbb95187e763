"""load_bundle on zips: the same predictions as the bundle folder, and nothing left behind in the temp folder."""

import tempfile
import zipfile
from pathlib import Path

import pytest

from core.export.bundle import export_zip, load_bundle


@pytest.fixture
def system_temp(tmp_path, monkeypatch) -> Path:
    """An empty folder standing in for the system temp folder (/tmp), so leftovers can be seen."""
    temp = tmp_path / "system-temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return temp


def same_predictions(got: list[list[tuple]], expected: list[list[tuple]]) -> None:
    assert [[c for c, _ in top] for top in got] == [[c for c, _ in top] for top in expected]
    assert [p for top in got for _, p in top] == pytest.approx([p for top in expected for _, p in top], abs=1e-6)


def test_zipped_bundle_predicts_like_its_folder_and_leaves_no_temp_folder(run_copy, tiny_folder, system_temp):
    images = sorted(tiny_folder.rglob("*.png"))[::3]
    expected = load_bundle(run_copy.bundle_dir).predict(images)
    zipped = export_zip(run_copy)

    got = load_bundle(zipped).predict(images)

    assert sorted(system_temp.rglob("*")) == []
    same_predictions(got, expected)


def test_extract_to_keeps_the_callers_folder(run_copy, tiny_folder, system_temp, tmp_path):
    images = sorted(tiny_folder.rglob("*.png"))[:2]
    got = load_bundle(export_zip(run_copy), extract_to=tmp_path / "unzipped").predict(images)

    assert (tmp_path / "unzipped" / run_copy.run_id / "model.safetensors").is_file()
    assert sorted(system_temp.rglob("*")) == []
    same_predictions(got, load_bundle(run_copy.bundle_dir).predict(images))


def test_zip_that_is_not_a_bundle_is_refused_and_leaves_no_temp_folder(tmp_path, system_temp):
    not_a_bundle = tmp_path / "photos.zip"
    with zipfile.ZipFile(not_a_bundle, "w") as zf:
        zf.writestr("photos/readme.txt", "no model here")

    with pytest.raises(ValueError, match="not a TransferLab model bundle"):
        load_bundle(not_a_bundle)
    assert sorted(system_temp.rglob("*")) == []
