"""`freeze: auto`: look at the training images, then plan two candidates and say why; the better one on validation
is delivered (core/workflows/auto.py runs them).

The rule, in the paragraph the user reads (measurements: docs/decisions.md, `python -m bench.auto`):
- First a linear probe on the backbone's pretrained features, trained for real on cached features (seconds after
  the first pass) and scored on the validation images.
- Then partial fine-tuning of the last stages, starting from that probe's head (LP-FT: Kumar et al. 2022,
  "Fine-Tuning can Distort Pretrained Features"), for at most FT_EPOCHS epochs, stopped after FT_PATIENCE
  epochs that do not improve its own validation loss. The probe is its starting point and counts as a candidate:
  the fine-tuned weights are delivered only when they beat it on validation.
- Every image is read at the backbone's own input size, small ones upsampled: its pretrained features work best
  there (cifar10's 32 px images: 82.0% test at 224 px against 79.3% at 96 px, in 3x the time; docs/decisions.md).
- A time budget shortens the epochs to fit the estimate (core/plan/estimate.py); when even MIN_EPOCHS of
  fine-tuning do not fit, the probe alone is trained.
The look at the data (a quick cross-validated ridge probe, the backbone ranking, the image sizes) reads training
images only: validation images score the candidates, and a decision that saw them would make that score optimistic.
The backbone stays the one chosen; the ranking says when another offline backbone would do clearly better.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from core.config import TrainConfig, field_default
from core.data.dataset import Dataset
from core.models import init_from
from core.models.backbones import CATALOGUE, OFFLINE
from core.plan.estimate import Estimate, estimate_run
from core.plan.ranking import BackboneScore, rank_backbones

SMALL_IMAGES = 0.75  # a median shorter side below this share of the input size: the paragraph says upsampled
MIN_EPOCHS = 2
# A probe's head trains on cached features in milliseconds per epoch, so it can afford more epochs and a larger step
# than fine-tuning: on standardised Lite0 features 20 epochs at 3e-3 reached 89.2% on magnetic tiles against 70.9%
# for the fine-tuning defaults (8 at 1e-3), and as well on the other dev sets (`python -m bench.probe_head`).
PROBE_EPOCHS, PROBE_LR = 20, 3e-3
# Fine-tuning after the probe (LP-FT): up to 6 epochs, stopped after 2 that do not improve its own best validation
# loss. Its first epochs (the learning rate's warm-up and peak) often score below the probe before the later ones
# pass it: on pbc_blood 81.0% -> 88.5% -> 93.0% from a probe at 87.0%; on cifar10 the validation loss went 1.12,
# 0.94, 0.90, 0.73, 0.66, 0.66 (the run's metrics.jsonl). Patience counted against the probe's loss stopped cifar10
# after 2 epochs, neither below the probe, and delivered the probe (75.3% test) where 6 reach 82.0% (bench.auto,
# docs/measurements.md).
FT_EPOCHS, FT_PATIENCE = 6, 2
CLEARLY_BETTER = 0.02  # a ranked backbone this much better than the chosen one is pointed out


@dataclass
class Advice:
    config: TrainConfig  # concrete: freeze is never "auto" here
    reasons: list[str] = field(default_factory=list)
    ranking: list[BackboneScore] = field(default_factory=list)
    estimate: Estimate | None = None
    probe_first: TrainConfig | None = None  # the probe candidate trained first (LP-FT); None when config is a probe

    @property
    def paragraph(self) -> str:
        return " ".join(self.reasons)


def advise(cfg: TrainConfig, ds: Dataset, progress: Callable[[str, int, int], None] | None = None,
           should_stop: Callable[[], bool] = lambda: False, rank_all: bool = True) -> Advice:
    """The concrete config for cfg on this dataset (cfg itself when freeze is not auto), with its reasons.

    rank_all=False scores only the chosen backbone: all the decision needs, and what training does (ranking the
    other offline backbones cost 10-25 s the first time on the dev sets; `plan` and the Model page show it)."""
    cfg = init_from.resolve(cfg)  # started from a run: its backbone's features are what a probe would train on
    if cfg.freeze != "auto":
        return Advice(cfg, [f"Freezing '{cfg.freeze}' as chosen."], estimate=estimate_run(cfg, ds))
    candidates = OFFLINE if cfg.weights == "bundled" and rank_all and not cfg.init_from else (cfg.backbone,)
    ranking = rank_backbones(ds, cfg, candidates if cfg.backbone in candidates else (cfg.backbone,),
                             progress, should_stop)
    own = next(s for s in ranking if s.backbone == cfg.backbone)
    reasons = [f"Looked at {own.images} of the {len(ds.train)} training images ({len(ds.classes)} classes); the "
               f"validation images are kept for scoring the candidates."]
    if cfg.init_from:
        reasons.append(f"Starting from run {init_from.read_source(cfg.init_from, weights=False).name}: "
                       f"'pretrained features' below are that run's.")
    elif cfg.weights != "bundled":
        reasons.append(f"'Pretrained features' below are those of the weights this run starts from: "
                       f"{init_from.origin(cfg.backbone, cfg.weights, cfg.seed)}.")
    chosen = cfg.replace(freeze="partial")
    if cfg.epochs == field_default("epochs"):
        chosen = chosen.replace(epochs=FT_EPOCHS)
    if cfg.early_stopping == field_default("early_stopping"):
        chosen = chosen.replace(early_stopping=FT_PATIENCE)
    reasons += _input_size_reasons(chosen, ds)
    est = estimate_run(chosen, ds)
    chosen, est, budget_reasons = _fit_budget(chosen, ds, est, cfg)
    probe_first = None
    if chosen.freeze == "partial":
        probe_first = _as_probe(chosen.replace(epochs=cfg.epochs, early_stopping=cfg.early_stopping))[0]
        probe_est = estimate_run(probe_first, ds)
        est = dataclasses.replace(est, setup_seconds=est.setup_seconds + probe_est.total_seconds,
                                  **{k: getattr(est, k) + probe_est.total_seconds
                                     for k in ("total_seconds", "low_seconds", "high_seconds")})
        reasons.append(
            f"Two candidates, the better on validation delivered: first a linear probe on {cfg.backbone}'s "
            f"pretrained features (a quick ridge probe on the training images reaches {own.probe_accuracy:.1%} in "
            f"5-fold cross-validation), then partial fine-tuning of the last {cfg.trainable_stages} stages starting "
            f"from the probe's head (LP-FT), up to {chosen.epochs} epochs, stopped when validation stops improving. "
            f"The fine-tuned weights are delivered only if they beat the probe on validation.")
    reasons += budget_reasons
    best = ranking[0]
    if best.backbone != cfg.backbone and best.probe_accuracy - own.probe_accuracy >= CLEARLY_BETTER:
        reasons.append(f"{best.backbone} scores {best.probe_accuracy:.1%} on the same test; choose it on the Model "
                       f"page (or --backbone) if the extra time is worth it.")
    upper = (f" if all {chosen.epochs} fine-tuning epochs run (sooner if {chosen.early_stopping} in a row do not "
             f"improve validation: all ran on five of the six dev sets)" if probe_first and chosen.early_stopping
             else "")
    reasons.append(f"Estimated time here{upper}: {est.describe()}.")
    return Advice(chosen, reasons, ranking, est, probe_first)


def _as_probe(cfg: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """The probe regime with the probe's own epochs and learning rate where the user left the defaults."""
    if cfg.epochs != field_default("epochs") or cfg.lr != field_default("lr"):
        return cfg.replace(freeze="probe"), []
    return cfg.replace(freeze="probe", epochs=PROBE_EPOCHS, lr=PROBE_LR), [
        f"The head trains on cached features (milliseconds per epoch): {PROBE_EPOCHS} epochs at learning rate "
        f"{PROBE_LR:g}."]


