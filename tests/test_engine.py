"""The suite's own attack engine: early exit, objectives (cls, seg/SegPGD, joint), pass counting, presets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustbench_wbc.attacks import ATTACKS, build_attack, check_threat_model, engine, with_backend
from robustbench_wbc.attacks.base import ThreatModelViolation
from robustbench_wbc.attacks.engine import Attack, linf_bounds, margin, seg_loss
from robustbench_wbc.attacks.presets import register_presets
from robustbench_wbc.bench.diagnostics import model_checks
from robustbench_wbc.data import SPLITS
from robustbench_wbc.registry import PluginError


@pytest.fixture(scope="module")
def data():
    return SPLITS.get("synth:test").load(32, 32)


def test_margin_is_right_for_negative_logits():
    """Regression for torchattacks' CW margin (issue #184): other classes are masked, not zeroed."""
    z = torch.tensor([[-5.0, -7.0, -6.0], [-9.0, -2.0, -3.0]])
    y = torch.tensor([0, 0])
    assert margin(z, y).tolist() == [-1.0, 7.0]  # image 0 correct (margin < 0), image 1 fooled
    assert margin(z + 100, y).tolist() == margin(z, y).tolist()  # a logit shift changes nothing


def test_segpgd_loss_moves_weight_from_right_to_wrong_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4)
    masks = torch.randint(0, 3, (2, 4, 4))
    ce = F.cross_entropy(logits, masks, reduction="none")
    right = (logits.argmax(1) == masks).float()
    assert torch.allclose(seg_loss(logits, masks, "ce"), ce.flatten(1).mean(1))
    # λ = 0 at the start: only the pixels still right count; λ = ½ at the end: all count equally
    assert torch.allclose(seg_loss(logits, masks, "segpgd", 0.0), (ce * right).flatten(1).mean(1))
    assert torch.allclose(seg_loss(logits, masks, "segpgd", 1.0), 0.5 * ce.flatten(1).mean(1))
    with pytest.raises(ValueError, match="seg_loss"):
        seg_loss(logits, masks, "dice")


def test_linf_bounds_hold_in_exact_arithmetic():
    eps = 8 / 255
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    x[0, 0, 0, :3] = torch.tensor([eps, 1 - eps, 0.5])
    lo, hi = linf_bounds(x, eps)
    assert ((x.double() - lo.double()) <= eps).all() and ((hi.double() - x.double()) <= eps).all()
    assert lo.min() >= 0 and hi.max() <= 1 and lo.dtype == x.dtype


def test_float64_work_in_slices_gives_the_whole_batch_answer(monkeypatch):
    """The L∞ bounds and the threat-model check, computed a few images at a time, equal the whole-batch
    computation, keep the memory layout, and catch a violation in the last slice."""
    eps = 8 / 255
    x = torch.rand(7, 3, 8, 8, generator=torch.Generator().manual_seed(2)).contiguous(memory_format=torch.channels_last)
    whole = linf_bounds(x, eps)
    monkeypatch.setattr(engine, "SLICE_VALUES", 2 * x[0].numel())  # slices of 2 images: 4 slices
    assert len(engine.image_slices(x)) == 4
    sliced = linf_bounds(x, eps)
    assert all(torch.equal(a, b) for a, b in zip(whole, sliced))
    assert sliced[0].is_contiguous(memory_format=torch.channels_last)
    check_threat_model(x, whole[1], "linf", eps)
    bad = whole[1].clone()
    bad[-1, 0, 0, 0] = x[-1, 0, 0, 0] + 2 * eps if x[-1, 0, 0, 0] < 0.5 else x[-1, 0, 0, 0] - 2 * eps
    with pytest.raises(ThreatModelViolation, match="exceeds eps"):
        check_threat_model(x, bad, "linf", eps)


class _Recorder(Attack):
    """Moves every image by +eps/4 per step, recording how many images each step sees."""

    def __init__(self, model, eps, target="cls", steps=6):
        super().__init__(model, eps, target)
        self.steps, self.seen = steps, []

    def perturb(self, x, y, m):
        def step(xa, g):
            self.seen.append(len(xa))
            return xa + self.eps / 4 * g.sign()
        return self.iterate(x, y, m, x, self.steps, step)


