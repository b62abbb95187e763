"""The CUDA-only paths, tested on CPU by simulation (no GPU is lent to this project): precision and gradient-scaler
choice, out-of-memory in training, evaluation and feature extraction, and the ETA after a resume. What truly
needs a device is marked `gpu`."""

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from core.device import amp_dtype, needs_grad_scaler
from core.engine.callbacks import Callback
from core.engine.train import train
from core.models.objectives import Classify

CUDA = torch.device("cuda")


class Recorder(Callback):
    def __init__(self):
        self.batches, self.epochs = [], []

    def on_batch_end(self, m):
        self.batches.append(m)

    def on_epoch_end(self, m):
        self.epochs.append(m)


@pytest.mark.parametrize("amp,bf16,dtype,scaler", [
    ("auto", True, torch.bfloat16, False),
    ("auto", False, torch.float16, True),  # a GPU without bf16: fp16 needs a gradient scaler
    ("fp16", True, torch.float16, True),
    ("bf16", False, torch.bfloat16, False),
    ("off", True, None, False),
])
def test_precision_and_scaler_choice_on_cuda(monkeypatch, amp, bf16, dtype, scaler):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert amp_dtype(CUDA, amp) == dtype
    assert needs_grad_scaler(CUDA, amp) is scaler


@pytest.mark.parametrize("amp", ["auto", "fp16", "bf16", "off"])
def test_cpu_trains_in_fp32_without_scaler(amp):
    assert amp_dtype(torch.device("cpu"), amp) is None and not needs_grad_scaler(torch.device("cpu"), amp)


class OutOfMemoryOnce(Classify):
    """The classification objective, but the first step of epoch 2 with more than 2 images raises CUDA OOM."""

    state = {"epoch_starts": 0, "raised": False, "calls": 0}

    def __call__(self, net, batch):
        x, _ = batch
        st = OutOfMemoryOnce.state
        st["calls"] += 1
        if st["calls"] == 6 and len(x) > 2 and not st["raised"]:  # epoch 2 (24 images, batch 4: 5 steps/epoch)
            st["raised"] = True
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().__call__(net, batch)


def test_out_of_memory_halves_the_batch_and_the_schedule_goes_on(tiny_config, monkeypatch):
    """After the batch is halved mid-run, the learning rate keeps falling along its cosine to its floor: the
    schedule follows training progress, not a step count that the smaller batch would run past."""
    OutOfMemoryOnce.state = {"raised": False, "calls": 0}
    monkeypatch.setattr("core.engine.loop.Classify", OutOfMemoryOnce)
    rec = Recorder()
    cfg = tiny_config.replace(freeze="full", epochs=4, batch_size=4, scheduler="cosine", warmup_epochs=1.0,
                              augmentation="none")
    result = train(cfg, [rec])
    assert OutOfMemoryOnce.state["raised"] and result.status == "completed"
    assert result.summary.batch_size == 2
    assert any("batch size halved to 2" in n for n in result.summary.notes)
    after_warmup = [b.lr for b in rec.batches if b.epoch >= 2]
    assert all(a >= b - 1e-12 for a, b in zip(after_warmup, after_warmup[1:], strict=False)), after_warmup
    assert after_warmup[-1] == pytest.approx(cfg.lr * 0.01, rel=1e-6)  # the floor, reached at the very end


def test_out_of_memory_while_evaluating_halves_the_evaluation_batch(tiny_config, monkeypatch):
    from timm.models.efficientnet import EfficientNet
    plain = EfficientNet.forward_features

    def big_batches_fail_in_eval(self, x):
        if not self.training and x.shape[0] > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return plain(self, x)
    monkeypatch.setattr(EfficientNet, "forward_features", big_batches_fail_in_eval)
    result = train(tiny_config.replace(freeze="full", epochs=2))
    assert result.status == "completed" and result.summary.val.num == 6
    assert any("evaluation batch halved to 4" in n for n in result.summary.notes)


def test_out_of_memory_in_feature_extraction_splits_the_batch(tiny_config):
    """The GPU feature path (torch) splits a batch that does not fit, with the same features as one pass."""
    from core.data.images import geometry
    from core.models.backbones import create_model, data_config
    from core.models.features import Backbone
    model = create_model(tiny_config.replace(weights="random"), 3).eval()
    bb = Backbone(model, data_config(model, 64), torch.device("cpu"), Path(tiny_config.output_dir), "k")
    bb.uses_ort = False  # the CUDA path, on the CPU
    crops = np.random.default_rng(0).integers(0, 255, (8, 64, 64, 3), dtype=np.uint8)
    whole = bb(crops)
    plain, calls = bb.extractor.forward, []

    def fits_two(x):
        calls.append(len(x))
        if len(x) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return plain(x)
    bb.extractor.forward = fits_two
    assert np.allclose(bb(crops), whole, atol=1e-5)
    assert calls[:3] == [8, 4, 2] and max(c for c in calls if c <= 2) == 2
    assert geometry(data_config(model, 64))[1] == 64


