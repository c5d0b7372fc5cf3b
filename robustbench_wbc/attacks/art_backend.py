"""ART, the Adversarial Robustness Toolbox (Nicolae et al., arXiv 1807.01069), as a backend: ``pgd@art``, …

The library's own implementations, behind the suite's checks, to cross-check the engine's attacks in
the same table. They see the class logits only (ART has no segmentation wrapper). The head is
wrapped in ART's ``PyTorchClassifier`` with ``clip_values=(0, 1)`` (without it ART never clips to
[0, 1]), the number of classes probed from the logits, cross-entropy as the loss; ART works in
numpy, and its results come back as float32 tensors on the images' device. ART draws its random
starts from numpy's global generator; it is seeded from torch's for each call (and restored after),
so ``torch.manual_seed`` makes these attacks reproducible too.

How ART's versions differ from the suite's and the originals':

* ``pgd@art`` / ``pgd-l2@art`` keep the last iterate, not the first adversarial (no early exit).
* ``cw-l2@art`` is ``CarliniL2Method``, with the binary search over ``c`` (unlike torchattacks' CW),
  numpy-based and slow. CW is a minimal-norm attack: its result is projected onto the eps L2 ball
  and [0, 1], so an example found beyond eps may stop being adversarial.
* ``autoattack@art`` is a *different attack set* from the original AutoAttack: APGD-CE and
  APGD-DLR with 5 restarts each, DeepFool instead of FAB, Square with 5 restarts; its APGD keeps
  the last iterate, not the best, and gives up when every cross-entropy underflows to 0 (false
  robustness on very confident models). It needs the extra package ``multiprocess``, and on CPU it
  is slow (Square decides the bill for robust models). ART accepts a sub-attack's result up to
  eps/(1 − 1e-4); the exact projection below can undo such a near-miss.

ART's float32 arithmetic may put an L∞ result a hair past ``x ± eps``; every result is projected
exactly onto the threat model (see :func:`robustbench_wbc.attacks.engine.project`), a repair of rounding that moves no pixel by
more than the float32 rounding error of ``x ± eps`` (except for CW and AutoAttack's near-misses, above).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from robustbench_wbc.attacks.base import register_attack
from robustbench_wbc.attacks.engine import project

MULTIPROCESS_HINT = "pip install multiprocess"


@contextlib.contextmanager
def _rng_from_torch() -> Iterator[None]:
    """Seeds numpy's and Python's global generators (ART draws from them) from torch's, then restores them.

    So ``torch.manual_seed`` makes an ART attack reproducible, as it does the suite's own attacks.
    """
    np_state, py_state = np.random.get_state(), random.getstate()
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    np.random.seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def _classifier(model: nn.Module, images: torch.Tensor, nb_classes: int):
    """Wraps the head in ART's ``PyTorchClassifier`` on the images' device."""
    from art.estimators.classification import PyTorchClassifier

    def make():
        return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(images.shape[1:]),
                                 nb_classes=nb_classes, clip_values=(0.0, 1.0),
                                 device_type="gpu" if images.is_cuda else "cpu")

    if images.is_cuda:
        with torch.cuda.device(images.device):  # ART takes the current CUDA device
            return make()
    return make()


def _art_attack(model: nn.Module, eps: float, norm: str, make: Callable):
    """Gives ``(images, labels) -> adv_images`` running the ART attack ``make(classifier)``.

    The classifier and the attack are built on the first call (the number of classes is probed from
    the logits then), and again when the image shape or device changes.
    """
    cache: dict = {}

    def run(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        key = (tuple(images.shape[1:]), images.device)
        if key not in cache:
            with torch.no_grad():
                nb_classes = int(model(images[:1]).shape[1])
            cache.clear()
            cache[key] = make(_classifier(model, images, nb_classes))
        x = images.detach().float().cpu().numpy()
        y = labels.detach().long().cpu().numpy()
        with _rng_from_torch():
            adv = cache[key].generate(x=x, y=y)
        adv = torch.from_numpy(np.ascontiguousarray(adv, dtype=np.float32)).reshape(images.shape).to(images.device)
        return project(adv, images.detach().float(), norm, eps)

    return run


@register_attack("fgsm@art", norm="linf", backend="art", batch_size=32)
def fgsm_art(model: nn.Module, eps: float, batch_size: int):
    """ART's FGSM (FastGradientMethod): one signed-gradient step of size eps."""
    from art.attacks.evasion import FastGradientMethod

    return _art_attack(model, eps, "linf", lambda clf: FastGradientMethod(
        clf, norm=np.inf, eps=eps, eps_step=eps, batch_size=int(batch_size)))


