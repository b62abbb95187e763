"""The experts' recipes as baselines, on an honest split of each dev set: every quality table has these two rows.

    python -m bench.experts [SET ...]      # default: every dev set in ../shared/datasets

- R1, probe: scikit-learn logistic regression on the frozen backbone's pooled features (standardised), a mirrored
  copy of each training image added, C chosen by 5-fold cross-validation on the training images (an image and its
  mirror always in the same fold).
- R2, fine-tune: the whole network, 5 epochs, AdamW (backbone 3e-4, head 1e-3, weight decay 0.05), one-cycle,
  label smoothing 0.1, RandomResizedCrop (scale 0.5-1) + flip, batch 32. Plain torch/timm, not the engine.

The honest split (`honest_split`): the dev set's train/ stays the training set; its val/ is halved, stratified and
seeded, into val/ (what decisions such as early stopping or auto's choice may see) and test/ (what no decision
sees). The engine reads the same folder (a test/ split is reported in its summary), so every row uses one split.
Each row runs with an empty feature cache of its own: its time is that of a first run on the machine.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
DEV_SETS = ("hymenoptera", "rsscn7", "pbc_blood", "magnetic_tile", "cifar10", "flowers17")
BACKBONE = "tf_efficientnet_lite0"
SPLITS = Path(tempfile.gettempdir()) / "transferlab-bench-splits"


def honest_split(name: str, seed: int = 0, test_share: float = 0.5) -> Path:
    """A copy of dev set `name` with train/, val/ and test/: test/ is test_share of each class of its val/
    images (seeded), val/ the rest. Copied once per machine (the engine skips symbolic links)."""
    src, dst = DATASETS / name, SPLITS / f"{name}-seed{seed}"
    if (dst / ".complete").exists():
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src / "train", dst / "train")
    rng = random.Random(seed)
    for cls in sorted(p for p in (src / "val").iterdir() if p.is_dir()):
        files = sorted(p for p in cls.iterdir() if p.is_file())
        rng.shuffle(files)
        n_test = round(len(files) * test_share)
        for split, part in (("test", files[:n_test]), ("val", files[n_test:])):
            (dst / split / cls.name).mkdir(parents=True, exist_ok=True)
            for f in part:
                shutil.copy2(f, dst / split / cls.name / f.name)
    (dst / ".complete").write_text("")
    return dst


@contextmanager
def cold_cache():
    """An empty per-machine cache (features, ONNX exports) for the duration: a row's time is a first run's."""
    old = os.environ.get("TRANSFERLAB_CACHE")
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        os.environ["TRANSFERLAB_CACHE"] = tmp
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("TRANSFERLAB_CACHE", None)
            else:
                os.environ["TRANSFERLAB_CACHE"] = old


def r1_probe(data: Path, backbone: str = BACKBONE, seed: int = 0) -> dict:
    """R1: logistic regression on frozen features (+ mirrored copies), C by 5-fold CV on the training images."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from core.config import TrainConfig
    from core.data.dataset import open_dataset
    from core.models.features import pretrained_features
    t0 = time.perf_counter()
    cfg = TrainConfig(data=str(data), backbone=backbone, weights="bundled", seed=seed)
    ds = open_dataset(data, seed=seed)
    train_f, _ = pretrained_features(cfg, ds.train, exact=False, views=2)
    rows = [(f, s.label, i) for i, (f, s) in enumerate(zip(train_f, ds.train, strict=True)) if f is not None]
    x = np.concatenate([f for f, _, _ in rows])
    y = np.repeat([label for _, label, _ in rows], 2)
    groups = np.repeat([i for _, _, i in rows], 2)
    search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)),
                          {"logisticregression__C": np.logspace(-3, 1, 5)},
                          cv=StratifiedGroupKFold(5, shuffle=True, random_state=seed))
    search.fit(x, y, groups=groups)
    out = {"row": "R1", "C": float(search.best_params_["logisticregression__C"])}
    for split in ("val", "test"):
        samples = getattr(ds, split)
        feats, _ = pretrained_features(cfg, samples, exact=True)
        keep = [i for i, f in enumerate(feats) if f is not None]
        pred = search.predict(np.stack([feats[i][0] for i in keep]))
        out[f"{split}_acc"] = float(np.mean(pred == np.array([samples[i].label for i in keep])))
    out["seconds"] = time.perf_counter() - t0
    return out


def r2_finetune(data: Path, backbone: str = BACKBONE, epochs: int = 5, seed: int = 0, log=print) -> dict:
    """R2: the whole network, AdamW with two learning rates, one-cycle, label smoothing, crops + flips, batch 32.
    Validation and test accuracy after every epoch; the delivered model is the last epoch's (no early stopping)."""
    import timm
    import torch
    from torch import nn
    from torchvision import datasets, transforms

    from core.config import TrainConfig
    from core.models.backbones import create_model
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    classes = sorted(p.name for p in (data / "train").iterdir() if p.is_dir())
    # the bundled ImageNet weights (offline; their own key names, mapped by core.models), then timm's own head
    model = create_model(TrainConfig(backbone=backbone, weights="bundled"), len(classes))
    model.reset_classifier(len(classes))
    dc = timm.data.resolve_model_data_config(model)
    size = dc["input_size"][-1]
    norm = transforms.Normalize(dc["mean"], dc["std"])
    train_tf = transforms.Compose([transforms.RandomResizedCrop(size, scale=(0.5, 1.0)),
                                   transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm])
    eval_tf = timm.data.create_transform(**dc, is_training=False)
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(data / "train", train_tf), batch_size=32, shuffle=True,
                                         num_workers=2, drop_last=True, persistent_workers=True)
    evals = {split: torch.utils.data.DataLoader(datasets.ImageFolder(data / split, eval_tf), batch_size=64,
                                                num_workers=2) for split in ("val", "test")}
    head = set(id(p) for p in model.get_classifier().parameters())
    opt = torch.optim.AdamW([{"params": [p for p in model.parameters() if id(p) not in head], "lr": 3e-4},
                             {"params": list(model.get_classifier().parameters()), "lr": 1e-3}], weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[3e-4, 1e-3], total_steps=epochs * len(loader))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    per_epoch = []
    for epoch in range(1, epochs + 1):
        model.train()
        for x, y in loader:
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        accs = {}
        with torch.inference_mode():
            for split, ev in evals.items():
                right = total = 0
                for x, y in ev:
                    right += int((model(x).argmax(1) == y).sum())
                    total += len(y)
                accs[f"{split}_acc"] = right / max(total, 1)
        per_epoch.append({"epoch": epoch, **accs, "seconds": time.perf_counter() - t0})
        log(f"  R2 epoch {epoch}: val {accs['val_acc']:.1%} test {accs['test_acc']:.1%} "
            f"({time.perf_counter() - t0:.0f} s)")
    return {"row": "R2", **{k: per_epoch[-1][k] for k in ("val_acc", "test_acc")}, "per_epoch": per_epoch,
            "seconds": time.perf_counter() - t0}


if __name__ == "__main__":
    from bench.auto import main
    main(default_rows=("R1", "R2"), prog="python -m bench.experts")
