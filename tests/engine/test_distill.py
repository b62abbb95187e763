"""Knowledge distillation: the loss, the teachers (classes, cache), unlabeled images, resume, and the CLI's run,
bundle and table, on tiny generated data."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from core.analysis.predictions import load_predictions
from core.cli import main
from core.config import TrainConfig
from core.data.dataset import Sample
from core.engine.callbacks import Callback
from core.engine.teachers import load_teachers, teacher_logits
from core.engine.train import train
from core.errors import ConfigError
from core.export.bundle import load_bundle
from core.export.compare import read_table
from core.models.objectives import Classify, Distill
from core.runs import RunDir
from tests.conftest import COLORS, make_image


class Identity(nn.Module):
    def forward(self, x):
        return x


def _batch(n=8, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, requires_grad=True)
    y = torch.randint(0, c, (n,), generator=g)
    soft = torch.randn(n, c, generator=g).softmax(1)
    return logits, y, soft


def test_distill_loss_is_hintons_formula_and_alpha_zero_is_classify():
    logits, y, soft = _batch()
    alpha, t, ls = 0.7, 3.0, 0.1
    out = Distill(alpha, t, ls)(Identity(), (logits, y, soft))
    ce = F.cross_entropy(logits, y, label_smoothing=ls)
    kl = F.kl_div(F.log_softmax(logits / t, 1), soft, reduction="batchmean")
    assert out.loss.item() == pytest.approx(((1 - alpha) * ce + alpha * t * t * kl).item(), rel=1e-5)
    assert out.size == 8 and out.labeled.item() == 8 and out.correct.item() == (logits.argmax(1) == y).sum().item()
    plain = Classify(ls)(Identity(), (logits, y))
    assert Distill(0.0, t, ls)(Identity(), (logits, y, soft)).loss.item() == pytest.approx(plain.loss.item(), rel=1e-6)
    out.loss.backward()  # differentiable
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_unlabeled_examples_contribute_only_the_teacher_term():
    logits, y, soft = _batch()
    y_unl = torch.full_like(y, -1)
    t, alpha = 4.0, 0.5
    out = Distill(alpha, t, 0.1)(Identity(), (logits, y_unl, soft))
    kl = F.kl_div(F.log_softmax(logits / t, 1), soft, reduction="batchmean")
    assert out.loss.item() == pytest.approx((alpha * t * t * kl).item(), rel=1e-5)
    assert out.labeled.item() == 0 and out.correct.item() == 0
    # a mixed batch: the labeled half's CE and everyone's KL, averaged over the whole batch
    mixed = y.clone()
    mixed[4:] = -1
    got = Distill(alpha, t, 0.0)(Identity(), (logits, mixed, soft)).loss.item()
    ce = F.cross_entropy(logits[:4], y[:4], reduction="sum") / 8
    assert got == pytest.approx(((1 - alpha) * ce + alpha * t * t * kl).item(), rel=1e-5)


@pytest.fixture
def teacher_run(trained_run):
    return trained_run.path


def test_teacher_with_other_classes_is_refused_naming_it(teacher_run, tmp_path, tiny_config):
    other = tmp_path / "other"
    for name in ("cats", "dogs", "red"):
        for i in range(6):
            make_image(other / name / f"{name}_{i}.png", (100, 100, 100), seed=i)
    with pytest.raises(ConfigError, match=rf"Teacher {teacher_run.name} .*lacks cats, dogs"):
        train(tiny_config.replace(data=str(other), teachers=(str(teacher_run),)))
    with pytest.raises(ConfigError, match="Teacher nowhere: .* does not exist"):
        load_teachers(tiny_config.replace(teachers=(str(tmp_path / "nowhere"),)), list(COLORS))


def test_teacher_predictions_are_cached_per_image(teacher_run, tiny_folder, tiny_config):
    samples = [Sample(str(p), 0) for p in sorted(tiny_folder.rglob("*.png"))]
    teacher, = load_teachers(tiny_config.replace(teachers=(str(teacher_run),)), sorted(COLORS))
    seen: list[list[tuple[int, int]]] = [[], []]
    first = teacher_logits(teacher, samples, torch.device("cpu"), lambda d, n: seen[0].append((d, n)))
    second = teacher_logits(teacher, samples, torch.device("cpu"), lambda d, n: seen[1].append((d, n)))
    n = len(samples)
    assert seen[0][0] == (0, n) and seen[1] == [(n, n)]  # the second call found every image cached: no forward
    assert torch.allclose(torch.from_numpy(first), torch.from_numpy(second))
    # the logits are the teacher bundle's own predictions on the evaluation view
    bundle = load_bundle(teacher_run / "bundle")
    probs = bundle.predict([x.path for x in samples[:4]], topk=3)
    for row, top in zip(first[:4], probs, strict=True):
        assert sorted(COLORS)[int(row.argmax())] == top[0][0]


def test_distilled_run_with_unlabeled_images_resumes_after_a_stop(teacher_run, tiny_config, tmp_path):
    unl = tmp_path / "unlabeled"
    for i, color in enumerate(list(COLORS.values()) * 2):
        make_image(unl / "any" / f"u{i}.png", color, seed=50 + i)
    (unl / "notes.txt").write_text("not an image")
    cfg = tiny_config.replace(freeze="partial", epochs=2, teachers=(str(teacher_run),), unlabeled=str(unl))
    stop = threading.Event()

    class StopAfterEpoch1(Callback):
        def on_epoch_end(self, m):
            stop.set()
    first = train(cfg, [StopAfterEpoch1()], stop=stop)
    assert first.status == "stopped"
    run = RunDir(Path(first.run_dir))
    assert TrainConfig.load(run.config).teachers == (str(teacher_run),)
    done = train(TrainConfig.load(run.config), run=run, resume=True)
    assert done.status == "completed" and [m["epoch"] for m in run.read_metrics()] == [1, 2]
    s = done.summary
    assert s.num_train == 18  # the labeled training images; the 6 unlabeled ones are in the note
    assert any(f"Distilled from 1 teacher(s): {teacher_run.name}" in n and "6 unlabeled image(s)" in n
               for n in s.notes)
    assert all(0.0 <= m["train_acc"] <= 1.0 for m in run.read_metrics())


def test_unlabeled_without_teachers_is_refused(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match="give teachers"):
        train(tiny_config.replace(unlabeled=str(tmp_path)))


def test_cli_distill_makes_a_normal_run_a_baseline_and_the_table(teacher_run, tiny_folder, tmp_path, capsys):
    out = tmp_path / "distilled"
    code = main(["distill", "--teacher", str(teacher_run), "--teacher", str(teacher_run / "bundle"),
                 "--student", "test_efficientnet", "--weights", "random", "--img-size", "64", "--freeze", "probe",
                 "--epochs", "2", "--batch-size", "4", "--data", str(tiny_folder), "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    runs = [p for p in out.iterdir() if p.is_dir() and p.name[0].isdigit()]
    assert len(runs) == 2  # the student and its labels-only baseline, both ordinary runs
    # the student is the run with teachers (run ids started in the same second do not sort by start)
    runs.sort(key=lambda p: TrainConfig.load(RunDir(p).config).teachers == ())
    student = RunDir(runs[0])
    rows = read_table(student)
    assert [r.role for r in rows] == ["teacher", "teacher", "student (distilled)", "student (labels only)"]
    assert rows[2].name == student.run_id and rows[3].name == runs[1].name
    assert all(r.params > 0 and r.bundle_mb > 0 and r.latency_ms > 0 for r in rows)
    assert rows[2].val_accuracy == student.read_summary().val_accuracy
    assert "| student (labels only) |" in printed and (student.path / "distill" / "table.md").is_file()
    assert TrainConfig.load(RunDir(runs[1]).config).teachers == ()
    # the exported student loads with timm's own loader and reproduces the run's validation accuracy
    model = timm.create_model(f"local-dir:{student.bundle_dir}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    classes = model.pretrained_cfg["label_names"]
    val = [tiny_folder / p for p in load_predictions(student.predictions).splits["val"].paths]
    with torch.inference_mode():
        x = torch.stack([transform(Image.open(p).convert("RGB")) for p in val])
        got = [classes[i] for i in model(x).argmax(1).tolist()]
    acc = sum(g == p.parent.name for g, p in zip(got, val, strict=True)) / len(val)
    assert acc == pytest.approx(student.read_summary().val_accuracy)