def _input_size_reasons(cfg: TrainConfig, ds: Dataset) -> list[str]:
    """What the image sizes say about the input size, which the advisor never changes (the backbone's own, the
    user's or the source run's): the user should know when small images are upsampled."""
    if cfg.init_from and not cfg.img_size:
        return ["The input size follows the run this one starts from."]
    if cfg.img_size:
        return []
    native = next((b.input_size for b in CATALOGUE if b.name == cfg.backbone), 224)
    sides = []
    for s in ds.train[::max(1, len(ds.train) // 32)][:32]:
        try:
            with Image.open(s.path) as img:  # the header only
                sides.append(min(img.size))
        except OSError:
            continue
    if not sides:
        return []
    median = statistics.median(sides)
    if median >= SMALL_IMAGES * native:
        return [f"Images are large enough for the backbone's {native} px input (median shorter side {median:.0f} "
                f"px)."]
    return [f"The images are small (median shorter side {median:.0f} px): upsampled to the backbone's {native} px "
            f"input, where its pretrained features work best (on 32 px images about 3 points more accurate than "
            f"96 px, in 3x the time; a smaller input size on the Model page trades that back)."]


def _fit_budget(cfg: TrainConfig, ds: Dataset, est: Estimate,
                user: TrainConfig) -> tuple[TrainConfig, Estimate, list[str]]:
    """cfg shortened to the user's time budget, or the probe (with the settings the user chose) when even
    MIN_EPOCHS of fine-tuning do not fit."""
    budget = cfg.budget_min * 60
    if not budget or est.total_seconds <= budget or cfg.freeze == "probe":
        return cfg, est, []
    epochs = int((budget - est.setup_seconds) // max(est.seconds_per_epoch, 1e-6))
    if epochs >= MIN_EPOCHS:
        shorter = cfg.replace(epochs=min(epochs, cfg.epochs))
        return shorter, estimate_run(shorter, ds), [f"{cfg.epochs} epochs would take longer than the {cfg.budget_min:g}"
                                                   f" minute budget: {shorter.epochs} epochs."]
    probe, probe_reasons = _as_probe(cfg.replace(epochs=user.epochs, early_stopping=user.early_stopping))
    return probe, estimate_run(probe, ds), [f"Not even {MIN_EPOCHS} epochs of fine-tuning fit the "
                                            f"{cfg.budget_min:g} minute budget: probe instead.", *probe_reasons]
