"""Attacks: eps parsing, the threat-model check, every registered attack within budget."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustbench_wbc.attacks import (
    ATTACKS,
    NORMS,
    AttackSpec,
    EpsError,
    ThreatModelViolation,
    build_attack,
    check_threat_model,
    parse_eps,
    perturbation_norms,
    register_attack,
)
from robustbench_wbc.attacks.base import SENSIBLE_EPS
from robustbench_wbc.data import SPLITS

# (attack, model, target): every registered attack against each head it supports
TARGET_MODEL = {"cls": "tiny_cls", "seg": "tiny_unet", "joint": "tiny_multitask"}
ATTACK_CASES = [
    pytest.param(a, TARGET_MODEL[target], target, id=f"{a}-{target}")
    for a in ATTACKS.list()
    for target in ATTACKS.get(a).targets
]


@pytest.fixture(scope="module")
def test_data():
    return SPLITS.get("synth:test").load(20, 32)


# --- parse_eps ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("8/255", [8 / 255]),
    ("1/255,2/255, 8/255", [1 / 255, 2 / 255, 8 / 255]),
    (" 8 / 255 ", [8 / 255]),
    ("0.03", [0.03]),
    ("0", [0.0]),
    ("0.01,", [0.01]),
    ("64/255", [64 / 255]),
])
def test_parse_eps_valid(text, expected):
    assert parse_eps(text) == pytest.approx(expected, rel=0, abs=1e-15)


def test_parse_eps_l2_range():
    assert parse_eps("0.5,1.0", norm="l2") == [0.5, 1.0]
    assert parse_eps("16", norm="l2") == [16.0]
    with pytest.raises(EpsError, match="sensible range"):
        parse_eps("17", norm="l2")


@pytest.mark.parametrize("text", ["abc", "8//255", "1/0", "-1/255", "", " , ", "8/255/2", "1e-3", "nan",
                                  "inf", "8 255", "0x10"])
def test_parse_eps_malformed_raises(text):
    with pytest.raises(EpsError):
        parse_eps(text)


@pytest.mark.parametrize("text", ["0.9", "65/255", "1", "0.03,255/255"])
def test_parse_eps_beyond_range_raises_unless_forced(text):
    with pytest.raises(EpsError, match="--force"):
        parse_eps(text)
    values = parse_eps(text, force=True)
    assert max(values) > SENSIBLE_EPS["linf"]


def test_eps_error_is_a_value_error():
    assert issubclass(EpsError, ValueError)


@pytest.mark.parametrize("text", ["0.5/255", "8/255.0"])
def test_parse_eps_decimal_fractions(text):
    """The eps grammar admits decimals on either side of '/': half a grey level is a valid budget.

    Regression: Fraction() rejects '0.5/255', so parse_eps leaked a bare ValueError (not
    EpsError) and `wbc-robust run --eps 0.5/255` crashed with a traceback.
    """
    num, den = (float(t) for t in text.split("/"))
    assert parse_eps(text) == pytest.approx([num / den])


# --- check_threat_model ------------------------------------------------------------------------
@pytest.fixture
def x():
    return torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1


def test_check_accepts_valid_linf(x):
    eps = 8 / 255
    adv = (x + eps * torch.sign(torch.randn_like(x))).clamp(0, 1)
    check_threat_model(x, adv, "linf", eps)
    check_threat_model(x, x.clone(), "linf", 0.0)
    check_threat_model(x.double(), x.double() + eps, "linf", eps)  # float64 images, float64 adversarials


def test_check_accepts_valid_l2(x):
    d = torch.randn_like(x)
    d = 0.5 * d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    check_threat_model(x, (x + d).clamp(0, 1), "l2", 0.5)
    with pytest.raises(ThreatModelViolation, match="l2 norm"):
        check_threat_model(x, (x + 2 * d).clamp(0, 1), "l2", 0.5)


def test_check_rejects_linf_violation(x):
    eps = 4 / 255
    adv = x.clone()
    adv[2, 1, 3, 3] += 2 * eps  # one pixel of one image is enough
    with pytest.raises(ThreatModelViolation, match="exceeds eps"):
        check_threat_model(x, adv, "linf", eps)


def test_check_tolerates_float32_rounding_only(x):
    """x + eps rounded to float32 may measure half a float past eps in float64: tolerated; 1e-5 relative is not."""
    eps = 4 / 255
    check_threat_model(x, x + eps, "linf", eps)
    xd = x.double()  # past eps by a relative 5e-7 (tolerated) and 1e-4 (not), exactly: in float64
    check_threat_model(xd, xd + eps * (1 + 5e-7), "linf", eps)
    with pytest.raises(ThreatModelViolation):
        check_threat_model(xd, xd + eps * (1 + 1e-4), "linf", eps)
    with pytest.raises(ThreatModelViolation):
        check_threat_model(x, x + eps + 1e-6, "linf", eps)


@pytest.mark.parametrize(("value", "match"), [(1.5, r"\[0, 1\]"), (-0.2, r"\[0, 1\]"),
                                               (float("nan"), "non-finite"), (float("inf"), "non-finite")])
def test_check_rejects_bad_values(x, value, match):
    adv = x.clone()
    adv[0, 0, 0, 0] = value
    with pytest.raises(ThreatModelViolation, match=match):
        check_threat_model(x, adv, "linf", 1.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_check_rejects_another_float_dtype(x, dtype):
    """The adversarial must have the clean images' dtype, as the docstring says; within budget or not."""
    with pytest.raises(ThreatModelViolation, match=rf"dtype {dtype}, expected torch.float32"):
        check_threat_model(x, x.to(dtype), "linf", 8 / 255)
    with pytest.raises(ThreatModelViolation, match=r"dtype torch.float32, expected " + str(dtype)):
        check_threat_model(x.to(dtype), x, "linf", 8 / 255)


