"""FGSM and PGD-L∞ through torchattacks (Kim, arXiv 2010.01950).

torchattacks works on any module returning one tensor, so the same attacks run on class logits
(cross-entropy over images) and on mask logits (cross-entropy over pixels). Inputs in [0, 1].
"""

from __future__ import annotations

import torchattacks
from torch import nn

from robustbench_wbc.attacks.base import AttackSpec, register_attack

# 8/255 is RobustBench's CIFAR budget; the smaller ones show where standard-trained models break.
LINF_EPS = (1 / 255, 2 / 255, 4 / 255, 8 / 255)


@register_attack(norm="linf", backend="torchattacks", default_eps=LINF_EPS)
def fgsm(model: nn.Module, spec: AttackSpec):
    """FGSM (Goodfellow et al., ICLR 2015, arXiv 1412.6572): one signed-gradient step of size eps."""
    return torchattacks.FGSM(model, eps=spec.eps)


@register_attack(norm="linf", backend="torchattacks", default_eps=LINF_EPS,
                 steps=10, rel_stepsize=0.25, random_start=True)
def pgd(model: nn.Module, spec: AttackSpec):
    """PGD-L∞ (Madry et al., ICLR 2018, arXiv 1706.06083): steps of eps·rel_stepsize from a random start."""
    p = spec.params
    return torchattacks.PGD(model, eps=spec.eps, alpha=spec.eps * p["rel_stepsize"],
                            steps=int(p["steps"]), random_start=bool(p["random_start"]))
