"""Calibration: how far a model's confidence can be trusted, and temperature scaling to repair it.

Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks") divides the logits by one
number T fitted on validation by minimising the negative log-likelihood; top-1 predictions never change. The
expected calibration error (ECE) is the image-weighted gap between confidence and accuracy over 15 equal-width
confidence bins, as in that paper. Plain numpy and torch: no plotting here (the reliability diagram is data).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

BINS = 15
MIN_FIT_IMAGES = 100  # below this the fitted temperature is noisy (a warning, not a refusal)
T_RANGE = (0.05, 20.0)


@dataclass(frozen=True)
class Calibration:
    """What RunSummary.calibration holds (as a dict): the temperature and the validation figures behind it."""

    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    num: int  # validation images the fit used
    bins: int = BINS
    warning: str = ""
    reliability_before: list[dict] = field(default_factory=list)
    reliability_after: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def logits_from_probs(probs: np.ndarray) -> np.ndarray:
    """Log-probabilities: logits up to a per-image constant, which softmax ignores (also after dividing by T)."""
    return np.log(np.clip(probs.astype(np.float64), 1e-300, None))


def softmax_t(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    if not len(labels):
        return float("nan")
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """T minimising the validation NLL of softmax(logits / T), by L-BFGS on log T (as Guo et al.'s code)."""
    if len(labels) < 2:
        return 1.0
    z = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return float(np.clip(t, *T_RANGE)) if np.isfinite(t) else 1.0


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> list[dict]:
    """Per confidence bin: its range, images, mean confidence and accuracy (the reliability diagram's bars)."""
    conf = probs.max(1) if len(probs) else np.zeros(0)
    correct = probs.argmax(1) == labels if len(probs) else np.zeros(0, dtype=bool)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": int(mask.sum()),
                     "confidence": float(conf[mask].mean()) if mask.any() else None,
                     "accuracy": float(correct[mask].mean()) if mask.any() else None})
    return rows


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: sum over bins of (images in bin / all) * |accuracy - confidence|."""
    rows = reliability(probs, labels, bins)
    n = sum(r["count"] for r in rows)
    if not n:
        return float("nan")
    return float(sum(r["count"] / n * abs(r["accuracy"] - r["confidence"]) for r in rows if r["count"]))


def calibrate(logits: np.ndarray, labels: np.ndarray) -> Calibration:
    """Fit T on validation and report ECE and NLL before and after.

    A temperature that would raise the validation ECE is not shipped (T = 1 is kept, and the warning says so):
    NLL and ECE usually fall together, but with few images they need not, and the app shows the ECE."""
    before = softmax_t(logits, 1.0)
    t = fit_temperature(logits, labels)
    after = softmax_t(logits, t)
    warning = ""
    if len(labels) < MIN_FIT_IMAGES:
        warning = (f"The temperature was fitted on only {len(labels)} validation images (fewer than "
                   f"{MIN_FIT_IMAGES}): treat the calibrated percentages as rough.")
    if ece(after, labels) > ece(before, labels):
        t, after = 1.0, before
        warning = (warning + " " if warning else "") + ("Temperature scaling did not lower the validation "
                                                       "calibration error, so the model keeps T = 1.")
    return Calibration(t, ece(before, labels), ece(after, labels), nll(before, labels), nll(after, labels),
                       len(labels), BINS, warning, reliability(before, labels), reliability(after, labels))


def summary_calibration(probs: np.ndarray | None, labels: np.ndarray | None) -> dict | None:
    """RunSummary.calibration for a run's validation outputs: the numbers without the per-bin rows."""
    if probs is None or labels is None or len(labels) < 2:
        return None
    rep = calibrate(logits_from_probs(probs), labels).to_dict()
    return {k: v for k, v in rep.items() if not k.startswith("reliability")}
