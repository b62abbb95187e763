"""`python -m core inspect RUN`: every report written under the run folder, from the run folder alone."""

import json
from pathlib import Path

from PIL import Image

from core.analysis.inspect import read_report
from core.cli import main


def test_inspect_writes_every_report(run_copy, capsys):
    run = run_copy  # inspect writes its reports into the run folder
    assert main(["inspect", str(run.path), "--saliency", "3"]) == 0
    out = capsys.readouterr().out
    assert "calibration: T =" in out and "validation image(s) have a copy in train" in out

    folder = run.path / "inspect"
    index = json.loads((folder / "report.json").read_text())
    assert set(index["reports"]) >= {"calibration", "reliability", "top_losses_val", "top_losses_train",
                                     "mislabels", "duplicates", "saliency", "embedding"}
    assert Image.open(folder / "reliability.png").size[0] > 300
    summary = run.read_summary()

    losses = read_report(run, "top_losses_val.json")
    assert len(losses) == summary.val.num
    assert losses == sorted(losses, key=lambda r: -r["loss"])
    assert len(read_report(run, "top_losses_train.json")) == summary.num_train
    assert len(read_report(run, "mislabels.json")) == summary.num_train

    saliency = read_report(run, "saliency.json")
    assert len(saliency) == 3 and saliency[0]["path"] == losses[0]["path"]
    heat = Image.open(folder / saliency[0]["png"])
    assert heat.size == (64, 64) and heat.mode == "RGB"

    points = read_report(run, "embedding.json")
    assert {p["split"] for p in points} == {"val", "train"}
    assert len(points) == summary.val.num + summary.num_train
    assert all(set(p) >= {"x", "y", "path", "true", "predicted", "correct"} for p in points)


def test_inspect_of_a_folder_that_is_no_run_is_one_sentence(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is not a run folder" in err and "Traceback" not in err


def test_inspect_of_a_run_trained_on_a_zip_reads_the_unpacked_images(tiny_folder, tmp_path, capsys):
    """A zip's images are named relative to where it was unpacked, not to the zip: every report (the saliency
    maps read the image files themselves) finds them."""
    import shutil

    from core.engine.train import train
    from core.runs import RunDir
    from tests.conftest import tiny_train_config

    archive = shutil.make_archive(str(tmp_path / "colors"), "zip", tiny_folder.parent, tiny_folder.name)
    cfg = tiny_train_config(tiny_folder, tmp_path / "runs").replace(data=archive, freeze="probe")
    run = RunDir(Path(train(cfg).run_dir))
    assert main(["inspect", str(run.path), "--saliency", "2"]) == 0
    assert len(read_report(run, "saliency.json")) == 2
    assert len(read_report(run, "mislabels.json")) == run.read_summary().num_train
