"""The engine's crafting copy (attacks/fusion.py): BatchNorm folded, convolutions rewritten, bf16 weights cast once;
the same function, cached, refused when it differs."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
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
    copy.train()  # a library that restores the mode it found, train, on the module it was given
    assert fusion.crafting_copy(model, images) is copy and not copy.training
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


class _Exposure(_BNNet):
    """Squares an over-exposed batch (mean above 0.5) before classifying it: a Python branch on the data that the
    tracer cannot read (the mean is symbolic while traced), so the copy keeps the other path and gives the model's
    outputs on dark batches only."""

    def forward(self, x):
        try:
            bright = float(x.detach().mean()) > 0.5
        except TypeError:  # float() of a symbolic value, while traced
            bright = False
        return super().forward(x * x if bright else x)


def _exposure() -> _Exposure:
    """An ``_Exposure`` whose two paths give other outputs on bright images (not both cut off by its ReLU)."""
    torch.manual_seed(0)
    model = _Exposure().eval()
    bright = 0.5 + 0.5 * torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.allclose(model(bright)["logits"], _BNNet.forward(model, bright)["logits"], atol=1e-3)
    return model


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_copy_is_checked_on_each_new_batch_and_the_model_used_where_it_differs(images, caplog, precision):
    model = _exposure()
    dark, bright, bright2 = images * 0.8, 0.5 + 0.5 * images, 0.6 + 0.4 * images
    copy = fusion.crafting_copy(model, dark, precision)
    assert copy is not None  # made and checked on dark images: it reproduces the model there
    with caplog.at_level(logging.WARNING, logger="robustbench_wbc.attacks.fusion"):
        assert fusion.crafting_copy(model, bright, precision) is None  # a new batch, on which it does not
        assert fusion.crafting_copy(model, bright2, precision) is None
        assert fusion.crafting_copy(model, bright, precision) is None
    assert caplog.text.count("does not reproduce the model's outputs on a batch") == 1  # logged once per copy
    assert fusion.crafting_copy(model, dark, precision) is copy  # still the copy where it holds
    assert fusion.crafting_copy(model, torch.cat([dark[:4], bright[:4]]), precision) is None  # a probe half bright


def test_an_attack_on_a_batch_where_the_copy_differs_crafts_on_the_model(images, monkeypatch):
    """With the copy checked once only (on the dark images), PGD on bright images would take the copy's gradients;
    checked per batch, it gives what it gives with copies off, bit for bit."""
    model = _exposure()
    dark, bright = images * 0.8, 0.5 + 0.5 * images
    labels = torch.arange(len(images)) % 5
    spec = ATTACKS.get("pgd").spec(8 / 255, "cls")
    adv = {}
    for enabled in (True, False):
        monkeypatch.setattr(fusion, "ENABLED", enabled)
        if enabled:
            assert fusion.crafting_copy(model, dark) is not None  # the copy made and cached on dark images first
        torch.manual_seed(0)
        adv[enabled] = build_attack(spec, model)(bright, labels, None)
    assert torch.equal(adv[True], adv[False])


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


# --- the convolution rewrites --------------------------------------------------------------------
@pytest.mark.parametrize("stride,kernel,padding,size", [
    (2, 7, 3, (64, 64)),  # a ResNet stem
    (2, 3, 1, (33, 33)),  # a resnet10t stem on an odd size
    (2, 4, 0, (31, 30)),
    (3, 5, 2, (20, 23)),  # a stride that does not divide the padded size
    (2, (3, 5), (1, 2), (17, 22)),  # rectangular kernel and padding
    (2, 1, 0, (9, 9)),  # a kernel smaller than the stride
])
def test_space_to_depth_is_the_strided_convolution(stride, kernel, padding, size):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, kernel, stride, padding).double()
    stem = fusion.SpaceToDepthConv(conv)
    x = torch.rand(2, 3, *size, dtype=torch.float64, requires_grad=True)
    want, got = conv(x), stem(x)
    assert got.shape == want.shape and torch.allclose(got, want, rtol=0, atol=1e-12)
    g = torch.randn_like(want)
    assert torch.allclose(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("size,stride,whole", [(1, 1, True), (2, 1, True), (2, 2, True), (3, 1, False), (4, 1, False)])
@pytest.mark.parametrize("n", [3, 40])
def test_whole_map_convolution_is_the_convolution(size, stride, whole, n):
    """A 3×3 convolution on a map where every output sees every input is one matrix; elsewhere the convolution runs."""
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3, stride, 1).requires_grad_(False)
    dense = fusion.WholeMapConv(conv)
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(n, 6, size, size).contiguous(memory_format=layout).requires_grad_(True)
        want, got = conv(x), dense(x)
        assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5)
        g = torch.randn_like(want)
        assert torch.allclose(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0], atol=1e-5)
    assert (dense.dense[(size, size)] is not None) == whole


def test_whole_map_convolution_does_not_depend_on_the_thread_count():
    """The matrix product gives the same bits on 1 and 2 threads (a Dask worker's table equals a local run's);
    oneDNN's 1×1 convolution of the same product did not."""
    torch.manual_seed(0)
    dense = fusion.WholeMapConv(nn.Conv2d(128, 128, 3, 1, 1).requires_grad_(False))
    x = torch.randn(64, 128, 2, 2).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    threads, results = torch.get_num_threads(), []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            y = dense(x)
            results.append((y, torch.autograd.grad(y.square().sum(), x)[0]))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


