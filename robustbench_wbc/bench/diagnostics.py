"""Model checks run once per (model, split) on the clean images: signs that an attack's number may lie.

They feed the report's ``unreliable`` flag (:mod:`robustbench_wbc.report.reliability`), in the
manner of AutoAttack's checks (Croce & Hein, flags_doc): a gradient that is exactly zero (gradient
masking: white-box attacks have nothing to follow), outputs that change between two forward passes
of the same images (randomness: a single attacked draw overstates robustness), and logits that
are probabilities (softmax inside the model: cross-entropy saturates and its gradient vanishes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustbench_wbc.bench.batching import map_batches
from robustbench_wbc.device import model_device

CHECK_IMAGES = 64  # enough to see a systematic effect; the checks cost two forward and one backward pass


def model_checks(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 masks: torch.Tensor | None) -> dict[str, float]:
    """Gives ``zero_grad_fraction``, ``output_randomness`` and ``probability_outputs`` on the first images.

    The first :data:`CHECK_IMAGES` images are checked in one batch, or in smaller ones where that
    runs out of memory (:func:`~robustbench_wbc.bench.batching.map_batches`); the numbers are the
    same either way (a fraction, a maximum, an all).
    """
    n = min(len(images), CHECK_IMAGES)
    dev = model_device(model)
    model.eval()
    params = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in params:
        p.requires_grad_(False)

    def batch(start: int, stop: int) -> tuple[int, float, bool | None]:
        x, y = images[start:stop].to(dev), labels[start:stop].to(dev)
        m = None if masks is None else masks[start:stop].to(dev).long()
        xr = x.detach().clone().requires_grad_(True)
        out = model(xr)
        loss = torch.zeros((), device=dev)
        if "logits" in out:
            loss = loss + F.cross_entropy(out["logits"], y, reduction="sum")
        if "mask" in out and m is not None:
            loss = loss + F.cross_entropy(out["mask"], m, reduction="none").flatten(1).mean(1).sum()
        grad = torch.autograd.grad(loss, xr, allow_unused=True)[0] if loss.requires_grad else None
        with torch.no_grad():
            again = model(x)
        zero = len(x) if grad is None else int((grad.flatten(1).abs().amax(1) == 0).sum())
        randomness = max(((out[k].detach() - again[k]).abs().max().item() for k in out), default=0.0)
        probs = None
        if "logits" in out:
            z = out["logits"].detach()
            ones = torch.ones(len(z), device=z.device)
            probs = bool(((z >= 0) & (z <= 1)).all()) and bool(torch.allclose(z.sum(1), ones, atol=1e-4))
        return zero, randomness, probs

    try:
        parts = map_batches(batch, n, CHECK_IMAGES, "model checks")
    finally:
        for p, g in params:
            p.requires_grad_(g)
    checks = {"zero_grad_fraction": sum(z for z, _, _ in parts) / n if n else 1.0,
              "output_randomness": max(r for _, r, _ in parts) if parts else 0.0}
    if parts and parts[0][2] is not None:
        checks["probability_outputs"] = float(all(p for _, _, p in parts))
    return checks
