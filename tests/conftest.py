"""Shared fixtures: tiny generated image folders, the real sample data, tiny configs, and one trained run.

`trained_run` is a finished tiny probe run trained once per test session: tests that only read a run use it (it
checks after each test that nothing in the run or its dataset changed). Tests that write to a run, or move its
data, take `run_copy` (a copy in their own tmp_path) instead of training one of their own. The slow tests that
need a real run share `ants_bees_run` the same way: one probe on the real ants/bees sample per session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# Under pytest-xdist (`-n 2`) each worker is pinned to a core of its own, before numpy or torch start their thread
# pools: every pool (torch's default of one thread per core, OpenMP, ONNX Runtime) then sizes itself to that core
# instead of two workers' pools fighting over both (threads spinning on a busy core cost more than they give).
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if WORKER.startswith("gw") and hasattr(os, "sched_setaffinity"):
    _cores = sorted(os.sched_getaffinity(0))
    if len(_cores) > 1:
        os.sched_setaffinity(0, {_cores[int(WORKER[2:]) % len(_cores)]})
TEST_THREADS = 1 if WORKER else 2  # torch threads of the tiny test configs

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HYMENOPTERA = ROOT.parent / "shared" / "datasets" / "hymenoptera"

# Tests never touch the network: hub downloads fail fast and clearly instead.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# ... nor the user's feature cache: one throwaway cache per test session (subprocesses inherit it).
os.environ.setdefault("TRANSFERLAB_CACHE", tempfile.mkdtemp(prefix="transferlab-test-cache-"))


# ---- the order the two workers take files in ---------------------------------------------------------------------

# The longest test files, longest first (measured with `pytest -n 2 --dist loadfile --durations=0`, 2026-12-04: 79 s
# down to 13 s). xdist hands a worker its next file when the worker has two tests or fewer left, in the order of the
# collection: a long file handed out last runs alone while the other worker idles (a run took 297 s, one worker 80 s
# longer than the other). Handed out first, the short files fill the end. xdist's own reordering puts files with
# many tests first, which here puts the long files (few tests each) last: pytest_configure turns it off.
LONGEST_FILES = ("tests/engine/test_train.py", "tests/engine/test_distributed.py", "tests/e2e/test_browser.py",
                 "tests/export/test_exports.py", "tests/models/test_batchnorm.py", "tests/plan/test_advisor.py",
                 "tests/models/test_backbones.py", "tests/e2e/test_inspect.py", "tests/e2e/test_label.py",
                 "tests/app/test_pages.py", "tests/engine/test_cuda_logic.py", "tests/models/test_init_from.py")


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the order below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first (LONGEST_FILES); the rest keep their order. The sort is stable."""
    rank = {path: i for i, path in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


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


def write_colors(root: Path) -> Path:
    """3 separable colour classes x 8 PNGs under `root`: a folder of class folders (18 train, 6 val images)."""
    for name, color in COLORS.items():
        for i in range(8):
            make_image(root / name / f"{name}_{i}.png", color, seed=i)
    return root


def write_leaky(root: Path) -> Path:
    """train/ and val/ of colour images, 3 per class, and one training image copied into val (val/red/copy.png)."""
    for split in ("train", "val"):
        for name, color in COLORS.items():
            for i in range(3):
                make_image(root / split / name / f"{name}{i}.png", color, size=64, seed=10 * (split == "val") + i)
    (root / "val" / "red" / "copy.png").write_bytes((root / "train" / "red" / "red0.png").read_bytes())
    return root


def tiny_train_config(data: Path, output_dir: Path):
    """Seconds of training: the random tiny backbone at 64 px, partial fine-tuning for 2 epochs."""
    from core.config import TrainConfig
    return TrainConfig(data=str(data), backbone="test_efficientnet", weights="random", img_size=64,
                       freeze="partial", epochs=2, batch_size=4, lr=1e-2, output_dir=str(output_dir),
                       threads=TEST_THREADS, early_stopping=0)


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    """3 separable colour classes x 8 PNGs: a folder of class folders."""
    return write_colors(tmp_path / "colors")


@pytest.fixture
def tiny_config(tiny_folder: Path, tmp_path: Path):
    return tiny_train_config(tiny_folder, tmp_path / "runs")


@pytest.fixture(scope="session")
def hymenoptera() -> Path:
    if not HYMENOPTERA.is_dir():
        pytest.skip(f"sample data not found at {HYMENOPTERA}")
    return HYMENOPTERA


# ---- one trained run per session -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def session_run(tmp_path_factory):
    """Trained once: a 2-epoch probe on the tiny colours (the data folder is named `colors`, as tiny_folder).
    Tests take `trained_run` (to read) or `run_copy` (to write); a module-scoped fixture may `copy_run` it."""
    from core.engine.train import train
    from core.runs import RunDir
    root = tmp_path_factory.mktemp("trained-run")
    cfg = tiny_train_config(write_colors(root / "colors"), root / "runs").replace(freeze="probe")
    result = train(cfg)
    assert result.status == "completed", result
    return RunDir(Path(result.run_dir))


def _listing(*folders: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for f in folders for p in f.rglob("*")}


def _read_only(run, name: str):
    """Yield `run`; then fail the test if it changed anything in the run or its dataset."""
    from core.config import TrainConfig
    data = Path(TrainConfig.load(run.config).data)
    before = _listing(run.path, data)
    yield run
    assert _listing(run.path, data) == before, (
        f"this test wrote to the shared run `{name}` (or its dataset): give it a copy (`copy_run`) instead")


@pytest.fixture
def trained_run(session_run):
    """The session's finished tiny probe run, to read only: the test fails if it changed the run or its dataset."""
    yield from _read_only(session_run, "trained_run")


@pytest.fixture(scope="session")
def ants_bees_session_run(hymenoptera, tmp_path_factory):
    """Trained once: a probe (default settings: bundled backbone, 224 px) on the real ants/bees sample; shared by
    the slow tests of accuracy, calibration, exports and the fresh-process bundle."""
    from core.config import TrainConfig
    from core.engine.train import train
    from core.runs import RunDir
    out = tmp_path_factory.mktemp("ants-bees-run")
    result = train(TrainConfig(data=str(hymenoptera), freeze="probe", output_dir=str(out)))
    assert result.status == "completed", result
    return RunDir(Path(result.run_dir))


@pytest.fixture
def ants_bees_run(ants_bees_session_run):
    """The session's ants/bees probe run, to read only (as `trained_run`)."""
    yield from _read_only(ants_bees_session_run, "ants_bees_run")


def copy_run(run, runs_dir: Path, data_parent: Path | None = None):
    """A copy of `run` under runs_dir (same run id) and of its dataset under data_parent (same folder name; None:
    the copy reads the run's own dataset, for tests that do not write to it); the copy's config.yaml points at
    the dataset it reads. Copying is milliseconds, training is seconds."""
    from core.config import TrainConfig
    from core.runs import RunDir
    cfg = TrainConfig.load(run.config)
    data = shutil.copytree(cfg.data, data_parent / Path(cfg.data).name) if data_parent else cfg.data
    copy = RunDir(Path(shutil.copytree(run.path, runs_dir / run.path.name)))
    cfg.replace(data=str(data), output_dir=str(runs_dir)).save(copy.config)
    return copy


@pytest.fixture
def run_copy(session_run, tmp_path: Path):
    """A copy of the session's trained run (and of its dataset) in this test's tmp_path, free to write to."""
    return copy_run(session_run, tmp_path / "runs", tmp_path / "run-data")


@pytest.fixture
def quick_estimate(monkeypatch):
    """The advisor's time estimate from one timed training step, no warm-up: the tests of what auto chooses only
    need an estimate, not a good one (tests/plan/test_estimate.py tests the estimate itself), and the 8 steps were
    most of an advisor test's time."""
    monkeypatch.setattr("core.plan.estimate.STEPS", 1)
    monkeypatch.setattr("core.plan.estimate.WARMUP_STEPS", 0)


def wait_for_jobs(app, timeout: float = 900) -> None:
    """Until every job of the app's server (its process-wide registry) has ended, then one rerun of the page: the
    page is drawn once, in the state the test asserts, instead of rerunning it every few tenths of a second (each
    rerun redraws the whole page on the cores the job trains on)."""
    from pages._ui import get_registry
    for job in get_registry().jobs():
        assert job.finished.wait(timeout), f"the job '{job.title}' did not end within {timeout:.0f} s"
    app.run()
