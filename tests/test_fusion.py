"""The engine's BatchNorm-folded crafting copy (attacks/fusion.py): same function, cached, refused when it differs."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from robustbench_wbc.attacks import ATTACKS, build_attack, fusion


@pytest.fixture(scope="module")
def images():
    return torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))


class _BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 5)
        with torch.no_grad():  # running statistics far from the identity, so that folding matters
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)
            self.bn.weight.uniform_(0.5, 2)

    def forward(self, x):
        return {"logits": self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))}


class _Branchy(_BNNet):
    def forward(self, x):  # data-dependent control flow: does not trace symbolically
        if x.mean() > 2:
            x = x * 0
        return super().forward(x)


class _Noisy(_BNNet):
    def forward(self, x):  # traces, but gives other outputs each call: the copy cannot be checked equal
        logits = super().forward(x)["logits"]
        return {"logits": logits + torch.randn_like(logits)}


def test_the_copy_folds_batchnorm_and_gives_the_models_outputs(images):
    model = _BNNet().eval()
    copy = fusion.crafting_copy(model, images)
    assert copy is not None and copy is not model
    assert not fusion.has_batchnorm(copy) and fusion.has_batchnorm(model)  # the model itself is untouched
    assert all(not p.requires_grad for p in copy.parameters())
    with torch.no_grad():
        assert torch.allclose(copy(images)["logits"], model(images)["logits"], atol=1e-5)
    # the input gradient, what an attack takes, agrees too
    x = images.clone().requires_grad_(True)
    g_model = torch.autograd.grad(model(x)["logits"].sum(), x)[0]
    g_copy = torch.autograd.grad(copy(x)["logits"].sum(), x)[0]
    assert torch.allclose(g_model, g_copy, atol=1e-5)


def test_the_copy_is_cached_until_the_weights_change(images):
    model = _BNNet().eval()
    copy = fusion.crafting_copy(model, images)
    assert fusion.crafting_copy(model, images) is copy
    model.to(memory_format=torch.channels_last).to(memory_format=torch.contiguous_format)
    assert fusion.crafting_copy(model, images) is copy  # a layout round trip: same values, same copy
    with torch.no_grad():
        model.conv.weight.add_(0.1)  # an optimiser step, in place
    fresh = fusion.crafting_copy(model, images)
    assert fresh is not copy
    with torch.no_grad():
        assert torch.allclose(fresh(images)["logits"], model(images)["logits"], atol=1e-5)


def test_no_copy_where_it_cannot_help_or_cannot_be_trusted(images, caplog, monkeypatch):
    no_bn = nn.Sequential(nn.Conv2d(3, 5, 3), nn.Flatten(1)).eval()
    assert fusion.crafting_copy(no_bn, images) is None
    assert fusion.crafting_copy(_BNNet().train(), images) is None  # train mode: BatchNorm is not a fixed map
    assert fusion.crafting_copy(_Branchy().eval(), images) is None
    with caplog.at_level(logging.WARNING, logger="robustbench_wbc.attacks.fusion"):
        assert fusion.crafting_copy(_Noisy().eval(), images) is None
    assert "does not reproduce the model's outputs" in caplog.text
    monkeypatch.setattr(fusion, "ENABLED", False)
    assert fusion.crafting_copy(_BNNet().eval(), images) is None


@pytest.mark.parametrize("model_id", ["tiny_cls", "tiny_multitask"])
def test_attacks_through_the_copy_agree_with_attacks_on_the_model(load_tiny, model_id, monkeypatch):
    """Folding changes float rounding only: the same PGD finds the same verdicts, and the passes are counted."""
    from robustbench_wbc.data import SPLITS

    data = SPLITS.get("synth:test").load(32, 32)
    model = load_tiny(model_id)
    results = {}
    for fold in (True, False):
        monkeypatch.setattr(fusion, "ENABLED", fold)
        attack = build_attack(ATTACKS.get("pgd").spec(8 / 255, "cls"), model)
        torch.manual_seed(0)
        adv = attack(data.images, data.labels, data.masks)
        with torch.no_grad():
            results[fold] = (model(adv)["logits"].argmax(1) == data.labels, attack.passes)
    monkeypatch.setattr(fusion, "ENABLED", True)
    assert fusion.crafting_copy(model.eval(), data.images) is not None  # the zoo's networks trace and fold
    (ok_f, passes_f), (ok_m, passes_m) = results[True], results[False]
    assert (ok_f != ok_m).sum() <= 1  # at most one borderline image in 32
    assert passes_f[0] > 0 and abs(passes_f[0] - passes_m[0]) <= 10 * 1  # same passes, up to that image


def test_a_custom_model_returning_a_tensor_folds_through_its_wrapper(images):
    """``benchmark()`` wraps a bare-tensor model in HeadDict; the wrapper settles on its first call and traces."""
    from robustbench_wbc.bench.custom import HeadDict

    class TensorNet(_BNNet):
        def forward(self, x):
            return super().forward(x)["logits"]

    wrapped = HeadDict(TensorNet()).eval()
    copy = fusion.crafting_copy(wrapped, images)
    assert copy is not None and not fusion.has_batchnorm(copy)
    with torch.no_grad():
        assert torch.allclose(copy(images)["logits"], wrapped(images)["logits"], atol=1e-5)