def _pgd(model: nn.Module, eps: float, norm: str, steps: int, rel_stepsize: float, random_start: bool,
         batch_size: int):
    from art.attacks.evasion import ProjectedGradientDescent

    if int(steps) < 1 or not rel_stepsize > 0:
        raise ValueError(f"PGD needs steps ≥ 1 and rel_stepsize > 0, got {steps}, {rel_stepsize}")
    return _art_attack(model, eps, norm, lambda clf: ProjectedGradientDescent(
        clf, norm=np.inf if norm == "linf" else 2, eps=eps, eps_step=eps * float(rel_stepsize),
        max_iter=int(steps), num_random_init=int(bool(random_start)), batch_size=int(batch_size), verbose=False))


@register_attack("pgd@art", norm="linf", backend="art", steps=10, rel_stepsize=0.25, random_start=True,
                 batch_size=32)
def pgd_art(model: nn.Module, eps: float, steps: int, rel_stepsize: float, random_start: bool, batch_size: int):
    """ART's PGD-L∞ (ProjectedGradientDescent): steps of eps·rel_stepsize from a random start."""
    return _pgd(model, eps, "linf", steps, rel_stepsize, random_start, batch_size)


@register_attack("pgd-l2@art", norm="l2", backend="art", steps=10, rel_stepsize=0.25, random_start=True,
                 batch_size=32)
def pgd_l2_art(model: nn.Module, eps: float, steps: int, rel_stepsize: float, random_start: bool, batch_size: int):
    """ART's PGD-L2 (ProjectedGradientDescent): steps of eps·rel_stepsize from a random start."""
    return _pgd(model, eps, "l2", steps, rel_stepsize, random_start, batch_size)


@register_attack("cw-l2@art", norm="l2", backend="art", confidence=0.0, learning_rate=0.01, max_iter=10,
                 binary_search_steps=10, initial_const=0.01, batch_size=32)
def cw_l2_art(model: nn.Module, eps: float, confidence: float, learning_rate: float, max_iter: int,
              binary_search_steps: int, initial_const: float, batch_size: int):
    """ART's CW-L2 (CarliniL2Method, binary search over c), its result projected onto the eps ball."""
    from art.attacks.evasion import CarliniL2Method

    return _art_attack(model, eps, "l2", lambda clf: CarliniL2Method(
        clf, confidence=float(confidence), learning_rate=float(learning_rate), max_iter=int(max_iter),
        binary_search_steps=int(binary_search_steps), initial_const=float(initial_const),
        batch_size=int(batch_size), verbose=False))


@register_attack("autoattack@art", norm="linf", backend="art", rel_stepsize=2.0, max_iter=100, restarts=5,
                 square_queries=5000, batch_size=32)
def autoattack_art(model: nn.Module, eps: float, rel_stepsize: float, max_iter: int, restarts: int,
                   square_queries: int, batch_size: int):
    """ART's AutoAttack (APGD-CE, APGD-DLR, DeepFool, Square: not the original's attack set)."""
    try:
        import multiprocess  # noqa: F401  (ART's AutoAttack imports it in generate(), even without a pool)
    except ImportError as err:
        raise ImportError(f"autoattack@art needs ART's extra package 'multiprocess', which is not installed; "
                          f"install it with `{MULTIPROCESS_HINT}`") from err
    from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, DeepFool, SquareAttack

    def make(clf):
        # ART's default attack list, built here only to pass verbose=False (its own shows progress bars);
        # eps_step is APGD's initial step, 2·eps in the original AutoAttack (ART's default: a fixed 0.1).
        step, n = eps * float(rel_stepsize), int(batch_size)
        apgd = [AutoProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=step, max_iter=int(max_iter),
                                             targeted=False, nb_random_init=int(restarts), batch_size=n,
                                             loss_type=loss, verbose=False)
                for loss in ("cross_entropy", "difference_logits_ratio")]
        attacks = [*apgd, DeepFool(clf, max_iter=int(max_iter), epsilon=1e-3, nb_grads=10, batch_size=n, verbose=False),
                   SquareAttack(clf, norm=np.inf, max_iter=int(square_queries), eps=eps, p_init=0.8,
                                nb_restarts=int(restarts), batch_size=n, verbose=False)]
        return AutoAttack(clf, norm=np.inf, eps=eps, eps_step=step, attacks=attacks, batch_size=n)

    return _art_attack(model, eps, "linf", make)
