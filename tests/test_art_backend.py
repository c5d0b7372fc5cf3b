"""The ART backend: every attack within budget, agreeing with the suite's, counted, quiet, seeded."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustbench_wbc.attacks.art_backend as art_backend  # registers the ART attacks
from robustbench_wbc.attacks import ATTACKS, build_attack, check_threat_model
from robustbench_wbc.attacks.engine import project as _project
from robustbench_wbc.data import SPLITS

HAS_MULTIPROCESS = importlib.util.find_spec("multiprocess") is not None
needs_multiprocess = pytest.mark.skipif(
    not HAS_MULTIPROCESS, reason="autoattack@art needs the package 'multiprocess' (pip install multiprocess)")

ART_IDS = ("fgsm@art", "pgd@art", "pgd-l2@art", "cw-l2@art", "autoattack@art")
# small parameters, for speed on 2 CPU cores
FAST = {
    "fgsm@art": {},
    "pgd@art": {},
    "pgd-l2@art": {},
    "cw-l2@art": {"max_iter": 10, "binary_search_steps": 2, "initial_const": 1.0},
    "autoattack@art": {"max_iter": 10, "restarts": 1, "square_queries": 50},
}
EPS = {"linf": 8 / 255, "l2": 1.0}


def _case(attack_id: str):
    marks = [needs_multiprocess] if attack_id == "autoattack@art" else []
    return pytest.param(attack_id, marks=marks, id=attack_id)


@pytest.fixture(scope="module")
def data20():
    return SPLITS.get("synth:test").load(20, 32)


@pytest.fixture(scope="module")
def data40():
    return SPLITS.get("synth:test").load(40, 32)


def _correct(model, images, labels) -> torch.Tensor:
    with torch.no_grad():
        return model(images)["logits"].argmax(1) == labels


def _robust_acc(model, spec, data, seed: int = 0) -> float:
    torch.manual_seed(seed)
    adv = build_attack(spec, model)(data.images, data.labels, None)
    return _correct(model, adv, data.labels).float().mean().item()


def test_art_attacks_are_registered():
    for attack_id in ART_IDS:
        entry = ATTACKS.get(attack_id)
        assert entry.backend == "art" and entry.targets == ("cls",) and not entry.engine
        assert entry.description.startswith("ART's")
    assert ATTACKS.get("pgd@art").params == {"steps": 10, "rel_stepsize": 0.25, "random_start": True, "batch_size": 32}
    assert (ATTACKS.get("pgd-l2@art").norm, ATTACKS.get("cw-l2@art").norm) == ("l2", "l2")
    assert ATTACKS.get("autoattack@art").norm == "linf"


@pytest.mark.parametrize("attack_id", [_case(a) for a in ART_IDS])
def test_art_attack_stays_within_budget(attack_id, load_tiny, data20):
    entry = ATTACKS.get(attack_id)
    eps = EPS[entry.norm]
    model = load_tiny("tiny_cls")
    before = [p.requires_grad for p in model.parameters()]
    attack = build_attack(entry.spec(eps, "cls", **FAST[attack_id]), model)
    torch.manual_seed(0)
    adv = attack(data20.images, data20.labels, None)
    assert adv.shape == data20.images.shape and adv.dtype == torch.float32 and adv.device == data20.images.device
    assert not adv.requires_grad
    check_threat_model(data20.images, adv, entry.norm, eps)  # the strict check, again
    delta = (adv.double() - data20.images.double()).flatten(1)
    if entry.norm == "linf":  # rounding repaired: within eps exactly, no tolerance needed
        assert delta.abs().amax().item() <= eps
    else:
        assert delta.norm(dim=1).max().item() <= eps
    assert delta.abs().amax().item() > 0  # it did perturb
    assert attack.passes[0] > 0 and attack.passes[1] > 0
    assert [p.requires_grad for p in model.parameters()] == before and all(before)
    assert not any(m.training for m in model.modules())


# what ART says when asked to attack at eps 0 (the attack runs as at any eps; its cell fails with this)
ART_EPS0_ERRORS = {"fgsm@art": "eps_step` has to be positive", "pgd@art": "eps_step` has to be positive",
                   "pgd-l2@art": "eps_step` has to be positive", "autoattack@art": "eps has to be"}


@pytest.mark.parametrize("attack_id", [_case(a) for a in ART_IDS])
def test_art_at_zero_eps_refuses_or_returns_the_images(attack_id, load_tiny, data20):
    """ART refuses a step (FGSM, PGD) or budget (its AutoAttack's APGD) of 0 with its own message; its CW, a
    minimal-norm attack projected onto the ball, returns the images."""
    spec = ATTACKS.get(attack_id).spec(0.0, "cls", **FAST[attack_id])  # the factory runs; ART refuses eps 0 when called
    attack = build_attack(spec, load_tiny("tiny_cls"))
    x, y = data20.images[:4], data20.labels[:4]
    if attack_id in ART_EPS0_ERRORS:
        with pytest.raises(ValueError, match=ART_EPS0_ERRORS[attack_id]):
            attack(x, y, None)
    else:
        assert torch.equal(attack(x, y, None), x)


def test_linf_projection_repairs_rounding_only():
    torch.manual_seed(0)
    eps = 8 / 255
    x = torch.rand(8, 3, 16, 16)
    x[0, 0, 0, :4] = torch.tensor([eps, 2 * eps, 1 - eps, 0.5])  # bounds near 0 and 1 too
    step = torch.where(torch.rand_like(x) < 0.5, -1.0, 1.0) * torch.tensor(eps, dtype=torch.float32)
    raw = (x + step).clamp(0, 1)  # what float32 arithmetic gives, as ART computes it
    exact = (x.double() + step.sign().double() * eps).clamp(0, 1)
    over = (raw.double() - x.double()).abs() > eps
    assert over.any()  # rounding does land past the ball
    fixed = _project(raw, x, "linf", eps)
    assert ((fixed.double() - x.double()).abs() <= eps).all()  # exactly within, no tolerance
    moved = fixed != raw
    assert torch.equal(moved, over)  # only the values past the ball moved …
    spacing = (torch.nextafter(fixed, torch.full_like(fixed, 2.0)) - fixed).double()
    assert ((fixed.double() - exact).abs() <= spacing)[moved].all()  # … to the float next to the bound


def test_l2_projection_scales_into_the_ball():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16) * 0.5 + 0.25
    far = x + torch.randn_like(x)
    out = _project(far, x, "l2", 0.5)
    assert ((out - x).flatten(1).norm(dim=1) <= 0.5).all() and out.min() >= 0 and out.max() <= 1
    near = x + 1e-3 * torch.randn_like(x)
    assert torch.equal(_project(near, x, "l2", 0.5), near)  # inside the ball: untouched


def _robust(model, spec, data, seed: int = 0) -> torch.Tensor:
    """Per image, the suite's verdict: classified correctly, clean and under the attack."""
    torch.manual_seed(seed)
    adv = build_attack(spec, model)(data.images, data.labels, None)
    return _correct(model, data.images, data.labels) & _correct(model, adv, data.labels)


@pytest.mark.parametrize("eps", [2 / 255, 8 / 255])
def test_pgd_art_agrees_with_the_suites_pgd(eps, load_tiny, data40):
    """Both are PGD-L∞, 10 steps of eps/4 from a random start, so they must fool the same images.

    The one difference that may change a verdict is the random start: ART draws it from numpy
    (seeded from torch, but another draw than the suite's), and a start can decide an image near the
    boundary. Measured on these 40 images (10 classified correctly) over 12 seeds: the suite's PGD
    changes up to 1 verdict from one seed to another at 2/255, and so does ART's; the two differ by at
    most 1 image at 2/255, and by none at 8/255, where both fool every image. A weaker or stronger ART
    PGD (another step, budget or loss) moves more.
    """
    model = load_tiny("tiny_cls")
    clean = _correct(model, data40.images, data40.labels)
    ours = _robust(model, ATTACKS.get("pgd").spec(eps, "cls"), data40)
    art = _robust(model, ATTACKS.get("pgd@art").spec(eps, "cls"), data40)
    differ = (art != ours).sum().item()
    assert differ <= 1, f"{differ} of {len(clean)} verdicts differ (ART robust {art.sum()}, ours {ours.sum()})"
    assert art.sum() < clean.sum()  # it does attack: some correct images fall


def test_fgsm_art_is_no_stronger_than_pgd_art(load_tiny, data40):
    model = load_tiny("tiny_cls")
    fgsm = _robust_acc(model, ATTACKS.get("fgsm@art").spec(2 / 255, "cls"), data40)
    pgd = _robust_acc(model, ATTACKS.get("pgd@art").spec(2 / 255, "cls"), data40)
    assert pgd <= fgsm + 0.05


def test_cw_art_fools_more_at_a_larger_eps(load_tiny, data40):
    model = load_tiny("tiny_cls")
    correct = _correct(model, data40.images, data40.labels)
    assert correct.sum() >= 4
    fooled = {}
    for eps in (0.05, 2.0):
        attack = build_attack(ATTACKS.get("cw-l2@art").spec(eps, "cls", **FAST["cw-l2@art"]), model)
        torch.manual_seed(0)
        adv = attack(data40.images, data40.labels, None, active=correct)
        assert torch.equal(adv[~correct], data40.images[~correct])  # only the robust images were attacked
        fooled[eps] = (correct & ~_correct(model, adv, data40.labels)).sum().item()
    assert fooled[2.0] > fooled[0.05]
    assert fooled[2.0] >= correct.sum().item() // 2


def test_pgd_art_counts_passes_through_the_counter(load_tiny, data20):
    model = load_tiny("tiny_cls")
    model.train()  # ART puts its wrapper in eval: the model's own mode must come back
    attack = build_attack(ATTACKS.get("pgd@art").spec(4 / 255, "cls", steps=5), model)
    attack(data20.images, data20.labels, None)
    forward, backward = attack.passes
    n = len(data20.images)
    assert backward >= 5 * n and forward >= backward  # one input gradient per image per step
    assert model.training and all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_pgd_art_is_seeded_by_torch_and_leaves_numpy_alone(load_tiny, data20):
    attack = build_attack(ATTACKS.get("pgd@art").spec(4 / 255, "cls"), load_tiny("tiny_cls"))
    np.random.seed(7)
    state = np.random.get_state()
    torch.manual_seed(123)
    a = attack(data20.images, data20.labels, None)
    after = np.random.get_state()
    assert all(np.array_equal(s, t) for s, t in zip(state[1:], after[1:], strict=True))
    torch.manual_seed(123)
    b = attack(data20.images, data20.labels, None)
    torch.manual_seed(124)
    c = attack(data20.images, data20.labels, None)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_autoattack_art_without_multiprocess_says_what_to_install(monkeypatch, load_tiny):
    monkeypatch.setitem(sys.modules, "multiprocess", None)  # makes `import multiprocess` fail
    with pytest.raises(ImportError, match=r"multiprocess.*pip install multiprocess"):
        build_attack(ATTACKS.get("autoattack@art").spec(8 / 255, "cls"), load_tiny("tiny_cls"))


@needs_multiprocess
def test_autoattack_art_is_at_least_as_strong_as_fgsm(load_tiny, data40):
    model = load_tiny("tiny_cls")
    aa = _robust_acc(model, ATTACKS.get("autoattack@art").spec(2 / 255, "cls", **FAST["autoattack@art"]), data40)
    fgsm = _robust_acc(model, ATTACKS.get("fgsm@art").spec(2 / 255, "cls"), data40)
    assert aa <= fgsm


class _ThreeClasses(nn.Module):
    """Three classes, not the suite's five, from each channel's mean: ART must be told the number the logits have."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.fc(x.mean((2, 3)))}


def test_art_wrapper_does_what_the_module_docstring_says(monkeypatch, data20):
    """The classifier gets the number of classes probed from the logits and clip values (0, 1); it is built on
    the first call and again when the image shape changes; results come back as float32 on the images'
    device; and ART's PGD has no early exit: every image takes every step, where the suite's drops those fooled."""
    built = []
    make = art_backend._classifier

    def spy(model, images, nb_classes):
        classifier = make(model, images, nb_classes)
        built.append((tuple(images.shape[1:]), classifier.nb_classes, tuple(classifier.clip_values.tolist())))
        return classifier

    monkeypatch.setattr(art_backend, "_classifier", spy)
    torch.manual_seed(0)
    model = _ThreeClasses().eval()
    labels = data20.labels % 3
    small = F.interpolate(data20.images, size=24, mode="area")  # an average of pixels: still in [0, 1]
    attack = build_attack(ATTACKS.get("pgd@art").spec(8 / 255, "cls", steps=5), model)
    for images in (data20.images, small, small):
        adv = attack(images, labels, None)
        assert adv.shape == images.shape and adv.dtype == torch.float32 and adv.device == images.device
    assert built == [((3, 32, 32), 3, (0.0, 1.0)), ((3, 24, 24), 3, (0.0, 1.0))]
    assert attack.passes[1] == 5 * 3 * len(labels)
    ours = build_attack(ATTACKS.get("pgd").spec(8 / 255, "cls", steps=5), model)
    ours(data20.images, labels, None)
    assert ours.passes[1] < 5 * len(labels)  # early exit: the count above tells the two apart