def test_check_rejects_wrong_shape_dtype_and_type(x):
    with pytest.raises(ThreatModelViolation, match="shape"):
        check_threat_model(x, x[:2], "linf", 1.0)
    with pytest.raises(ThreatModelViolation, match="shape"):
        check_threat_model(x, x.transpose(2, 3)[..., :4], "linf", 1.0)
    with pytest.raises(ThreatModelViolation, match="dtype"):
        check_threat_model(x, (x > 0.5).to(torch.uint8), "linf", 1.0)
    with pytest.raises(ThreatModelViolation, match="dtype"):
        check_threat_model(x, x.round().long(), "linf", 1.0)
    with pytest.raises(ThreatModelViolation, match="not a tensor"):
        check_threat_model(x, x.numpy(), "linf", 1.0)


def test_perturbation_norms(x):
    d = torch.zeros_like(x)
    d[1, 0, 0, 0], d[1, 0, 0, 1] = 0.3, -0.4
    norms = perturbation_norms(x, x + d)
    assert norms["linf"].tolist() == pytest.approx([0, 0.4, 0, 0], abs=1e-6)
    assert norms["l2"].tolist() == pytest.approx([0, 0.5, 0, 0], abs=1e-6)


# --- registered attacks ------------------------------------------------------------------------
def test_attack_entries_are_well_formed():
    assert {"fgsm", "pgd"} <= set(ATTACKS.list())
    for a in ATTACKS.list():
        e = ATTACKS.get(a)
        assert e.id == a and e.norm in NORMS and e.targets and e.default_eps and e.description
        assert all(0 < eps <= SENSIBLE_EPS[e.norm] for eps in e.default_eps)


def test_spec_rejects_unsupported_target():
    @register_attack(norm="linf", backend="test", default_eps=(1 / 255,), targets=("cls",))
    def cls_only_test_attack(model, eps):
        return lambda images, labels: images

    try:
        entry = ATTACKS.get("cls_only_test_attack")
        assert entry.spec(1 / 255, "cls").target == "cls"
        with pytest.raises(ValueError, match="cannot target 'seg'"):
            entry.spec(1 / 255, "seg")
    finally:
        ATTACKS.remove("cls_only_test_attack")


def test_register_attack_rejects_unknown_norm():
    with pytest.raises(ValueError, match="norm"):
        register_attack(norm="l1", backend="test", default_eps=(1.0,))


