"""Shared fixtures: tiny generated image folders, the real sample data, tiny configs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
HYMENOPTERA = ROOT.parent / "shared" / "datasets" / "hymenoptera"

# Tests never touch the network: hub downloads fail fast and clearly instead.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# ... nor the user's feature cache: one throwaway cache per test session (subprocesses inherit it).
os.environ.setdefault("TRANSFERLAB_CACHE", tempfile.mkdtemp(prefix="transferlab-test-cache-"))


def make_image(path: Path, color: tuple[int, int, int], size: int = 48, mode: str = "RGB", seed: int = 0) -> Path:
    """A noisy image around `color` (different seeds give different pictures)."""
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(color)[None, None] + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return path


COLORS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220)}


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    """3 separable colour classes x 8 PNGs: a folder of class folders."""
    root = tmp_path / "colors"
    for name, color in COLORS.items():
        for i in range(8):
            make_image(root / name / f"{name}_{i}.png", color, seed=i)
    return root


@pytest.fixture
def tiny_config(tiny_folder: Path, tmp_path: Path):
    from core.config import TrainConfig
    return TrainConfig(data=str(tiny_folder), backbone="test_efficientnet", weights="random", img_size=64,
                       freeze="partial", epochs=2, batch_size=4, lr=1e-2, output_dir=str(tmp_path / "runs"), threads=2,
                       early_stopping=0)


@pytest.fixture(scope="session")
def hymenoptera() -> Path:
    if not HYMENOPTERA.is_dir():
        pytest.skip(f"sample data not found at {HYMENOPTERA}")
    return HYMENOPTERA
