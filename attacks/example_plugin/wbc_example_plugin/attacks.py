"""Random-sign noise at the L∞ budget: the baseline every gradient attack must beat.

If a model loses as much accuracy to this as to PGD at the same eps, the gradient attack is not
finding anything (or the model masks its gradients).
"""

from __future__ import annotations

import torch
from torch import nn

from robustbench_wbc.attacks import AttackSpec, register_attack


@register_attack(norm="linf", backend="example", default_eps=(4 / 255, 8 / 255), samples=1)
def noise_linf(model: nn.Module, spec: AttackSpec):
    """Random ±eps noise per pixel (a black-box baseline); keeps the worst of `samples` draws."""

    def attack(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        best = images.clone()
        best_loss = torch.full((len(images),), -float("inf"), device=images.device)
        for _ in range(int(spec.params["samples"])):
            noise = spec.eps * torch.sign(torch.rand_like(images) - 0.5)
            adv = (images + noise).clamp(0, 1)
            with torch.no_grad():
                loss = nn.functional.cross_entropy(model(adv), targets, reduction="none")
            if loss.ndim > 1:  # a segmentation head: mean over pixels
                loss = loss.flatten(1).mean(1)
            better = loss > best_loss
            best[better], best_loss[better] = adv[better], loss[better]
        return best

    return attack
