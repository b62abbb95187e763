"""`freeze: auto` resolved in one place (core/workflows/auto.py) for the jobs, `train` and `distill`."""

import pytest

from core.workflows.auto import resolve_auto

pytestmark = pytest.mark.usefixtures("quick_estimate")


def test_a_chosen_freeze_comes_back_as_it_is_with_no_notes(tiny_config):
    resolved = resolve_auto(tiny_config)
    assert resolved.config is tiny_config and resolved.notes == [] and resolved.paragraph == ""


def test_auto_becomes_the_advisors_choice_with_its_reasons_and_progress(tiny_config):
    phases = []
    resolved = resolve_auto(tiny_config.replace(freeze="auto", backbone="tf_efficientnet_lite0", weights="bundled",
                                                img_size=0), progress=lambda *p: phases.append(p))
    assert resolved.config.freeze in ("probe", "partial")
    assert any("cross-validation" in n for n in resolved.notes) and resolved.paragraph == " ".join(resolved.notes)
    assert phases  # the look at the data reports its progress


def test_auto_plans_the_probe_candidate_first():
    from core.config import TrainConfig
    from core.workflows.auto import Resolved
    resolved = Resolved(TrainConfig(freeze="partial"), ["why"], TrainConfig(freeze="probe"))
    assert resolved.probe_first.freeze == "probe" and resolved.paragraph == "why"


def test_fine_tuning_from_the_probe_delivers_the_probe_when_no_epoch_beats_it(tiny_config):
    """LP-FT: the fine-tuning starts from the probe's head and the probe is its first candidate, so a fine-tuning
    that only makes things worse (a learning rate far too large) delivers the probe, and says so with both
    numbers. Early stopping watches the fine-tuning's own epochs, not the probe's score: an epoch worse than the
    probe does not end it (warm-up epochs often are, before later ones pass the probe)."""
    from pathlib import Path

    from core.config import TrainConfig
    from core.runs import RunDir, Status
    from core.workflows.auto import Resolved, train_resolved
    probe_cfg = tiny_config.replace(freeze="probe", epochs=10, lr=3e-3)
    ft_cfg = tiny_config.replace(epochs=2, lr=1.0, backbone_lr_mult=1.0, early_stopping=1)
    phases = []
    result = train_resolved(Resolved(ft_cfg, ["planned"], probe_cfg), progress=lambda *p: phases.append(p))
    assert result.status == Status.COMPLETED and any("probe candidate" in p[0] for p in phases)
    delivered = RunDir(Path(result.run_dir))
    probe_run = Path(TrainConfig.load(delivered.config).init_from)
    assert probe_run.parent == Path(result.run_dir).parent and probe_run != Path(result.run_dir)
    probe = RunDir(probe_run).read_summary()
    s = result.summary
    assert s.val_accuracy >= probe.val_accuracy  # never worse than the probe on validation
    assert s.epochs_run == 2 and s.notes[0] == "planned"  # epoch 1, worse than the probe, did not stop it
    assert s.best_epoch == 0 and s.val_accuracy == probe.val_accuracy
    assert any(n.startswith(f"Delivered the starting point (run {probe_run.name})") and
               f"{probe.val_accuracy:.1%} on validation" in n for n in s.notes)