def test_eta_after_resume_counts_only_this_process_steps(tiny_config):
    """A resumed run's ETA divides the time since the resume by the steps since the resume (not by every step
    since epoch 1, which made the ETA far too short)."""
    stop = threading.Event()

    class StopAfterEpoch1(Callback):
        def on_epoch_end(self, m):
            stop.set()
    cfg = tiny_config.replace(freeze="full", epochs=4)
    first = train(cfg, [StopAfterEpoch1()], stop=stop)
    assert first.status == "stopped"

    from core.runs import RunDir
    rec = Recorder()
    train(cfg, [rec], run=RunDir(Path(first.run_dir)), resume=True)
    assert [e.epoch for e in rec.epochs] == [2, 3, 4]
    for b in rec.batches:
        done_here = (b.epoch - 2) * b.steps_per_epoch + b.step
        left = (cfg.epochs - b.epoch + 1) * b.steps_per_epoch - b.step
        assert b.eta == pytest.approx(b.elapsed / done_here * left, rel=1e-9)
    for e in rec.epochs:
        assert e.eta == pytest.approx(e.elapsed / (e.epoch - 1) * (cfg.epochs - e.epoch), rel=1e-9)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_training_on_a_gpu_completes(tiny_config):
    result = train(tiny_config.replace(freeze="full", device="cuda", amp="fp16", epochs=2))
    assert result.status == "completed" and result.summary.device.startswith("cuda")


# ---- issue 23: the CUDA and nccl path correct by construction ------------------------------------------------------

META = torch.device("meta")  # stands in for the rank's GPU: a tensor left on the CPU shows, as nccl would refuse it


class Reached(Exception):
    """A collective was called (raised so that nothing reads a meta tensor's value)."""


@pytest.fixture
def collectives(monkeypatch):
    """torch.distributed's collectives replaced by a recorder of the device of every tensor they receive."""
    import torch.distributed as tdist
    seen = []

    def record(t, *args, **kwargs):
        seen.append(t.device)
        raise Reached
    monkeypatch.setattr(tdist, "all_reduce", record)
    monkeypatch.setattr(tdist, "broadcast", record)
    return seen


def test_every_collective_receives_tensors_on_the_ranks_device(collectives):
    from core.engine.distributed import Dist
    d = Dist(1, 2, 2, META)
    calls = [lambda: d.sum(torch.zeros(()), torch.zeros((), device=META, dtype=torch.long), 3),  # CPU, device, int
             lambda: d.any(True),
             lambda: d.sync_from_main(torch.nn.Linear(2, 2)),  # weights kept on the CPU
             lambda: d.sync_from_main(torch.nn.Linear(2, 2).to(META))]
    for call in calls:
        with pytest.raises(Reached):
            call()
    assert collectives == [META] * len(calls)


def test_ddp_is_given_the_ranks_device_index(monkeypatch):
    from core.engine.distributed import Dist
    given = []
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", lambda net, device_ids: given.append(device_ids))
    Dist(1, 2, 2, torch.device("cuda", 1)).wrap(torch.nn.Linear(2, 2))
    Dist(1, 2, 2, torch.device("cpu")).wrap(torch.nn.Linear(2, 2))
    assert given == [[1], None]


@pytest.mark.parametrize("local_rank", [None, "1"])
def test_each_rank_picks_its_own_gpu_and_nccl_binds_to_it(monkeypatch, local_rank):
    """pick_device gives `cuda:LOCAL_RANK` (never an index of None); setup sets that device before nccl starts."""
    import torch.distributed as tdist

    from core.device import pick_device
    from core.engine import distributed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    rank = int(local_rank or 0)
    assert pick_device("auto") == torch.device("cuda", rank) == pick_device("cuda")
    events = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: events.append(("set_device", torch.device(dev))))
    monkeypatch.setattr(tdist, "is_initialized", lambda: False)
    monkeypatch.setattr(tdist, "init_process_group", lambda backend: events.append(("init", backend)))
    monkeypatch.setattr(tdist, "get_rank", lambda: rank)
    monkeypatch.setattr(tdist, "get_world_size", lambda: 2)
    d = distributed.setup(torch.device("cuda"))  # a plain "cuda" too becomes the rank's own
    assert d.device == torch.device("cuda", rank)
    assert events == [("set_device", torch.device("cuda", rank)), ("init", "nccl")]


@pytest.fixture
def fp16(monkeypatch):
    """Every device trains in fp16, as `auto` does on a GPU without bf16; counts the loss-scaled steps."""
    monkeypatch.setattr("core.device.amp_dtype", lambda device, amp="auto": torch.float16)
    scaled = []
    plain = torch.amp.GradScaler.scale

    def scale(self, outputs):
        if self.is_enabled():
            scaled.append(outputs.dtype)
        return plain(self, outputs)
    monkeypatch.setattr(torch.amp.GradScaler, "scale", scale)
    return scaled