class _Threshold(nn.Module):
    """Class 1 once the mean pixel falls below a threshold, else class 0: the answer is known."""

    def __init__(self, threshold):
        super().__init__()
        self.t = threshold
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x):
        s = (x.flatten(1).mean(1) - self.t) * 100 * self.w
        return {"logits": torch.stack([s, -s], 1)}


def test_early_exit_keeps_the_first_adversarial_and_stops_attacking_it():
    """An image leaves the attack the step it is fooled; the image returned is that step's, not a later one."""
    # steps of eps/4 = 0.025 down, threshold 0.48: image 0 (at 0.5) is fooled after one step, image 1
    # (at 0.55) after three, image 2 (at 0.7) never within eps
    x = torch.tensor([0.5, 0.55, 0.7]).view(3, 1, 1, 1).expand(3, 3, 4, 4).contiguous()
    model = _Threshold(0.48)
    y = torch.zeros(3, dtype=torch.long)
    attack = _Recorder(model, 0.1, steps=6)
    adv = attack(x, y, None)
    assert attack.seen == [3, 2, 2, 1, 1, 1]  # images leave once fooled
    moved = (x - adv).flatten(1).amax(1)
    assert moved[0].item() == pytest.approx(0.1 / 4) and moved[1].item() == pytest.approx(3 * 0.1 / 4)
    assert moved[2].item() == pytest.approx(0.1)  # still robust: kept attacking to the budget


def test_survivors_keep_their_last_iterate_without_a_scoring_pass():
    """Against ``cls`` the last iterate is not scored in the loop: one forward pass per gradient, no more.

    The caller's verdict pass scores it; an image fooled only by the last step is returned as that step.
    """
    x = torch.tensor([0.5, 0.55, 0.7]).view(3, 1, 1, 1).expand(3, 3, 4, 4).contiguous()
    model = _Threshold(0.48)
    seen = []
    model.register_forward_hook(lambda mod, args, out: seen.append(len(args[0])))
    attack = _Recorder(model, 0.1, steps=3)
    adv = attack(x, torch.zeros(3, dtype=torch.long), None)
    assert seen == [3, 3, 2]  # image 0 leaves after step 1; no fourth pass to score the last iterate
    moved = (x - adv).flatten(1).amax(1)
    assert moved.tolist() == pytest.approx([0.025, 0.075, 0.075])  # images 1 and 2: their last iterate
    assert model(adv)["logits"].argmax(1).tolist() == [1, 1, 0]  # image 1 falls at the last step


def test_built_attack_attacks_only_active_images_and_counts_passes(load_tiny, data):
    model = load_tiny("tiny_cls")
    attack = build_attack(ATTACKS.get("pgd").spec(8 / 255, "cls"), model)
    active = torch.zeros(len(data), dtype=torch.bool)
    active[:10] = True
    torch.manual_seed(0)
    adv = attack(data.images, data.labels, None, active)
    assert torch.equal(adv[10:], data.images[10:])
    fwd, bwd = attack.passes
    # a forward and a backward pass per step, for active images only; from the third iterate on, at most one
    # forward-only probe of an image predicted to be misclassified (engine.PREDICT_EXITS) per image and step
    assert 0 < bwd <= fwd and bwd <= 10 * 10 and fwd - bwd <= 10 * 8


def test_predicted_exits_spare_backward_passes_and_change_no_iterate(monkeypatch):
    """An image whose damage trend says it is fooled now is scored forward-only first: fooled, it leaves without
    a backward pass; the images returned are those of the attack without the prediction."""
    # as in the early-exit test: image 0 is fooled after one step (its trend not yet known: it costs a backward
    # pass), image 1 after three (damage -14, -9, -4: predicted fooled at the fourth iterate), image 2 never
    x = torch.tensor([0.5, 0.55, 0.7]).view(3, 1, 1, 1).expand(3, 3, 4, 4).contiguous()
    y = torch.zeros(3, dtype=torch.long)
    model = _Threshold(0.48)
    passes = []  # (images, with a gradient) per forward pass
    model.register_forward_hook(lambda mod, args, out: passes.append((len(args[0]), torch.is_grad_enabled())))
    adv = {}
    for predict in (False, True):
        monkeypatch.setattr(engine, "PREDICT_EXITS", predict)
        passes.clear()
        adv[predict] = _Recorder(model, 0.1, steps=6)(x, y, None)
        if predict:
            assert passes == [(3, True), (3, True), (2, True), (1, False), (1, True), (1, True), (1, True)]
        else:
            assert passes == [(3, True), (3, True), (2, True), (2, True), (1, True), (1, True)]
    assert torch.equal(adv[True], adv[False])


