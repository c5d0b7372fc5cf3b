"""Two example attacks: the plugin contract in its two forms.

* a factory ``f(model, eps, **params)`` returning ``(images, labels) -> adv_images``;
* a ``torchattacks.Attack`` subclass whose ``__init__`` takes ``(model, eps, ...)``.

``model`` returns class logits for images in [0, 1]; the suite hands your attack only the images
still classified correctly, checks every batch you return against the declared norm and eps
(a plugin that breaks its budget makes its cells ``invalid``), and records the parameters.
"""

from __future__ import annotations

import torch
from torch import nn
from torchattacks.attack import Attack as TorchattacksAttack

from robustbench_wbc import register_attack


@register_attack("noise-linf", norm="linf", backend="example", samples=1)
def noise_linf(model: nn.Module, eps: float, samples: int):
    """Random ±eps noise per pixel (a black-box baseline); keeps the worst of `samples` draws.

    If a model loses as much accuracy to this as to PGD at the same eps, the gradient attack is
    not finding anything (or the model masks its gradients).
    """

    def attack(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        best = images.clone()
        best_loss = torch.full((len(images),), -float("inf"))
        for _ in range(int(samples)):
            adv = (images + eps * torch.sign(torch.rand_like(images) - 0.5)).clamp(0, 1)
            with torch.no_grad():
                loss = nn.functional.cross_entropy(model(adv), labels, reduction="none")
            better = loss > best_loss
            best[better], best_loss[better] = adv[better], loss[better]
        return best

    return attack


@register_attack("fgsm-ll", norm="linf", backend="example")
class FGSMLeastLikely(TorchattacksAttack):
    """Least-likely-class FGSM (Kurakin et al., ICLR 2017, arXiv 1611.01236): one step toward the least likely class."""

    def __init__(self, model: nn.Module, eps: float) -> None:
        super().__init__("FGSMLeastLikely", model)
        self.eps = eps

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().requires_grad_(True)
        logits = self.get_logits(images)
        least_likely = logits.argmin(1)
        loss = nn.functional.cross_entropy(logits, least_likely)
        grad = torch.autograd.grad(loss, images)[0]
        return (images - self.eps * grad.sign()).clamp(0, 1).detach()
