"""Intervals over images: each number in the tidy table carries its 95 % interval and its ``n``.

* a proportion (accuracy, robust accuracy, attack success rate, a class's recall): the Wilson score
  interval (Wilson 1927; Brown, Cai & DasGupta 2001 recommend it over the normal approximation,
  which collapses at 0 and 1 — where robust accuracies often sit);
* a mean of per-image values in [0, 1] or of perturbation norms (Dice, IoU, mean ‖δ‖): the
  percentile bootstrap over images, 2,000 resamples, seeded, so the same numbers give the same
  interval;
* balanced accuracy: the same bootstrap, stratified by class (each class resampled within itself,
  so every class stays present).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from robustbench_wbc.metrics import balanced_accuracy

Z95 = 1.959963984540054
BOOTSTRAP = 2000
SEED = 0


@dataclass(frozen=True)
class Measure:
    """A number with the images it was computed over and its 95 % interval."""

    value: float
    n: int
    ci_low: float
    ci_high: float


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Gives the Wilson score interval of ``k`` successes in ``n``; ``(nan, nan)`` when ``n`` is 0.

    >>> [round(v, 4) for v in wilson(0, 20)]
    [0.0, 0.1611]
    >>> [round(v, 4) for v in wilson(10, 20)]
    [0.2993, 0.7007]
    """
    if n == 0:
        return math.nan, math.nan
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # the interval always holds p; at p = 0 or 1 float rounding could leave it a hair outside
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def proportion(hits: torch.Tensor) -> Measure:
    """Gives the share of true values in ``hits`` with its Wilson interval."""
    n, k = int(hits.numel()), int(hits.sum())
    lo, hi = wilson(k, n)
    return Measure(k / n if n else math.nan, n, lo, hi)


def mean(values: torch.Tensor) -> Measure:
    """Gives the mean of per-image ``values`` with its percentile-bootstrap interval."""
    v = values.detach().double().cpu().numpy()
    n = len(v)
    if n == 0:
        return Measure(math.nan, 0, math.nan, math.nan)
    rng = np.random.default_rng(SEED)
    means = v[rng.integers(0, n, size=(BOOTSTRAP, n))].mean(1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return Measure(float(v.mean()), n, float(lo), float(hi))


def balanced(hits: torch.Tensor, labels: torch.Tensor) -> Measure:
    """Gives the balanced accuracy (mean per-class recall) with a class-stratified bootstrap interval."""
    h = hits.detach().cpu().numpy().astype(float)
    y = labels.detach().cpu().numpy()
    classes = np.unique(y)
    if not len(classes):
        return Measure(math.nan, 0, math.nan, math.nan)
    rng = np.random.default_rng(SEED)
    per_class = []
    for c in classes:
        hc = h[y == c]
        per_class.append(hc[rng.integers(0, len(hc), size=(BOOTSTRAP, len(hc)))].mean(1))
    boot = np.mean(per_class, axis=0)
    value = balanced_accuracy(hits.detach().cpu().bool(), labels.detach().cpu())  # the one definition of the value
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return Measure(value, len(h), float(lo), float(hi))