class _StemNet(nn.Module):
    """A strided stem, BatchNorm, and a convolution on a 2×2 map: every rewrite of the crafting copy applies."""

    def __init__(self, batchnorm: bool = True):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 7, 2, 3)
        self.bn = nn.BatchNorm2d(8) if batchnorm else nn.Identity()
        self.deep = nn.Conv2d(8, 8, 3, 1, 1)
        self.head = nn.Linear(8, 5)
        if batchnorm:
            with torch.no_grad():
                self.bn.running_mean.uniform_(-1, 1)
                self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(torch.relu(self.bn(self.stem(x))), 2)
        return {"logits": self.head(torch.relu(self.deep(x)).mean((2, 3)))}


def _kinds(module):
    return {type(m).__name__ for m in module.modules()}


@pytest.mark.parametrize("batchnorm", [True, False])
def test_the_copy_rewrites_the_stem_and_whole_map_convolutions(images, batchnorm, monkeypatch):
    torch.manual_seed(0)
    model = _StemNet(batchnorm).eval()
    copy = fusion.crafting_copy(model, images)
    assert copy is not None  # without BatchNorm too: the rewrites alone are worth a copy
    assert {"SpaceToDepthConv", "WholeMapConv"} <= _kinds(copy) and not fusion.has_batchnorm(copy)
    assert {"SpaceToDepthConv", "WholeMapConv"}.isdisjoint(_kinds(model))  # the model itself is untouched
    x = images.clone().requires_grad_(True)
    want, got = model(x)["logits"], copy(x)["logits"]
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(torch.autograd.grad(got.sum(), x)[0], torch.autograd.grad(want.sum(), x)[0], atol=1e-5)

    monkeypatch.setattr(fusion, "REWRITE_CONVS", False)
    plain = fusion.crafting_copy(_StemNet(batchnorm).eval(), images)
    if batchnorm:  # folded only
        assert plain is not None and {"SpaceToDepthConv", "WholeMapConv"}.isdisjoint(_kinds(plain))
    else:  # nothing left to gain: the model itself
        assert plain is None


def test_the_bf16_copy_makes_autocasts_weight_cast_once(images, monkeypatch):
    """Without the rewrites, the bf16 copy under autocast is the model under autocast, bit for bit."""
    import copy as copy_module

    monkeypatch.setattr(fusion, "REWRITE_CONVS", False)
    model = _StemNet().eval()
    copy16 = fusion.crafting_copy(model, images, "bf16")
    assert copy16 is not None and copy16 is not fusion.crafting_copy(model, images)  # cached apart from fp32's
    assert fusion.crafting_copy(model, images, "bf16") is copy16
    assert fusion.has_batchnorm(copy16)  # not folded: folded scales round worse in bfloat16
    layers = [m for m in copy16.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(p.dtype == torch.bfloat16 for m in layers for p in m.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    x = images.contiguous(memory_format=torch.channels_last)
    reference = copy_module.deepcopy(model).to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(copy16(x)["logits"], reference(x)["logits"])

    monkeypatch.setattr(fusion, "REWRITE_CONVS", True)  # rewritten: the same function, summed in another order
    rewritten = fusion.crafting_copy(copy_module.deepcopy(model), images, "bf16")
    assert {"SpaceToDepthConv", "WholeMapConv"} <= _kinds(rewritten)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = reference(x)["logits"].float()
        assert torch.allclose(rewritten(x)["logits"].float(), want, atol=0.05 * want.abs().max().item())


@pytest.mark.parametrize("attack_id", ["pgd@torchattacks", "pgd@art", "apgd-ce"])
def test_library_attacks_craft_through_the_copy(load_tiny, attack_id, monkeypatch):
    """torchattacks, ART and AutoAttack run on the crafting copy, with the contiguous outputs and input
    gradients they need; the verdicts (the model's own) agree with theirs on the model itself up to a
    borderline image."""
    from robustbench_wbc.data import SPLITS

    data = SPLITS.get("synth:test").load(32, 32)
    model = load_tiny("tiny_cls").eval()
    copy = fusion.crafting_copy(model, data.images)
    calls = []
    hook = copy.register_forward_hook(lambda m, args, out: calls.append(len(args[0])))
    results = {}
    try:
        for on in (True, False):
            monkeypatch.setattr(fusion, "ENABLED", on)
            attack = build_attack(ATTACKS.get(attack_id).spec(8 / 255, "cls"), model)
            torch.manual_seed(0)
            adv = attack(data.images, data.labels, None)
            with torch.no_grad():
                results[on] = model(adv)["logits"].argmax(1) == data.labels
            if on:
                n_calls = len(calls)
    finally:
        hook.remove()
    assert n_calls > 0 and len(calls) == n_calls  # the library ran the copy; with copies off, never
    assert (results[True] != results[False]).sum() <= 1


def test_a_plugin_attack_gets_the_model_itself(load_tiny, restore_attacks):
    """A plugin's own attack may look into the model it is given: it gets the model, not a copy."""
    from robustbench_wbc.attacks.base import register_attack

    model = load_tiny("tiny_cls").eval()
    seen = []

    @register_attack("fusion-plugin-test", norm="linf")
    def look(view, eps):
        def run(images, labels):
            with torch.no_grad():
                seen.append((view.model.model, view(images)))
            return images
        return run

    images = torch.rand(4, 3, 32, 32)
    build_attack(ATTACKS.get("fusion-plugin-test").spec(8 / 255, "cls"), model)(images, torch.zeros(4, dtype=torch.long), None)
    assert seen and seen[0][0] is model
