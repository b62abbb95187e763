"""Skewed classes and test-time augmentation: balanced accuracy in the reports, the balance rule, its loss weights and
sampler in real runs, and the mirrored view averaged in evaluation and predict."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score

import core.engine.tasks as tasks_module
import core.engine.train as train_module
from core.analysis.metrics import classification_report
from core.analysis.predictions import load_predictions
from core.config import TrainConfig
from core.engine.balance import decide, epoch_order
from core.engine.train import train
from core.errors import ConfigError
from core.export.bundle import load_bundle
from core.runs import RunDir
from tests.conftest import COLORS, make_image, tiny_train_config

SKEW = {"red": 40, "green": 8, "blue": 6}  # training + validation images per class


@pytest.fixture
def skewed_folder(tmp_path: Path) -> Path:
    for name, n in SKEW.items():
        for i in range(n):
            make_image(tmp_path / "skewed" / name / f"{name}_{i}.png", COLORS[name], seed=i)
    return tmp_path / "skewed"


def test_balanced_accuracy_and_macro_f1_are_sklearns():
    rng = np.random.default_rng(0)
    y = rng.choice(4, 200, p=[0.7, 0.2, 0.07, 0.03])
    pred = np.where(rng.random(200) < 0.7, y, 0)  # unsure: the largest class
    r = classification_report(y, pred, ["a", "b", "c", "d"])
    assert r["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert r["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert r["balanced_accuracy"] < r["accuracy"]  # the rare classes, missed more often, count as much


def test_balance_decision_says_why():
    auto = decide("auto", {"ok": 30, "crack": 10, "empty": 0})  # a class without images is not the smallest
    assert auto.mode == "off" and auto.note.startswith("balanced: off because 'ok' has 3.0x the training images of "
                                                       "'crack' (30 vs 10); auto leaves it off")
    on = decide("weights", {"ok": 30, "crack": 10})
    assert on.note.startswith("balanced: on (class-weighted loss) because balance is set to weights; 'ok' has 3.0x")
    assert decide("sampler", {"a": 5, "b": 5}).mode == "sampler"
    even = decide("auto", {"ants": 123, "bees": 121})  # no skew to speak of: the note says so, not "1.0x"
    assert even.mode == "off" and even.note == "balanced: off because the classes are about even (121 to 123 " \
                                                "training images each)"
    assert decide("off", {"a": 50, "b": 5}).mode == "off"


def test_balance_settings_that_do_not_apply_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="balance: 'weights' applies to single-task runs without teachers"):
        TrainConfig(data=str(tmp_path), teachers=(str(tmp_path / "run"),), balance="weights").validate()
    with pytest.raises(ConfigError, match="tta: test-time augmentation applies to single-task runs"):
        TrainConfig(data=str(tmp_path), tasks="labels.csv", tta="flip").validate()


@pytest.mark.parametrize("freeze", ["probe", "partial"])
def test_skewed_set_trains_with_the_weights_the_rule_gives(skewed_folder, tmp_path, monkeypatch, freeze):
    used = []

    class Recording(tasks_module.Classify):
        def __call__(self, net, batch):
            used.append(self.weight)
            return super().__call__(net, batch)
    monkeypatch.setattr(tasks_module, "Classify", Recording)
    result = train(tiny_train_config(skewed_folder, tmp_path / "runs").replace(freeze=freeze, balance="weights"))
    assert result.status == "completed"
    counts = RunDir(Path(result.run_dir)).read_summary()  # the summary on disk: the notes and both new figures
    assert any(n.startswith("balanced: on (class-weighted loss) because balance is set to weights; 'red' has")
               for n in counts.notes)
    n = json.loads((Path(result.run_dir) / "dataset.json").read_text())["counts"]["train"]
    expected = torch.tensor([sum(n.values()) / (3 * n[c]) for c in ("blue", "green", "red")])
    assert used and all(torch.allclose(w.cpu(), expected) for w in used)
    assert 0 <= counts.val.balanced_accuracy <= 1 and 0 <= counts.val.macro_f1 <= 1
    assert result.summary.val.balanced_accuracy == pytest.approx(
        balanced_accuracy_score(*_labels_and_predictions(result.run_dir)))


def test_sampler_draws_every_class_about_equally_often(skewed_folder, tmp_path, monkeypatch):
    drawn = []

    def recording(labels, balance, gen):
        order = epoch_order(labels, balance, gen)
        drawn.append(labels.cpu()[order])
        return order
    monkeypatch.setattr(train_module, "epoch_order", recording)
    cfg = tiny_train_config(skewed_folder, tmp_path / "runs").replace(freeze="probe", balance="sampler", epochs=20)
    assert train(cfg).status == "completed"
    share = np.bincount(torch.cat(drawn).numpy(), minlength=3) / sum(len(d) for d in drawn)
    assert len(drawn) == 20 and np.all(np.abs(share - 1 / 3) < 0.1), share  # naturally 5 / 43 for blue
    # without balancing an epoch is a permutation: every image once
    assert sorted(epoch_order(torch.tensor([0, 0, 1]), decide("off", {}), torch.Generator())) == [0, 1, 2]


def _labels_and_predictions(run_dir: str) -> tuple[np.ndarray, np.ndarray]:
    val = load_predictions(Path(run_dir) / "predictions.npz").splits["val"]
    return val.labels, val.predicted


@pytest.mark.parametrize("freeze", ["probe", "full"])
def test_tta_averages_the_mirrored_view_in_evaluation_and_predict(tiny_config, freeze):
    result = train(tiny_config.replace(freeze=freeze, tta="flip"))
    model = load_bundle(Path(result.run_dir) / "bundle")
    assert model.tta == "flip"
    val = load_predictions(Path(result.run_dir) / "predictions.npz").splits["val"]
    root = Path(tiny_config.data)
    paths = [root / p for p in val.paths]
    with torch.inference_mode():
        x = torch.from_numpy(model.inputs(paths))
        one, mirrored = model.model(x).softmax(-1), model.model(x.flip(-1)).softmax(-1)
    by_hand = ((one + mirrored) / 2).numpy()
    assert not np.allclose(one.numpy(), by_hand, atol=1e-4)  # the mirror image changes the prediction
    model.temperature = 1.0
    top = model.predict(paths, topk=3)
    got = np.array([[dict(t)[c] for c in model.classes] for t in top])
    np.testing.assert_allclose(got, by_hand, atol=1e-5)
    if freeze == "probe":  # the run's own evaluation, the same average (the random tiny network of a full run is too
        np.testing.assert_allclose(val.probs, by_hand, atol=2e-3)  # sensitive to the decode paths' pixel differences)
    assert not np.allclose(val.probs, one.numpy(), atol=1e-4)  # ... not the single view
    model.temperature = 2.0  # calibrated: the temperature applies to the log of the mean, as it was fitted
    calibrated = torch.from_numpy(np.log(by_hand) / 2).softmax(-1).numpy()
    got = np.array([[dict(t)[c] for c in model.classes] for t in model.predict(paths, topk=3)])
    np.testing.assert_allclose(got, calibrated, atol=1e-5)