@pytest.mark.parametrize(("attack_id", "model_id", "target"), ATTACK_CASES)
def test_every_attack_stays_within_budget(attack_id, model_id, target, load_tiny, test_data):
    entry = ATTACKS.get(attack_id)
    eps = max(entry.default_eps)
    model = load_tiny(model_id)
    spec = entry.spec(eps, target)
    assert (spec.name, spec.norm, spec.eps, spec.target) == (attack_id, entry.norm, eps, target)
    torch.manual_seed(0)
    adv = build_attack(spec, model)(test_data.images, test_data.labels, test_data.masks)
    assert adv.shape == test_data.images.shape and not adv.requires_grad
    assert adv.min().item() >= 0.0 and adv.max().item() <= 1.0
    size = perturbation_norms(test_data.images, adv)[entry.norm]
    assert size.max().item() <= eps + 1e-5
    assert size.max().item() > 0  # it did perturb
    # the model is scored in eval mode afterwards: no module left in training mode
    assert not any(m.training for m in model.modules())


# At eps 0 an attack runs as at any eps (no shortcut: the reliability check eps0_not_clean sees its real output).
# These libraries cannot: ART refuses a step or budget of 0, torchattacks' PGD-L2 divides eps by ‖δ‖ = 0 and
# returns NaN, which the threat-model check refuses; their cells say so (failed, invalid). The others give the images.
EPS0_REFUSED = {
    "fgsm@art": (ValueError, "eps_step"), "pgd@art": (ValueError, "eps_step"), "pgd-l2@art": (ValueError, "eps_step"),
    "autoattack@art": (ValueError, "eps has to be"), "pgd-l2@torchattacks": (ThreatModelViolation, "non-finite"),
}
EPS0_CHEAP = {"n_queries": 20, "square_queries": 20}  # a library's attack spends its whole budget at eps 0


@pytest.mark.parametrize(("attack_id", "model_id", "target"), ATTACK_CASES)
def test_zero_eps_runs_the_attack_and_returns_the_images(attack_id, model_id, target, load_tiny, test_data):
    model = load_tiny(model_id)
    entry = ATTACKS.get(attack_id)
    root = attack_id
    while ATTACKS.get(root).base:
        root = ATTACKS.get(root).base
    n = len(test_data) if entry.engine else 2
    x, y, m = test_data.images[:n], test_data.labels[:n], test_data.masks[:n]
    attack = build_attack(entry.spec(0.0, target, **{k: v for k, v in EPS0_CHEAP.items() if k in entry.params}), model)
    if root in EPS0_REFUSED:
        error, message = EPS0_REFUSED[root]
        with pytest.raises(error, match=message):
            attack(x, y, m)
        return
    adv = attack(x, y, m)
    assert torch.equal(adv, x) and adv is not x
    assert attack.passes[0] > 0  # it ran


def test_attacking_masks_needs_masks(load_tiny, test_data):
    spec = ATTACKS.get("fgsm").spec(2 / 255, "seg")
    with pytest.raises(ValueError, match="masks"):
        build_attack(spec, load_tiny("tiny_unet"))(test_data.images, test_data.labels, None)


def test_pgd_increases_the_loss(load_tiny):
    data = SPLITS.get("synth:test").load(40, 32)
    model = load_tiny("tiny_cls")
    spec = ATTACKS.get("pgd").spec(16 / 255, "cls")
    torch.manual_seed(0)
    adv = build_attack(spec, model)(data.images, data.labels, None)
    with torch.no_grad():
        clean_loss = F.cross_entropy(model(data.images)["logits"], data.labels).item()
        adv_loss = F.cross_entropy(model(adv)["logits"], data.labels).item()
    assert adv_loss > clean_loss
    with torch.no_grad():
        clean_acc = (model(data.images)["logits"].argmax(1) == data.labels).float().mean()
        adv_acc = (model(adv)["logits"].argmax(1) == data.labels).float().mean()
    assert adv_acc <= clean_acc


