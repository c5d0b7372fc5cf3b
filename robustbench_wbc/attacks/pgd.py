"""PGD (Madry et al., ICLR 2018, arXiv 1706.06083) in L∞ and L2 on the suite's engine.

From a random start in the ball, ``steps`` steps of size ``rel_stepsize · eps`` (the sign of the
gradient for L∞, its unit-L2 direction for L2), each projected back onto the ball and [0, 1]. The
defaults (10 steps of eps/4) cover 2.5 eps, Madry's rule. Against ``seg`` the loss is SegPGD's by
default (Gu et al. 2022; the preset ``pgd-pixelce`` is the weaker plain pixel cross-entropy).
Images in [0, 1], NCHW.
"""

from __future__ import annotations

import torch

from robustbench_wbc.attacks.base import register_attack
from robustbench_wbc.attacks.engine import Attack, _unit


class _PGD(Attack):
    chunked = True  # runs through iterate

    def __init__(self, model, eps: float, target: str = "cls", steps: int = 10, rel_stepsize: float = 0.25,
                 random_start: bool = True, seg_loss: str = "segpgd") -> None:
        super().__init__(model, eps, target, seg_loss)
        if int(steps) < 1 or not rel_stepsize > 0:
            raise ValueError(f"PGD needs steps ≥ 1 and rel_stepsize > 0, got {steps}, {rel_stepsize}")
        self.steps, self.alpha, self.random = int(steps), float(rel_stepsize) * self.eps, bool(random_start)

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def perturb(self, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        start = self.random_start(x) if self.random else x
        return self.iterate(x, y, m, start, self.steps, lambda xa, g: xa + self.alpha * self.direction(g))


@register_attack("pgd", norm="linf", steps=10, rel_stepsize=0.25, random_start=True, seg_loss="segpgd")
class PGD(_PGD):
    """PGD-L∞ (Madry et al. 2018): signed steps of eps·rel_stepsize from a random start; SegPGD loss on masks."""

    norm = "linf"

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        return g.sign()


@register_attack("pgd-l2", norm="l2", steps=10, rel_stepsize=0.25, random_start=True, seg_loss="segpgd")
class PGDL2(_PGD):
    """PGD-L2 (Madry et al. 2018): unit-gradient steps of eps·rel_stepsize from a random start."""

    norm = "l2"

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        return _unit(g)
