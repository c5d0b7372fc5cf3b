"""The suite's Carlini–Wagner L2 (``cw-l2``), proven on models whose answer is known.

* A linear model with orthonormal class directions: the smallest L2 perturbation that changes the
  class of x is exactly ``min_{j≠y} (z_y − z_j) / ‖w_y − w_j‖``, and, the rows being orthogonal and
  of equal norm, it is also the optimum of CW's objective (the runner-up's boundary is the nearest).
* The same model with every logit shifted by −100: torchattacks' margin zeroes the true class's
  logit instead of masking it, so its loss is flat and it never moves; the suite's is unaffected.
* A "bright smear" model on images whose background is exactly 1.0: fooling it means darkening
  pixels. torchattacks' tanh space cannot move a pixel at 1.0; the suite's CW can.
* The tiny trained classifier through ``build_attack``: within the threat model, and robust
  accuracy falls as eps grows.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchattacks
from torch import nn

import robustbench_wbc.attacks.cw  # noqa: F401  (registers cw-l2)
from robustbench_wbc.attacks import ATTACKS, build_attack, check_threat_model
from robustbench_wbc.attacks.cw import CarliniWagnerL2
from robustbench_wbc.attacks.engine import margin
from robustbench_wbc.data import SPLITS
from robustbench_wbc.models.networks import HeadView

N_CLASSES, SHAPE = 4, (3, 8, 8)
DIM = math.prod(SHAPE)


class Linear(nn.Module):
    """``z = W x + b + shift``, W's rows orthonormal times ``scale``, b making z = shift at x = ½."""

    def __init__(self, shift: float = 0.0, scale: float = 3.0) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(DIM, N_CLASSES, generator=torch.Generator().manual_seed(0)))
        self.weight = nn.Parameter(scale * q.T.contiguous())
        self.bias = nn.Parameter(-0.5 * self.weight.detach().sum(1))
        self.shift = shift

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": x.flatten(1) @ self.weight.T + self.bias + self.shift}


def linear_images(n: int = 12) -> torch.Tensor:
    """Images near ½ (so the box is not active), each pushed towards class ``i mod 4``."""
    q = Linear(scale=1.0).weight.detach()
    noise = 0.05 * torch.randn(n, DIM, generator=torch.Generator().manual_seed(1))
    return (0.5 + noise + 0.6 * q[torch.arange(n) % N_CLASSES]).view(n, *SHAPE)


