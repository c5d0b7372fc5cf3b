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

from robustbench_wbc.device import model_device

CHECK_IMAGES = 64  # enough to see a systematic effect; the checks cost two forward and one backward pass


def model_checks(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 masks: torch.Tensor | None) -> dict[str, float]:
    """Gives ``zero_grad_fraction``, ``output_randomness`` and ``probability_outputs`` on the first images."""
    dev = model_device(model)
    x, y = images[:CHECK_IMAGES].to(dev), labels[:CHECK_IMAGES].to(dev)
    m = None if masks is None else masks[:CHECK_IMAGES].to(dev).long()
    model.eval()
    params = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in params:
        p.requires_grad_(False)
    try:
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
    finally:
        for p, g in params:
            p.requires_grad_(g)
    zero = 1.0 if grad is None else (grad.flatten(1).abs().amax(1) == 0).float().mean().item()
    randomness = max(((out[k].detach() - again[k]).abs().max().item() for k in out), default=0.0)
    checks = {"zero_grad_fraction": zero, "output_randomness": randomness}
    if "logits" in out:
        z = out["logits"].detach()
        ones = torch.ones(len(z), device=z.device)
        probs = bool(((z >= 0) & (z <= 1)).all()) and bool(torch.allclose(z.sum(1), ones, atol=1e-4))
        checks["probability_outputs"] = float(probs)
    return checks