def test_predicted_exits_keep_the_verdicts_on_a_trained_model(monkeypatch, load_tiny, data):
    """PGD on a trained model with and without the prediction: the same verdicts, fewer backward passes."""
    model = load_tiny("tiny_cls")
    with torch.no_grad():
        ok = model(data.images)["logits"].argmax(1) == data.labels
    robust, passes = {}, {}
    for predict in (False, True):
        monkeypatch.setattr(engine, "PREDICT_EXITS", predict)
        attack = build_attack(ATTACKS.get("pgd").spec(2 / 255, "cls"), model)
        torch.manual_seed(0)
        adv = attack(data.images, data.labels, None, ok)
        with torch.no_grad():
            robust[predict] = (model(adv)["logits"].argmax(1) == data.labels) & ok
        passes[predict] = attack.passes
    assert torch.equal(robust[True], robust[False])
    assert 0 < robust[True].sum() < ok.sum()  # the attack fools some images, not all
    assert passes[True][1] < passes[False][1]  # fewer backward passes


def test_pgd_early_exit_costs_less_than_torchattacks_at_equal_strength(load_tiny, data):
    """The suite's PGD stops attacking fooled images: fewer passes, and never weaker than torchattacks' PGD."""
    model = load_tiny("tiny_cls")
    with torch.no_grad():
        ok = model(data.images)["logits"].argmax(1) == data.labels
    results = {}
    for a in ("pgd", "pgd@torchattacks"):
        attack = build_attack(ATTACKS.get(a).spec(8 / 255, "cls"), model)
        torch.manual_seed(0)
        adv = attack(data.images, data.labels, None, ok)
        with torch.no_grad():
            robust = (model(adv)["logits"].argmax(1) == data.labels) & ok
        results[a] = (robust.sum().item(), attack.passes[1])
    assert results["pgd"][0] <= results["pgd@torchattacks"][0]
    assert results["pgd"][1] < results["pgd@torchattacks"][1]


def test_joint_attack_balances_the_heads(load_tiny, data):
    """The joint gradient is the sum of each head's unit-norm gradient, so neither head dominates."""
    model = load_tiny("tiny_multitask")
    x, y, m = data.images[:4], data.labels[:4], data.masks[:4].long()
    pgd = ATTACKS.get("pgd").factory
    _, g_joint = pgd(model, 8 / 255, target="joint", seg_loss="ce").gradient(x, y, m)
    _, g_cls = pgd(model, 8 / 255, target="cls").gradient(x, y, m)
    _, g_seg = pgd(model, 8 / 255, target="seg", seg_loss="ce").gradient(x, y, m)

    def unit(g):
        return g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)

    assert torch.allclose(g_joint, unit(g_cls) + unit(g_seg), atol=1e-5)


def test_joint_attack_damages_both_heads(load_tiny, data):
    model = load_tiny("tiny_multitask")
    attack = build_attack(ATTACKS.get("pgd").spec(16 / 255, "joint"), model)
    torch.manual_seed(0)
    adv = attack(data.images, data.labels, data.masks)
    check_threat_model(data.images, adv, "linf", 16 / 255)
    with torch.no_grad():
        clean, bad = model(data.images), model(adv)
    assert (bad["logits"].argmax(1) == data.labels).sum() < (clean["logits"].argmax(1) == data.labels).sum()
    m = data.masks.long()
    assert (bad["mask"].argmax(1) == m).float().mean() < (clean["mask"].argmax(1) == m).float().mean()


def test_joint_needs_an_engine_attack(load_tiny):
    with pytest.raises(ValueError, match="cannot target 'joint'"):
        ATTACKS.get("pgd@torchattacks").spec(8 / 255, "joint")


