"""The end of a run reads no image again: the leakage search and the record take the content hashes and duplicate
fingerprints the run's own decoding gathered (one read per file), and still find a validation copy of a training
image; a repeat run takes its fingerprints from the machine cache."""

from pathlib import Path

import pytest

from core.data import fingerprints as fp_module
from core.engine.train import train
from core.export.record import read_record
from core.files.digest import file_digest
from tests.conftest import tiny_train_config, write_leaky


@pytest.fixture
def counted_reads(monkeypatch, tmp_path):
    """Counts per image path of every read (Path.read_bytes, file_digest) and of fingerprint decodes, in a fresh
    machine cache."""
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))
    reads, decodes = {}, []
    real_read, real_fingerprint = Path.read_bytes, fp_module.fingerprint

    def read_bytes(self):
        if self.suffix == ".png":
            reads[str(self)] = reads.get(str(self), 0) + 1
        return real_read(self)

    def digest(path):
        reads[str(path)] = reads.get(str(path), 0) + 1
        return file_digest(path)
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    monkeypatch.setattr("core.export.record.file_digest", digest)
    monkeypatch.setattr(fp_module, "fingerprint", lambda data: decodes.append(1) or real_fingerprint(data))
    return reads, decodes


@pytest.mark.parametrize("freeze", ["probe", "partial"])
def test_the_end_of_a_run_reads_no_image_again_and_finds_the_leak(tmp_path, counted_reads, freeze):
    reads, decodes = counted_reads
    data = write_leaky(tmp_path / "leaky")
    reads.clear()
    result = train(tiny_train_config(data, tmp_path / "runs").replace(freeze=freeze, epochs=1))

    assert result.status == "completed"
    assert result.summary.leakage["leaked_val"] == 1
    assert result.summary.leakage["leaked_val_paths"] == ["val/red/copy.png"]
    images = sorted(str(p) for p in data.rglob("*.png"))
    assert sorted(reads) == images and set(reads.values()) == {1}  # each file read once, by the decoding
    assert len(decodes) == len(images) - 1  # one fingerprint per distinct content (the copy shares one)
    files = read_record(Path(result.run_dir))["dataset"]["files"]
    assert {r["path"]: r["hash"] for r in files["val"]}["val/red/copy.png"] == file_digest(data / "train/red/red0.png")

    reads.clear()
    decodes.clear()
    again = train(tiny_train_config(data, tmp_path / "runs2").replace(freeze=freeze, epochs=1))
    assert again.summary.leakage == result.summary.leakage
    assert set(reads.values()) == {1} and decodes == []  # fingerprints from the machine cache
