"""The time estimate: warm-up steps are not timed, and the estimate states a range."""

import torch

from core.config import TrainConfig
from core.data.dataset import open_dataset
from core.models.backbones import create_model
from core.plan import estimate
from tests.conftest import TEST_THREADS


def test_the_step_timing_leaves_out_the_warm_up_steps(monkeypatch):
    """On a clock that only the network moves, warm-up steps take 100 s and the others 1 s: the timed steps must
    be exactly the 1 s ones (a wall clock would make this depend on the machine's load)."""
    cfg = TrainConfig(backbone="test_efficientnet", weights="random", batch_size=2, threads=TEST_THREADS, freeze="full")
    model = create_model(cfg, 3)
    forward, now, calls = model.forward, [0.0], []

    def forward_on_the_clock(x):  # the first steps of a real model are slow (allocation, kernel choice)
        calls.append(1)
        now[0] += 100.0 if len(calls) <= estimate.WARMUP_STEPS else 1.0
        return forward(x)
    model.forward = forward_on_the_clock
    monkeypatch.setattr(estimate.time, "perf_counter", lambda: now[0])
    steps = estimate._step_seconds(model, cfg, 32, torch.device("cpu"))
    assert len(calls) == estimate.WARMUP_STEPS + estimate.STEPS
    assert steps == [1.0] * estimate.STEPS


def test_the_estimate_states_a_range_around_its_figure(tiny_folder):
    cfg = TrainConfig(data=str(tiny_folder), backbone="test_efficientnet", weights="random", img_size=32,
                      freeze="partial", epochs=2, batch_size=4, threads=TEST_THREADS)
    est = estimate.estimate_run(cfg, open_dataset(tiny_folder))
    assert 0 < est.low_seconds <= est.total_seconds <= est.high_seconds
    if est.high_seconds > est.low_seconds:
        assert " to " in est.describe().split("(")[0]