def test_pgd_seg_increases_pixel_loss(load_tiny):
    data = SPLITS.get("synth:test").load(20, 32)
    model = load_tiny("tiny_unet")
    spec = ATTACKS.get("pgd").spec(8 / 255, "seg")
    torch.manual_seed(0)
    adv = build_attack(spec, model)(data.images, data.labels, data.masks)
    with torch.no_grad():
        clean = F.cross_entropy(model(data.images)["mask"], data.masks.long()).item()
        attacked = F.cross_entropy(model(adv)["mask"], data.masks.long()).item()
    assert attacked > clean


def test_pgd_random_start_is_seeded(load_tiny, test_data):
    model = load_tiny("tiny_cls")
    attack = build_attack(ATTACKS.get("pgd").spec(4 / 255, "cls"), model)
    torch.manual_seed(123)
    a = attack(test_data.images, test_data.labels, None)
    torch.manual_seed(123)
    b = attack(test_data.images, test_data.labels, None)
    assert torch.equal(a, b)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_attack_keeps_the_model_mode(load_tiny, test_data, mode):
    """Regression: torchattacks restores the mode it found on the module it was given (a wrapper);
    a wrapper defaulting to train mode would leave BatchNorm in training mode for scoring."""
    model = load_tiny("tiny_multitask")
    model.train(mode == "train")
    for target in ("cls", "seg"):
        spec = ATTACKS.get("pgd").spec(2 / 255, target)
        build_attack(spec, model)(test_data.images, test_data.labels, test_data.masks)
        assert {m.training for m in model.modules()} == {mode == "train"}


# --- cheating attacks are caught ---------------------------------------------------------------
@pytest.fixture
def cheating_attacks(restore_attacks):
    """Two registered attacks that exceed their L∞ budget: raw (leaves [0,1]) and clamped."""

    @register_attack(norm="linf", backend="test", default_eps=(8 / 255,))
    def cheat_raw_test(model, eps):
        """Adds twice the budget."""
        return lambda images, labels: images + 2 * eps

    @register_attack(norm="linf", backend="test", default_eps=(8 / 255,))
    def cheat_clamped_test(model, eps):
        """Adds twice the budget, kept in [0, 1]."""
        return lambda images, labels: (images + 2 * eps).clamp(0, 1)

    return {"cheat_raw_test": r"\[0, 1\]|exceeds eps", "cheat_clamped_test": "exceeds eps"}


def test_build_attack_catches_budget_violations(cheating_attacks, load_tiny, test_data):
    model = load_tiny("tiny_cls")
    for name, match in cheating_attacks.items():
        spec = AttackSpec(name, "linf", 8 / 255, "cls", "test")
        attack = build_attack(spec, model)
        with pytest.raises(ThreatModelViolation, match=match):
            attack(test_data.images, test_data.labels, test_data.masks)


def test_bench_marks_cheating_cells_invalid(cheating_attacks, tmp_path, tiny_cards):
    from robustbench_wbc.bench import ResultStore, run

    summary = run(["tiny_cls"], ["synth:test"], ["cheat_clamped_test", "fgsm"], tmp_path,
                  eps=[8 / 255], n_images=10)
    assert summary.planned == 3 and summary.ok == 2
    assert [(r.cell.attack, r.status) for r in summary.failed] == [("cheat_clamped_test", "invalid")]
    bad = summary.failed[0]
    assert "threat model violated" in bad.reason and bad.samples is None

    store = ResultStore(tmp_path)
    assert store.status(bad.cell.id) == "invalid" and not store.is_done(bad.cell.id)
    table = store.table()
    rows = table[table["attack"] == "cheat_clamped_test"]
    assert set(rows["status"]) == {"invalid"}
    assert not (rows["metric"] == "robust_accuracy").any()  # no number for an invalid cell
    assert set(table.loc[table["attack"] != "cheat_clamped_test", "status"]) == {"ok"}

    # an invalid cell is not done: a re-run tries it again (and it fails again)
    again = run(["tiny_cls"], ["synth:test"], ["cheat_clamped_test", "fgsm"], tmp_path,
                eps=[8 / 255], n_images=10)
    assert again.skipped == 2 and again.ok == 0 and len(again.failed) == 1