def test_whatever_trains_in_fp16_scales_its_loss(fp16, tiny_config, tiny_folder, tmp_path, monkeypatch):
    """The training loop, the LR finder, the time estimate and the adaptation loop each step through a scaler."""
    from core.data.dataset import open_dataset
    from core.engine.adapt import adapt
    from core.plan.estimate import estimate_run
    from core.plan.lr_finder import find_lr
    monkeypatch.setattr("core.plan.lr_finder.STEPS", 4)  # a few steps show the scaler (fp16 on a CPU is slow)
    ds = open_dataset(tiny_folder)
    cfg = tiny_config.replace(freeze="full", epochs=1)
    for name, run in [("training", lambda: train(cfg)), ("LR finder", lambda: find_lr(cfg, ds)),
                      ("time estimate", lambda: estimate_run(cfg, ds)),
                      ("adaptation", lambda: adapt(cfg.replace(adapt_objective="simsiam", adapt_epochs=1,
                                                               adapt_from="random", batch_size=8)))]:
        before = len(fp16)
        run()
        assert len(fp16) > before, f"the {name} trained fp16 without a gradient scaler"


def test_out_of_memory_while_adapting_halves_the_batch(tiny_folder, tmp_path, monkeypatch):
    from core.engine import adapt as adapt_module
    from core.engine.callbacks import Callback
    from tests.engine.test_adapt import tiny_adapt_cfg
    sizes = []
    plain = adapt_module._epoch

    def fits_four(*args):
        sizes.append(args[-1])
        if args[-1] > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return plain(*args)
    monkeypatch.setattr(adapt_module, "_epoch", fits_four)
    phases = []

    class Phases(Callback):
        def on_phase(self, text, done, total):
            phases.append(text)
    result = adapt_module.adapt(tiny_adapt_cfg(tiny_folder, tmp_path, batch_size=8, adapt_epochs=2), [Phases()])
    assert result.status == "completed" and result.adaptation["epochs_run"] == 2
    assert sizes == [8, 4, 4]  # halved once, and the next epoch keeps the smaller batch
    assert "GPU out of memory while adapting: batch size halved to 4." in phases


def test_out_of_memory_in_the_teachers_pass_halves_their_batch(trained_run, tiny_config, monkeypatch):
    from core.data.dataset import open_dataset
    from core.engine import teachers as teachers_module
    from core.engine.teachers import load_teachers, teacher_logits
    from tests.conftest import COLORS
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(Path(tiny_config.output_dir) / "cache"))  # no cached logits
    (teacher,) = load_teachers(tiny_config.replace(teachers=(str(trained_run.path),)), sorted(COLORS))
    samples = open_dataset(tiny_config.data).train
    whole = teacher_logits(teacher, samples, torch.device("cpu"))
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(Path(tiny_config.output_dir) / "cache2"))
    plain, sizes = teachers_module._logits, []

    def fits_four(model, pre, u8, bs):
        sizes.append(bs)
        if bs > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return plain(model, pre, u8, bs)
    monkeypatch.setattr(teachers_module, "_logits", fits_four)
    assert np.allclose(teacher_logits(teacher, samples, torch.device("cpu")), whole, atol=1e-5)
    assert sizes == [16, 8, 4]


def test_out_of_memory_in_the_lr_finder_halves_its_batch(tiny_config, tiny_folder, monkeypatch):
    from core.data.dataset import open_dataset
    from core.plan import lr_finder
    plain, sizes = lr_finder.Classify.__call__, []

    def fits_two(self, net, batch):
        sizes.append(len(batch[0]))
        if len(batch[0]) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return plain(self, net, batch)
    monkeypatch.setattr(lr_finder.Classify, "__call__", fits_two)
    monkeypatch.setattr(lr_finder, "STEPS", 6)  # the halving and the steps after it; the sweep is tested elsewhere
    found = lr_finder.find_lr(tiny_config, open_dataset(tiny_folder))
    assert len(found.losses) == 6 and sizes[:2] == [4, 2] and set(sizes[2:]) == {2}


@pytest.mark.slow  # two spawned DDP processes: in `make test`, not in test-fast
def test_gpu_check_on_a_cpu_runs_what_it_can_names_what_it_skipped_and_exits_0(capsys):
    """`python -m bench.gpu_check` on a machine without a GPU (as CI is): a pass/fail table, exit code 0."""
    from bench import gpu_check
    assert gpu_check.main(["--device", "cpu"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("  ")[0].strip(): line for line in out.splitlines() if "  pass " in line or " skipped " in line}
    for name in ("fp32 training steps", "channels_last", "out-of-memory retry", "DDP, 2 processes"):
        assert "  pass " in rows[name], out
    for name in ("bf16 training steps", "fp16 training steps + scaler"):
        assert " skipped " in rows[name] and "no CUDA GPU" in rows[name], out
    assert "ONNX Runtime CUDA provider" in rows and "0 failed" in out
