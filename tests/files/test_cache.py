"""The per-machine cache: lossless when processes save at once, bounded by least-recently-used eviction."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from core.files.cache import FeatureCache, cache_root, evict_lru

ROOT = Path(__file__).resolve().parents[2]


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("TRANSFERLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "transferlab"


def test_two_processes_saving_at_once_lose_nothing(tmp_path):
    """Each process opens the cache before the other saves (each waits until both have opened it), adds its own
    200 entries, and saves: the file ends with all 400 (a plain last-writer-wins save would keep only one
    process's entries)."""
    path = tmp_path / "features" / "k.npz"
    opened = tmp_path / "opened"  # one file per process that has opened the cache
    opened.mkdir()
    code = textwrap.dedent("""
        import sys, time, numpy as np
        from pathlib import Path
        from core.files.cache import FeatureCache
        c = FeatureCache(Path(sys.argv[1]))
        (Path(sys.argv[3]) / sys.argv[2]).touch()
        deadline = time.time() + 60
        while len(list(Path(sys.argv[3]).iterdir())) < 2:
            assert time.time() < deadline, "the other process did not open the cache within 60 s"
            time.sleep(0.01)
        for i in range(200):
            c.put(f"{sys.argv[2]}{i}", np.full(64, i, dtype=np.float32))
        c.save()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), tag, str(opened)], cwd=ROOT)
             for tag in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    table = FeatureCache(path).table
    assert len(table) == 400 and float(table["b199"][0]) == 199.0


def test_least_recently_used_files_go_first(tmp_path):
    folder = tmp_path / "cache"
    (folder / "features").mkdir(parents=True)
    now = time.time()
    for i, name in enumerate(["old", "middle", "new"]):
        f = folder / "features" / f"{name}.npz"
        f.write_bytes(b"x" * 1000)
        os.utime(f, (now - 100 + i * 10, now - 100 + i * 10))
    removed = evict_lru(folder, limit=2000)
    assert [p.name for p in removed] == ["old.npz"]
    assert sorted(p.name for p in (folder / "features").iterdir()) == ["middle.npz", "new.npz"]
    FeatureCache(folder / "features" / "middle.npz")  # reading (a damaged file here) still marks it as used
    assert np.isclose(os.path.getmtime(folder / "features" / "middle.npz"), time.time(), atol=5)