def test_with_backend_maps_names_and_names_the_alternatives():
    assert with_backend(["pgd", "fgsm"], "torchattacks") == ["pgd@torchattacks", "fgsm@torchattacks"]
    assert with_backend(["pgd@torchattacks"], "wbc") == ["pgd"]
    with pytest.raises(ValueError, match="no 'nolib' backend.*wbc"):
        with_backend(["pgd"], "nolib")


# --- presets -------------------------------------------------------------------------------------
def test_builtin_presets_derive_from_their_base():
    p8 = ATTACKS.get("pgd-linf-8")
    assert p8.base == "pgd" and p8.default_eps == (8 / 255,) and p8.params["steps"] == 20
    p100 = ATTACKS.get("pgd-linf-8-100")  # a preset derived from a preset
    assert p100.base == "pgd-linf-8" and p100.default_eps == (8 / 255,)
    assert (p100.params["steps"], p100.params["rel_stepsize"]) == (100, 0.1)
    assert ATTACKS.get("pgd-pixelce").targets == ("seg", "joint")


def _preset(tmp_path, name, text):
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return p


def test_user_preset_registers_and_runs(tmp_path, restore_attacks, load_tiny, data):
    p = _preset(tmp_path, "mine", "name: pgd-mine\nbase: pgd\neps: [2/255, 4/255]\nparams: {steps: 3}\n")
    assert register_presets([p]) == ["pgd-mine"]
    e = ATTACKS.get("pgd-mine")
    assert e.default_eps == (2 / 255, 4 / 255) and e.params["steps"] == 3 and e.engine
    adv = build_attack(e.spec(4 / 255, "cls"), load_tiny("tiny_cls"))(data.images, data.labels, None)
    check_threat_model(data.images, adv, "linf", 4 / 255)


@pytest.mark.parametrize(("text", "match"), [
    ("name: x1\n", "needs `name` and `base`"),
    ("name: x2\nbase: pgdd\n", "Did you mean"),
    ("name: x3\nbase: pgd\nparams: {stepz: 3}\n", "no parameter"),
    ("name: x4\nbase: pgd\neps: -1/255\n", "eps"),
    ("name: x5\nbase: pgd\ncolour: red\n", "unknown key"),
    ("name: pgd\nbase: fgsm\n", "registered attack"),
    ("name: x6\nbase: pgd-pixelce\ntargets: [cls]\n", "supports only"),
    (": : :\n", "cannot be read"),
])
def test_bad_presets_name_the_file_and_the_fix(tmp_path, restore_attacks, text, match):
    p = _preset(tmp_path, "bad", text)
    with pytest.raises(PluginError, match=match) as info:
        register_presets([p])
    assert str(p) in str(info.value)


def test_preset_cycle_is_refused(tmp_path, restore_attacks):
    a = _preset(tmp_path, "a", "name: cyc-a\nbase: cyc-b\n")
    b = _preset(tmp_path, "b", "name: cyc-b\nbase: cyc-a\n")
    with pytest.raises(PluginError, match="cycle"):
        register_presets([a, b])


# --- model checks ----------------------------------------------------------------------------------
class _Softmax(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 5)

    def forward(self, x):
        return {"logits": self.lin(x.mean((2, 3))).softmax(1)}


class _Dropout(_Softmax):
    def forward(self, x):
        return {"logits": F.dropout(self.lin(x.mean((2, 3))), 0.5, training=True)}


class _Rounded(_Softmax):
    def forward(self, x):  # a staircase input: zero gradient everywhere (gradient masking)
        return {"logits": self.lin((x * 4).round().mean((2, 3)) / 4)}


@pytest.mark.parametrize(("model", "check", "value"), [
    (_Softmax(), "probability_outputs", 1.0), (_Dropout(), "output_randomness", None),
    (_Rounded(), "zero_grad_fraction", 1.0)])
def test_model_checks_catch_what_fools_attacks(model, check, value, data):
    torch.manual_seed(0)
    out = model_checks(model, data.images, data.labels, None)
    if value is None:
        assert out[check] > 0.1
    else:
        assert out[check] == value


def test_model_checks_pass_a_plain_model(load_tiny, data):
    out = model_checks(load_tiny("tiny_multitask"), data.images, data.labels, data.masks)
    assert out == {"zero_grad_fraction": 0.0, "output_randomness": 0.0, "probability_outputs": 0.0}
