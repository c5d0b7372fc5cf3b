"""FGSM (Goodfellow et al., ICLR 2015, arXiv 1412.6572) on the suite's engine.

One signed-gradient step of size eps from the image, L∞. Images in [0, 1], NCHW. Against ``seg``
it climbs the pixel cross-entropy, against ``joint`` both heads' balanced gradients.
"""

from __future__ import annotations

import torch

from robustbench_wbc.attacks.base import register_attack
from robustbench_wbc.attacks.engine import Attack


@register_attack("fgsm", norm="linf", seg_loss="ce")
class FGSM(Attack):
    """FGSM (Goodfellow et al. 2015): one signed-gradient step of size eps."""

    chunked = True  # runs through iterate

    def perturb(self, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        return self.iterate(x, y, m, x, 1, lambda xa, g: xa + self.eps * g.sign())
