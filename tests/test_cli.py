"""The CLI as a user runs it: real files, exit codes and one-sentence errors. One test runs it as a subprocess
(`python -m core`, as a user types it); the others call the same main() in this process, which skips importing
torch again for every command."""

import contextlib
import dataclasses
import io
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.cli import main
from core.config import TrainConfig
from tests.conftest import COLORS, make_image

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, timeout=300):
    """`python -m core ARGS` in a subprocess: returncode, stdout, stderr."""
    return subprocess.run([sys.executable, "-m", "core", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def cli_here(*args):
    """The same command through main() in this process, with the same three results."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def test_train_predict_export(tiny_folder, tmp_path):
    out = tmp_path / "runs"
    p = cli("train", "--data", tiny_folder, "--backbone", "test_efficientnet", "--weights", "random",
            "--img-size", "64", "--epochs", "2", "--freeze", "probe", "--batch-size", "4", "--out", out)
    assert p.returncode == 0, p.stderr
    run_dir = next(line.split(": ", 1)[1] for line in p.stdout.splitlines() if line.startswith("run: "))
    assert "val_accuracy:" in p.stdout
    p = cli_here("predict", Path(run_dir) / "bundle", tiny_folder / "red", "--topk", "2")
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.strip().splitlines()) == 8
    p = cli_here("export", run_dir, "--out", tmp_path)
    assert p.returncode == 0, p.stderr
    assert Path(p.stdout.strip()).is_file() and p.stdout.strip().endswith("-model.zip")


def test_config_file_and_flags(tiny_folder, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"data: {tiny_folder}\nbackbone: test_efficientnet\nweights: random\nimg_size: 64\n"
                   f"epochs: 5\nfreeze: probe\noutput_dir: {tmp_path / 'runs'}\n")
    p = cli_here("train", "--config", cfg, "--epochs", "1", "--quiet")
    assert p.returncode == 0, p.stderr
    run_dir = next(line.split(": ", 1)[1] for line in p.stdout.splitlines() if line.startswith("run: "))
    assert "epochs: 1" in (Path(run_dir) / "config.yaml").read_text()


def test_errors_are_one_sentence_and_exit_2(tmp_path):
    p = cli_here("train", "--data", tmp_path / "nope", "--out", tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip() == f"error: Dataset path {tmp_path / 'nope'} does not exist."
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nlearning_rate: 0.1\n")
    p = cli_here("train", "--config", bad)
    assert p.returncode == 2 and "Unknown config key(s): learning_rate" in p.stderr
    assert "Traceback" not in p.stderr


def test_train_help_lists_every_flag_once_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    options = " ".join(capsys.readouterr().out.split()).split("options:", 1)[1]  # argparse wraps lines
    fields = dataclasses.fields(TrainConfig)
    starts = []
    for f in fields:
        flag = f"--{f.name.replace('_', '-')}"
        hits = [m.start() for m in re.finditer(rf"(?<![\w-]){flag}(?![\w-])", options)]
        assert len(hits) == 1, f"{flag} is listed {len(hits)} times"
        starts.append(hits[0])
    assert starts == sorted(starts)
    for f, start, end in zip(fields, starts, [*starts[1:], len(options)], strict=True):
        entry = options[start:end]
        shown = [] if f.default in ("", ()) else [f"(default: {f.default})"]
        assert re.findall(r"\(default: [^)]*\)", entry) == shown, entry


def test_train_prints_dataset_warnings_even_when_quiet(tmp_path):
    data = tmp_path / "data"
    for name in ("red", "green"):
        for i in range(6):
            make_image(data / name / f"{name}_{i}.png", COLORS[name], seed=i)
    (data / "purple").mkdir()
    (data / "purple" / "notes.txt").write_text("pictures still to come")
    p = cli_here("train", "--data", data, "--backbone", "test_efficientnet", "--weights", "random", "--img-size", "64",
            "--epochs", "1", "--freeze", "probe", "--out", tmp_path / "runs", "--quiet")
    assert "warning: Class folder 'purple' holds no usable images and is left out." in p.stderr
    assert "purple/notes.txt: not an image file type (.txt)" in p.stderr
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("freeze", ["probe", "full"])
def test_train_on_images_that_all_fail_to_decode_exits_with_one_sentence(tmp_path, freeze):
    data = tmp_path / "cut"
    for name, color in COLORS.items():
        for i in range(5):
            whole = make_image(tmp_path / "src" / f"{name}{i}.jpg", color, size=64, seed=i).read_bytes()
            (data / name).mkdir(parents=True, exist_ok=True)
            (data / name / f"{name}{i}.jpg").write_bytes(whole[:len(whole) // 2])  # header intact, pixels cut
    p = cli_here("train", "--data", data, "--backbone", "test_efficientnet", "--weights", "random", "--img-size", "64",
            "--epochs", "1", "--freeze", freeze, "--out", tmp_path / "runs", "--quiet")
    assert p.returncode == 2, p.stdout
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(r"None of the \d+ (training|validation) images could be decoded", errors[0])
    assert "Traceback" not in p.stderr
