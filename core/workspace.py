"""Where the app may read and write: its workspace folder and the data roots its operator allows.

This is the policy, in one place, so every route to a run checks the same thing: the job registry calls
`check_config` on every training it queues (pages, an uploaded YAML config, a resumed `?run=` link), and the
Data page's server-folder tab calls `check_path` before it scans. The CLI has no policy: whoever runs it owns
the machine.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.config import WEIGHT_KEYWORDS, TrainConfig
from core.errors import AccessError
from core.files.atomic import atomic_write_bytes
from core.files.digest import bytes_digest

DATA_ROOTS_ENV = "TRANSFERLAB_DATA_ROOTS"  # extra folders users may train from, separated by os.pathsep
WORKSPACE_ENV = "TRANSFERLAB_WORKSPACE"


@dataclass(frozen=True)
class Workspace:
    root: Path  # everything the app writes lives here: uploads, runs, caches
    data_roots: tuple[Path, ...] = ()  # besides root, folders users may read datasets and weights from

    @classmethod
    def from_env(cls, default_root: Path, sample_data: Path) -> Workspace:
        root = Path(os.environ.get(WORKSPACE_ENV) or default_root).resolve()
        extra = [Path(p).expanduser().resolve() for p in os.environ.get(DATA_ROOTS_ENV, "").split(os.pathsep) if p]
        return cls(root, (sample_data.resolve(), *extra))

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def uploads_dir(self) -> Path:
        return self.root / "uploads"

    def allowed_roots(self) -> list[Path]:
        return [*self.data_roots, self.root]

    def is_allowed(self, path: str | Path) -> bool:
        """Inside an allowed root once symbolic links and '..' are resolved."""
        real = Path(path).expanduser().resolve()
        return any(real == r or r in real.parents for r in self.allowed_roots())

    def check_path(self, path: str | Path, what: str) -> Path:
        real = Path(path).expanduser().resolve()
        if not self.is_allowed(real):
            raise AccessError(f"{what} {real} is outside the folders this server may read; upload the files "
                              f"instead, or ask the operator to add the folder to {DATA_ROOTS_ENV}.")
        return real

    def check_config(self, cfg: TrainConfig) -> None:
        """Raise AccessError unless everything cfg reads is under an allowed root and it writes in the workspace."""
        if cfg.data:
            self.check_path(cfg.data, "The dataset")
        if cfg.weights not in WEIGHT_KEYWORDS:
            self.check_path(cfg.weights, "The weights file")
        if cfg.init_from:
            self.check_path(cfg.init_from, "The run to start from")
        if cfg.unlabeled:
            self.check_path(cfg.unlabeled, "The unlabeled images")
        for name, path in cfg.task_spec.datasets:
            self.check_path(path, f"The dataset of task '{name}'")
        if cfg.task_spec.labels_file:
            self.check_path(cfg.task_spec.labels_file, "The labels file")
        for teacher in cfg.teachers:
            self.check_path(teacher, "The teacher")
        out = Path(cfg.output_dir).expanduser().resolve()
        if not (out == self.root or self.root in out.parents):
            raise AccessError(f"The output folder {out} is outside this server's workspace {self.root}; runs are "
                              f"written to {self.runs_dir}.")

    def read_config(self, text: str, source: str) -> TrainConfig:
        """A config file a user uploaded, as this server runs it: written to the workspace's runs folder, and
        checked like every job submission (a config names server paths); ConfigError/AccessError otherwise."""
        cfg = TrainConfig.from_yaml(text, source=source).replace(output_dir=str(self.runs_dir))
        self.check_config(cfg)
        return cfg

    def upload_folder(self, file_ids: list[str]) -> Path:
        """The folder for one uploaded folder of files, named after the upload (the browser's file ids): the same
        upload again lands in the same folder, another never overwrites it."""
        ident = hashlib.blake2b("|".join(sorted(file_ids)).encode(), digest_size=8).hexdigest()
        return self.uploads_dir / f"folder-{ident}"

    def scratch_folder(self, purpose: str) -> tempfile.TemporaryDirectory:
        """A fresh folder for files used once (e.g. images to predict), under the workspace like everything the app
        writes, not the system temp folder; leaving its `with` block removes it, also on error."""
        root = self.root / purpose
        root.mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(dir=root, prefix="upload-")

    def store_upload(self, data: bytes, name: str, folder: str) -> Path:
        """Save uploaded bytes under their content hash (keeping the extension): a second upload with the same
        browser file name never overwrites a file an earlier run still points to."""
        path = self.uploads_dir / folder / f"{bytes_digest(data)[:20]}{Path(name).suffix.lower()}"
        if not path.exists():
            atomic_write_bytes(path, data)
        return path
