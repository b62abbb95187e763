"""Running a network over a split in evaluation batches, and the image stores those batches read from.

Both fit paths of core/engine/train.py use these: the decoded uint8 image store of a split (in memory, or memory-
mapped in the run folder for large sets), the rows of it that decoded, a frozen prefix run once over a split, and
`run_batched`, which runs any module in eval mode over cached inputs or decoded images and halves the evaluation
batch on CUDA out-of-memory. `require_decoded` stops a run whose training or validation images all failed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.data.dataset import Dataset, Sample, Skipped
from core.data.images import PROGRESS_EVERY
from core.device import autocast, free_cached_memory, is_out_of_memory
from core.engine.loop import Session
from core.errors import TrainingError
from core.models.tta import mirror

EVAL_BATCH_CPU = 16  # small batches are faster per image on these CPUs (cache effects, measured)
EVAL_BATCH_CUDA = 256


def eval_batch_size(device: torch.device) -> int:
    return EVAL_BATCH_CUDA if device.type == "cuda" else EVAL_BATCH_CPU


def image_store(s: Session, split: str, n: int, size: int, memmap_above: int) -> np.ndarray:
    """An n x size x size x 3 uint8 array: in memory, or past `memmap_above` bytes a memory-mapped file in the
    run folder (removed when the run ends)."""
    if n * size * size * 3 <= memmap_above:
        return np.zeros((n, size, size, 3), dtype=np.uint8)
    path = s.run.path / f"decoded-{split}.npy"
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))


def good_rows(samples: list[Sample], failed: list[Skipped]) -> np.ndarray:
    """The store rows of the samples that decoded (indices, so a memory-mapped store stays on disk)."""
    bad = {f.path for f in failed}
    return np.array([i for i, x in enumerate(samples) if x.path not in bad], dtype=np.int64)


def stack_view(feats: list[np.ndarray | None], view: int, device: torch.device) -> torch.Tensor:
    """One view's features (0: the image, 1: its mirror) of every image that decoded, as one tensor on device."""
    rows = [f[view] for f in feats if f is not None]
    return torch.from_numpy(np.stack(rows)).to(device) if rows else torch.zeros(0, 0, device=device)


def require_decoded(ds: Dataset, n_train: int, n_val: int, failed: list[Skipped]) -> None:
    """A run needs training and validation images it can read; say which split failed and why, not train on
    nothing and report an untrained model as completed."""
    for split, before in (("training", n_train), ("validation", n_val)):
        left = ds.train if split == "training" else ds.val
        if before and not left:
            reasons = sorted({f.reason.split(" (")[0] for f in failed})
            raise TrainingError(f"None of the {before} {split} images could be decoded ({'; '.join(reasons)[:200]})"
                                f", e.g. {Path(failed[0].path).name}. Check that the files are real, complete "
                                f"images (re-export or re-copy them) and start again.")


def prefix_outputs(s: Session, prefix: nn.Module, images_u8: np.ndarray, rows: np.ndarray, split: str,
                   max_bytes: int) -> torch.Tensor | None:
    """The frozen prefix run once over a split (eval mode, no autograd), kept on the training device;
    None when that would take more than max_bytes (the epochs then run the prefix each time)."""
    with torch.no_grad():
        one = prefix(s.pre.eval_view(torch.from_numpy(images_u8[rows[:1]]))) if len(rows) else None
    if one is None or one.element_size() * one.numel() * len(rows) > max_bytes:
        return None
    phase = f"frozen layers, once ({split})"
    s.emit("on_phase", phase, 0, len(rows))
    return run_batched(s, prefix, images_u8=images_u8, rows=rows, no_grad=True,
                       progress=lambda done: s.emit("on_phase", phase, done, len(rows)))


def run_batched(s: Session, module: nn.Module, inputs: torch.Tensor | None = None,
                images_u8: np.ndarray | None = None, rows: np.ndarray | None = None, no_grad: bool = False,
                progress: Callable[[int], None] | None = None, outputs: int | None = None, flip: bool = False):
    """module in eval mode over cached inputs or decoded images, in evaluation batches; progress(done) is
    called every PROGRESS_EVERY images and at the end. outputs=None: the module returns one tensor, and so does
    this; outputs=k: it returns a tuple of k tensors (a multi-task network's logits, or logits and pooled features),
    and so does this. flip: the decoded images mirrored (test-time augmentation). On CUDA out-of-memory the evaluation
    batch is halved and the pass starts over (and says so)."""
    while True:
        try:
            return _run_batches_once(s, module, inputs, images_u8, rows, no_grad, progress, outputs, flip)
        except Exception as exc:
            if not is_out_of_memory(exc) or s.eval_batch <= 1:
                raise
            free_cached_memory()
            s.eval_batch //= 2
            s.notes.append(f"GPU out of memory while evaluating: evaluation batch halved to {s.eval_batch}.")
            s.emit("on_phase", s.notes[-1], 0, 0)


def _run_batches_once(s: Session, module: nn.Module, inputs, images_u8, rows, no_grad, progress, outputs, flip):
    s.model.eval()
    bs = s.eval_batch
    n = len(inputs) if inputs is not None else len(rows)
    out: list[list[torch.Tensor]] = [[] for _ in range(outputs or 1)]
    # no_grad, not inference_mode: cached prefix outputs are later saved for backward by the layers after them
    with (torch.no_grad() if no_grad else torch.inference_mode()), autocast(s.device, s.cfg.amp):
        for i in range(0, n, bs):
            x = inputs[i:i + bs] if inputs is not None else \
                s.pre.eval_view(torch.from_numpy(images_u8[rows[i:i + bs]]))
            got = module(mirror(x) if flip else x)
            for k, t in enumerate(got if outputs else (got,)):
                out[k].append(t if no_grad else t.float())
            done = min(i + bs, n)
            if progress and (done % PROGRESS_EVERY < bs or done == n):
                progress(done)
    if not n:  # nothing to evaluate (an empty test split): zero rows of the right width
        return tuple(torch.zeros(0, device=s.device) for _ in range(outputs)) if outputs else \
            torch.zeros(0, len(s.dataset.classes), device=s.device)
    cat = [torch.cat(parts) for parts in out]
    return tuple(cat) if outputs else cat[0]
