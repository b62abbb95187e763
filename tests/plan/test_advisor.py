"""Before training: ranking the offline backbones, `freeze: auto`, the time budget, and the `plan` command."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.cli import main
from core.config import TrainConfig, field_meta
from core.data.dataset import open_dataset
from core.errors import ConfigError
from core.models.backbones import OFFLINE
from core.plan.advisor import FT_EPOCHS, FT_PATIENCE, PROBE_EPOCHS, PROBE_LR, advise
from core.runs import RunDir

pytestmark = pytest.mark.usefixtures("quick_estimate")


@pytest.fixture
def noise_folder(tmp_path):
    """Two classes of pure noise, 128 px: no pretrained feature separates them, so a probe cannot succeed."""
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        for i in range(12):
            (tmp_path / "noise" / c).mkdir(parents=True, exist_ok=True)
            noise = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
            Image.fromarray(noise).save(tmp_path / "noise" / c / f"{i}.png")
    return tmp_path / "noise"


def test_auto_plans_a_probe_then_fine_tuning_from_it_upsampling_small_images(tiny_folder):
    advice = advise(TrainConfig(data=str(tiny_folder)), open_dataset(tiny_folder))
    assert advice.config.freeze == "partial" and (advice.config.epochs, advice.config.early_stopping) == \
        (FT_EPOCHS, FT_PATIENCE)
    probe = advice.probe_first
    assert probe.freeze == "probe" and (probe.epochs, probe.lr) == (PROBE_EPOCHS, PROBE_LR)
    assert probe.img_size == advice.config.img_size == 0  # the backbone's own 224 px: small images are upsampled
    assert "small (median shorter side 48 px): upsampled to the backbone's 224 px input" in advice.paragraph
    assert "reaches 100.0% in 5-fold cross-validation" in advice.paragraph and "LP-FT" in advice.paragraph
    assert [s.backbone for s in advice.ranking] and {s.backbone for s in advice.ranking} == set(OFFLINE)
    assert advice.estimate.total_seconds > 0


def test_the_candidates_keep_the_epochs_a_user_chose(tiny_folder):
    advice = advise(TrainConfig(data=str(tiny_folder), img_size=64, epochs=3, early_stopping=2),
                    open_dataset(tiny_folder), rank_all=False)
    assert (advice.config.epochs, advice.config.early_stopping) == (3, 2)
    assert (advice.probe_first.epochs, advice.probe_first.lr) == (3, 1e-3)


def test_the_advisors_look_at_the_data_reads_training_images_only(tmp_path, monkeypatch):
    """Validation images score the candidates and test images the delivered model: the decision must not see
    them, neither their features (the ridge probe) nor their headers (the image size)."""
    from tests.conftest import make_image
    for split in ("train", "val", "test"):
        for c, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            for i in range(12 if split == "train" else 6):
                make_image(tmp_path / "d" / split / c / f"{split}{i}.png", colour, seed=i)
    ds = open_dataset(tmp_path / "d")
    held_out = {s.path for s in ds.val + ds.test}
    assert held_out and len(ds.test) == 12
    import core.plan.advisor as advisor
    import core.plan.ranking as ranking
    seen: list[str] = []
    features = ranking.pretrained_features
    monkeypatch.setattr(ranking, "pretrained_features",
                        lambda cfg, samples, **kw: seen.extend(s.path for s in samples) or features(cfg, samples, **kw))
    opened = advisor.Image.open
    monkeypatch.setattr(advisor.Image, "open",  # file names only (decoders open bytes already read)
                        lambda f, *a: (isinstance(f, (str, Path)) and seen.append(str(f))) or opened(f, *a))
    advise(TrainConfig(data=str(tmp_path / "d")), ds, rank_all=False)
    assert seen and not held_out & set(seen)
    assert {str(s.path) for s in ds.train} >= set(seen)


def test_features_that_do_not_separate_the_classes_still_get_both_candidates(noise_folder):
    advice = advise(TrainConfig(data=str(noise_folder), img_size=64), open_dataset(noise_folder), rank_all=False)
    assert advice.config.freeze == "partial" and advice.probe_first.freeze == "probe"
    assert "partial fine-tuning" in advice.paragraph


def test_a_budget_too_small_for_fine_tuning_falls_back_to_a_probe(noise_folder):
    advice = advise(TrainConfig(data=str(noise_folder), img_size=64, budget_min=0.0001), open_dataset(noise_folder),
                    rank_all=False)
    assert advice.config.freeze == "probe" and "budget: probe instead" in advice.paragraph
    assert advice.probe_first is None and (advice.config.epochs, advice.config.lr) == (PROBE_EPOCHS, PROBE_LR)


def test_the_engine_refuses_auto_with_a_sentence(tiny_config):
    from core.engine.train import train
    with pytest.raises(ConfigError, match="freeze 'auto' is decided from the data before training"):
        train(tiny_config.replace(freeze="auto"))


def test_plan_command_ranks_chooses_and_estimates(tiny_folder, capsys):
    assert main(["plan", str(tiny_folder), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["ranking"]) == len(OFFLINE) and out["settings"]["freeze"] == "partial"  # after a probe (LP-FT)
    assert out["reasons"] and out["estimate"]["total_seconds"] > 0


def test_train_with_the_default_auto_records_why(tiny_config, tmp_path, capsys):
    """The CLI's default is auto: the advisor's choice is trained, and its reasons are in the summary."""
    code = main(["train", "--data", tiny_config.data, "--epochs", "1", "--img-size", "64", "--out",
                 str(tmp_path / "runs"), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "advisor: " in err and "status: completed" in out
    probe, final = auto_runs(tmp_path / "runs")
    summary = json.loads((final / "summary.json").read_text())
    assert summary["freeze"] == "partial" and any("cross-validation" in n for n in summary["notes"])
    assert any(n.startswith("Delivered the") for n in summary["notes"])  # which candidate, with both numbers
    assert TrainConfig.load(final / "config.yaml").init_from == str(probe)  # it records what was trained


def auto_runs(runs_dir: Path) -> tuple[Path, Path]:
    """An auto run's two folders: the probe candidate, then the fine-tuning that starts from it (by what the
    configs say, not by name: two run ids made in the same second need not sort in time order)."""
    runs = list(runs_dir.glob("2*"))
    assert len(runs) == 2, runs
    (final,) = [r for r in runs if TrainConfig.load(r / "config.yaml").init_from]
    (probe,) = [r for r in runs if r != final]
    return probe, final


def test_a_job_resolves_auto_in_the_worker(tiny_config):
    from core.jobs import JobRegistry
    from core.runs import Status
    job = JobRegistry().submit(tiny_config.replace(freeze="auto", backbone="tf_efficientnet_lite0",
                                                   weights="bundled", img_size=64, epochs=1))
    assert job.finished.wait(300)
    snap = job.snapshot()
    assert snap.status == Status.COMPLETED, snap.error
    assert snap.config.freeze == "partial" and snap.summary.freeze == "partial"
    assert any(n.startswith("Delivered the") for n in snap.summary.notes)


@pytest.mark.slow  # several processes or real backbones: make test runs it, test-fast does not
def test_lr_range_test_suggests_a_rate_below_where_the_loss_is_lowest(tiny_config):
    from core.plan.lr_finder import find_lr
    found = find_lr(tiny_config.replace(freeze="full"), open_dataset(tiny_config.data))
    assert len(found.lrs) >= 20 and found.lrs == sorted(found.lrs)
    lowest = found.lrs[int(np.argmin(found.losses))]
    assert found.suggestion == pytest.approx(min(max(lowest / 10, 1e-5), 1e-1))
    assert min(found.losses) < found.losses[0] - 0.05  # the sweep did find rates that learn (colours separate)
    # and the suggestion trains: better than a rate a thousand times smaller, same epochs and seed
    from core.engine.train import train
    good = train(tiny_config.replace(freeze="full", lr=found.suggestion, epochs=5, augmentation="none"))
    slow_lr = max(found.suggestion / 1000, field_meta("lr")["min"])  # the config's floor
    slow = train(tiny_config.replace(freeze="full", lr=slow_lr, epochs=5, augmentation="none"))
    # judged on the training loss: the validation split of the tiny set is a few images, one right answer a third
    loss = {name: RunDir(Path(r.run_dir)).read_metrics()[-1]["train_loss"] for name, r in (("good", good),
                                                                                          ("slow", slow))}
    assert loss["good"] < loss["slow"] - 0.05, loss


def test_lr_find_command(tiny_config, tmp_path, capsys):
    """The command's wiring (--config, --json); the sweep itself is tested above on the same tiny model."""
    tiny_config.replace(freeze="full").save(tmp_path / "tiny.yaml")
    assert main(["lr-find", "--data", tiny_config.data, "--config", str(tmp_path / "tiny.yaml"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["lrs"]) == len(out["losses"]) >= 20 and 1e-5 <= out["suggestion"] <= 1e-1


@pytest.mark.parametrize("source", ["random", "file"])
def test_default_auto_trains_with_any_weights_and_probes_the_weights_the_run_uses(source, tiny_folder, tmp_path,
                                                                                 monkeypatch, capsys):
    """Issue 23: auto used to rank with the bundled weights forced, so --weights random or a weights file failed
    (or were ranked on ImageNet features). The plan's probe now runs on the run's own weights."""
    import torch
    from safetensors.torch import save_file

    from core.models.backbones import create_model
    from core.models.features import pretrained_features
    from core.plan import ranking
    weights = "random"
    if source == "file":
        torch.manual_seed(7)
        weights = str(tmp_path / "mine.safetensors")
        save_file(create_model(TrainConfig(weights="random", seed=7), 2).state_dict(), weights)
    probed = []

    def spy(cfg, samples, **kw):
        feats, failed = pretrained_features(cfg, samples, **kw)
        probed.append((cfg, samples, feats))
        return feats, failed
    monkeypatch.setattr(ranking, "pretrained_features", spy)
    code = main(["train", "--data", str(tiny_folder), "--weights", weights, "--epochs", "1", "--img-size", "64",
                 "--out", str(tmp_path / "runs"), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0 and "status: completed" in out, err
    _, run = auto_runs(tmp_path / "runs")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["freeze"] == "partial"  # auto's fine-tuning, started from its probe candidate
    assert any("weights this run starts from" in n for n in summary["notes"])
    ((cfg, samples, feats),) = probed  # the chosen backbone only, with the run's weights
    assert cfg.weights == weights and cfg.backbone == "tf_efficientnet_lite0"
    bundled, _ = pretrained_features(cfg.replace(weights="bundled"), samples, exact=False)
    assert not np.allclose(np.stack([f[0] for f in feats]), np.stack([f[0] for f in bundled]), atol=1e-3)


def test_auto_with_hub_weights_offline_fails_with_a_sentence(tiny_folder, tmp_path, capsys):
    code = main(["train", "--data", str(tiny_folder), "--backbone", "convnext_tiny", "--weights", "hub",
                 "--epochs", "1", "--out", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and "Could not download the hub weights for 'convnext_tiny'" in err
    assert "Traceback" not in err