def exact_distance(model: Linear, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The smallest L2 norm that changes the class of each image, in float64."""
    w = model.weight.detach().double()
    z = x.flatten(1).double() @ w.T + model.bias.detach().double()
    dist = (z.gather(1, y[:, None]) - z) / (w[y][:, None, :] - w[None]).norm(dim=2)
    return dist.masked_fill(torch.nn.functional.one_hot(y, N_CLASSES).bool(), math.inf).amin(1)


def l2(x: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    return (adv.double() - x.double()).flatten(1).norm(dim=1)


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)["logits"].argmax(1)


@pytest.fixture(scope="module")
def linear_case():
    model = Linear().eval()
    x = linear_images()
    y = predict(model, x)
    assert y.tolist() == [i % N_CLASSES for i in range(len(x))]  # every class is represented
    return model, x, y, exact_distance(model, x, y)


# --- 1. the exact minimum on a linear model ----------------------------------------------------
def test_cw_finds_the_exact_minimal_distance_on_a_linear_model(linear_case):
    model, x, y, dmin = linear_case
    assert ((dmin > 0.2) & (dmin < 0.6)).all()
    adv = CarliniWagnerL2(model, eps=10.0, stop_at_eps=False)(x, y, None)
    assert (predict(model, adv) != y).all()
    ratio = l2(x, adv) / dmin
    assert (ratio >= 1 - 1e-5).all(), ratio  # nothing closer than the boundary can be misclassified
    assert (ratio <= 1.03).all(), ratio  # within 3 % of the exact minimum
    assert adv.min() > 0 and adv.max() < 1  # the box was never active


@pytest.mark.parametrize("kappa", [0.5, 1.0])
def test_cw_confidence_kappa(linear_case, kappa):
    """With κ > 0 the target is margin ≥ κ: ``κ / ‖w_y − w_j‖`` further, exactly, on this model."""
    model, x, y, dmin = linear_case
    adv = CarliniWagnerL2(model, eps=10.0, stop_at_eps=False, kappa=kappa)(x, y, None)
    with torch.no_grad():
        assert (margin(model(adv)["logits"], y) >= kappa).all()
    ratio = l2(x, adv) / (dmin + kappa / (3.0 * math.sqrt(2)))  # ‖w_y − w_j‖ = scale · √2
    assert (ratio >= 1 - 1e-5).all() and (ratio <= 1.03).all(), ratio


def test_cw_budget_semantics_and_early_stop(linear_case):
    model, x, y, dmin = linear_case
    full = CarliniWagnerL2(model, eps=10.0, stop_at_eps=False)
    # an eps above every image's minimum: each image stops at its first adversarial within eps
    eps = 1.5 * dmin.max().item()
    early = CarliniWagnerL2(model, eps=eps)
    adv = early(x, y, None)
    assert (predict(model, adv) != y).all() and (l2(x, adv) <= eps).all()
    # an eps below every image's minimum: nothing is adversarial, the answer stays inside the ball
    eps = 0.9 * dmin.min().item()
    adv = CarliniWagnerL2(model, eps=eps)(x, y, None)
    assert (predict(model, adv) == y).all() and (l2(x, adv) <= eps * (1 + 1e-6)).all()
    # the smallest adversarial projected onto the ball is the point of the ball nearest the boundary
    with torch.no_grad():
        assert (margin(model(adv)["logits"], y) > margin(model(x)["logits"], y)).all()
    # deterministic
    assert torch.equal(full(x, y, None), full(x, y, None))


def test_cw_stop_at_eps_saves_passes(linear_case):
    from robustbench_wbc.attacks import PassCounter

    model, x, y, dmin = linear_case
    counts = {}
    for stop in (True, False):
        counter = PassCounter(model)
        CarliniWagnerL2(counter, eps=1.5 * dmin.max().item(), stop_at_eps=stop)(x, y, None)
        counts[stop] = counter.backward_images
    assert counts[True] < counts[False] / 3


def test_cw_needs_no_weight_gradients(linear_case):
    model, x, y, _ = linear_case
    model = Linear()
    CarliniWagnerL2(model, eps=1.0, binary_search_steps=1, steps=5)(x, y, None)
    assert all(p.grad is None for p in model.parameters())


# --- 2. negative logits -------------------------------------------------------------------------
def test_cw_right_for_negative_logits_where_torchattacks_is_not(linear_case):
    _, x, y, dmin = linear_case
    negative, positive = Linear(shift=-100.0).eval(), Linear(shift=100.0).eval()
    with torch.no_grad():
        assert (negative(x)["logits"] < 0).all() and (positive(x)["logits"] > 0).all()
    assert torch.equal(predict(negative, x), y) and torch.equal(predict(positive, x), y)

    adv = CarliniWagnerL2(negative, eps=10.0, stop_at_eps=False)(x, y, None)
    assert (predict(negative, adv) != y).all()
    ratio = l2(x, adv) / dmin
    assert (ratio >= 1 - 1e-4).all() and (ratio <= 1.03).all(), ratio

    # torchattacks' CW: all logits positive, it works (at a fixed c, further from the minimum) ...
    adv_pos = torchattacks.CW(HeadView(positive, "logits"), c=1, steps=100)(x, y)
    fooled = predict(positive, adv_pos) != y
    assert fooled.all()
    assert (l2(x, adv_pos) / dmin > 1.1).all()  # no search over c: ≥ 10 % above the minimum here
    # ... the same model shifted by −100: its margin compares z_y with 0, its loss is flat, it never moves
    adv_neg = torchattacks.CW(HeadView(negative, "logits"), c=1, steps=100)(x, y)
    assert (predict(negative, adv_neg) == y).all()
    assert torch.equal(adv_neg, x)


# --- 3. saturated pixels --------------------------------------------------------------------------
class Bright(nn.Module):
    """Two classes: ``z_0 = s · (mean(x) − tau)`` ("bright smear") against ``z_1 = 0``."""

    def __init__(self, tau: float, s: float = 10.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((DIM,), s / DIM))
        self.tau, self.s = tau, s

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z0 = x.flatten(1) @ self.weight - self.s * self.tau
        return {"logits": torch.stack([z0, torch.zeros_like(z0)], 1)}


@pytest.fixture(scope="module")
def smear_case():
    """A background at exactly 1.0 around a darker 4×4 cell; the model calls it bright."""
    n = 4
    cell = torch.zeros(n, *SHAPE, dtype=torch.bool)
    cell[..., 2:6, 2:6] = True
    x = torch.ones(n, *SHAPE)
    x[cell] = torch.linspace(0.3, 0.5, n).repeat_interleave(int(cell[0].sum()))
    model = Bright(tau=x.flatten(1).mean(1).min().item() - 0.02).eval()
    y = torch.zeros(n, dtype=torch.long)
    assert torch.equal(predict(model, x), y)
    with torch.no_grad():  # the minimum: lower every pixel equally, ‖δ‖ = z_0 / ‖∇z_0‖
        dmin = model(x)["logits"][:, 0].double() / model.weight.detach().double().norm()
    return model, x, y, cell, dmin


def test_cw_moves_saturated_pixels(smear_case):
    model, x, y, cell, dmin = smear_case
    background = ~cell
    for i in range(len(x)):  # each image at a budget 10 % above its own minimum
        eps = 1.1 * dmin[i].item()
        adv = build_attack(ATTACKS.get("cw-l2").spec(eps, "cls"), model)(x[i:i + 1], y[i:i + 1], None)
        assert predict(model, adv).item() != y[i] and l2(x[i:i + 1], adv).item() <= eps
        assert ((adv - x[i:i + 1])[background[i:i + 1]] < -1e-3).float().mean() > 0.9  # the background was darkened
    exact = CarliniWagnerL2(model, eps=10.0, stop_at_eps=False)(x, y, None)
    ratio = l2(x, exact) / dmin
    assert (ratio >= 1 - 1e-4).all() and (ratio <= 1.03).all(), ratio


def test_torchattacks_cw_cannot_move_saturated_pixels(smear_case):
    model, x, y, cell, dmin = smear_case
    background = ~cell
    # at c = 10 it fools most images, through the cell alone: twice the minimal norm
    adv = torchattacks.CW(HeadView(model, "logits"), c=10, steps=100)(x, y)
    delta = adv - x
    assert delta[background].abs().max() == 0  # tanh space: a pixel at 1.0 gets no gradient
    fooled = predict(model, adv) != y
    assert fooled.sum() >= 2
    assert (l2(x, adv)[fooled] / dmin[fooled] > 1.9).all()
    # within the budgets at which the suite's CW fools every image, the library's fools none
    for i in range(len(x)):
        backend = build_attack(ATTACKS.get("cw-l2@torchattacks").spec(1.1 * dmin[i].item(), "cls", c=10.0), model)
        assert predict(model, backend(x[i:i + 1], y[i:i + 1], None)).item() == y[i]


# --- 4. the tiny trained classifier, through build_attack -------------------------------------------
def test_cw_on_tiny_classifier(load_tiny):
    model = load_tiny("tiny_cls")
    data = SPLITS.get("synth:test").load(16, 32)
    x, y = data.images, data.labels
    entry = ATTACKS.get("cw-l2")
    assert entry.norm == "l2" and entry.targets == ("cls",) and entry.engine and entry.backend == "wbc"
    clean = (predict(model, x) == y).float().mean().item()
    robust = {}
    for eps in (0.05, 1.0):
        attack = build_attack(entry.spec(eps, "cls", binary_search_steps=3, steps=20), model)
        adv = attack(x, y, data.masks)
        check_threat_model(x, adv, "l2", eps)
        assert attack.passes[1] > 0
        robust[eps] = (predict(model, adv) == y).float().mean().item()
    assert clean > 0
    assert clean >= robust[0.05] > robust[1.0]


def test_cw_rejects_bad_parameters():
    model = Linear()
    for bad in ({"binary_search_steps": 0}, {"steps": 0}, {"initial_c": 0.0}, {"lr": -1.0}, {"kappa": -1.0},
                {"initial_c": math.inf}):
        with pytest.raises(ValueError):
            CarliniWagnerL2(model, eps=1.0, **bad)
    with pytest.raises(ValueError, match="cannot target"):
        CarliniWagnerL2(model, eps=1.0, target="seg")
