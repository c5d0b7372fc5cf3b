"""torchattacks (Kim, arXiv 2010.01950) as a backend: ``fgsm@torchattacks``, ``pgd@torchattacks``, …

The library's own implementations, behind the suite's checks, to cross-check the engine's attacks
in the same table. They see one head (class logits; FGSM and PGD also the mask logits, whose
per-pixel cross-entropy they climb). Inputs in [0, 1].

``cw-l2@torchattacks`` is the library's CW as it is — a fixed ``c``, a margin wrong for negative
logits, and tanh-space pixels at 0 or 1 that cannot move — kept to show the difference with the
suite's ``cw-l2``. ``autoattack@torchattacks`` is the library's port of AutoAttack: its APGD,
APGD-T and FAB run 10 iterations, not the original's 100 — a weaker attack than ``autoattack``.
torchattacks is imported when one of them is built, not when the suite starts (it pulls in scipy).
"""

from __future__ import annotations

from torch import nn

from robustbench_wbc.attacks.base import register_attack
from robustbench_wbc.attacks.engine import project
from robustbench_wbc.data.synth import CLASSES


@register_attack("fgsm@torchattacks", norm="linf", backend="torchattacks", targets=("cls", "seg"))
def fgsm_torchattacks(model: nn.Module, eps: float):
    """torchattacks FGSM: one signed-gradient step of size eps."""
    import torchattacks

    return torchattacks.FGSM(model, eps=eps)


@register_attack("pgd@torchattacks", norm="linf", backend="torchattacks", targets=("cls", "seg"),
                 steps=10, rel_stepsize=0.25, random_start=True)
def pgd_torchattacks(model: nn.Module, eps: float, steps: int, rel_stepsize: float, random_start: bool):
    """torchattacks PGD-L∞: steps of eps·rel_stepsize from a random start."""
    import torchattacks

    return torchattacks.PGD(model, eps=eps, alpha=eps * rel_stepsize, steps=int(steps), random_start=bool(random_start))


@register_attack("pgd-l2@torchattacks", norm="l2", backend="torchattacks", targets=("cls", "seg"),
                 steps=10, rel_stepsize=0.25, random_start=True)
def pgd_l2_torchattacks(model: nn.Module, eps: float, steps: int, rel_stepsize: float, random_start: bool):
    """torchattacks PGD-L2: steps of eps·rel_stepsize from a random start."""
    import torchattacks

    return torchattacks.PGDL2(model, eps=eps, alpha=eps * rel_stepsize, steps=int(steps),
                              random_start=bool(random_start))


@register_attack("cw-l2@torchattacks", norm="l2", backend="torchattacks", c=1.0, kappa=0.0, steps=100, lr=0.01)
def cw_l2_torchattacks(model: nn.Module, eps: float, c: float, kappa: float, steps: int, lr: float):
    """torchattacks CW-L2 as it is (fixed c, no search), its result projected onto the eps ball."""
    import torchattacks

    attack = torchattacks.CW(model, c=c, kappa=kappa, steps=int(steps), lr=lr)

    return lambda images, labels: project(attack(images, labels), images, "l2", eps)


@register_attack("autoattack@torchattacks", norm="linf", backend="torchattacks", version="standard", seed=0)
def autoattack_torchattacks(model: nn.Module, eps: float, version: str, seed: int):
    """torchattacks' port of AutoAttack (APGD/APGD-T/FAB at 10 iterations: weaker than the original)."""
    import torchattacks

    return torchattacks.AutoAttack(model, norm="Linf", eps=eps, version=version, n_classes=_n_classes(model),
                                   seed=int(seed))


def _n_classes(model: nn.Module) -> int:
    """Gives the number of classes: the suite's (every model it scores has these logits)."""
    return len(CLASSES)
