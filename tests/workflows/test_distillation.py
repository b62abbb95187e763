"""The distillation workflow's requests (core/workflows/distillation.py); the runs and the table it makes are tested
through the CLI (tests/engine/test_distill.py) and the Distil page (tests/app/test_pages.py)."""

import pytest

from core.cli import main
from core.config import TrainConfig
from core.errors import ConfigError
from core.workflows.distillation import check_request, open_student


def test_a_new_distillation_needs_data_and_a_teacher(tmp_path):
    with pytest.raises(ConfigError, match="No dataset given"):
        check_request(TrainConfig(teachers=("runs/a",)))
    with pytest.raises(ConfigError, match="No teacher given: pass --teacher"):
        check_request(TrainConfig(data=str(tmp_path)))


def test_resuming_needs_a_distilled_run_folder(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="is not a run folder"):
        open_student(tmp_path)
    TrainConfig(data=str(tmp_path)).save(tmp_path / "config.yaml")
    assert main(["distill", "--resume", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path} is not a distilled run (its config names no "
                                               f"teachers); resume it with `train --resume`.")
