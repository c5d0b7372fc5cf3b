"""The original AutoAttack (pyautoattack) backend: budgets, target classes, class counts, seeds, fidelity."""

from __future__ import annotations

import logging
import sys

import pytest
import torch
from pyautoattack import AutoAttack
from torch import nn

import robustbench_wbc.attacks.autoattack_backend as aab  # registers the backend (not yet in attacks/__init__)
from robustbench_wbc.attacks import ATTACKS, build_attack, check_threat_model, fusion
from robustbench_wbc.data import SPLITS
from robustbench_wbc.models.networks import HeadView

AA_IDS = ("apgd-ce", "apgd-t", "autoattack", "autoattack-fast", "autoattack-l2", "square")
REGISTERED = tuple(ATTACKS.list(where=lambda e: e.backend == "autoattack"))  # these and any preset of them
SMALL = {"n_queries": 50}  # Square's budget in tests


class Linear(nn.Module):
    """A dict-returning linear classifier with ``k`` classes: cheap, and exactly as robust as its margins."""

    def __init__(self, k: int, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(3 * 32 * 32, k)
        self.eval()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.fc(x.flatten(1))}


@pytest.fixture(scope="module")
def data():
    return SPLITS.get("synth:test").load(16, 32)


@pytest.fixture(scope="module")
def tiny(load_tiny):
    return load_tiny("tiny_cls")


def predicted(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model's own labels: every image starts correctly classified, so every one is attacked."""
    with torch.no_grad():
        return model(images)["logits"].argmax(1)


def correct(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(images)["logits"].argmax(1) == labels


def spec(attack_id: str, eps: float, **params):
    entry = ATTACKS.get(attack_id)
    extra = SMALL if "n_queries" in entry.params else {}
    return entry.spec(eps, "cls", **{**extra, **params})


def test_registered_with_descriptions_and_params():
    assert set(AA_IDS) <= set(REGISTERED)
    for aid in AA_IDS:
        entry = ATTACKS.get(aid)
        assert entry.description and entry.params["seed"] == 0 and entry.targets == ("cls",)
        assert entry.norm == ("l2" if aid == "autoattack-l2" else "linf")
    assert ATTACKS.get("autoattack").params["version"] == "standard"
    assert ATTACKS.get("autoattack").params["n_queries"] == ATTACKS.get("square").params["n_queries"] == 5000
    assert ATTACKS.get("autoattack-fast").params["version"] == "custom"


@pytest.mark.parametrize("attack_id,params", [(a, {}) for a in REGISTERED] + [("autoattack-fast", {"attacks": "fab-t"})],
                         ids=[*REGISTERED, "fab-t"])
def test_every_attack_stays_within_budget(tiny, data, attack_id, params):
    x = data.images[:8]
    y = predicted(tiny, x)
    s = spec(attack_id, 1.0 if ATTACKS.get(attack_id).norm == "l2" else 8 / 255, **params)
    attack = build_attack(s, tiny)
    adv = attack(x, y, None)  # build_attack checks the threat model itself; check again, and that it did something
    check_threat_model(x, adv, s.norm, s.eps)
    fooled = ~correct(tiny, adv, y)
    assert fooled.any(), f"{attack_id} broke none of 8 images at {s.eps:.4g}"
    assert torch.equal(adv[~fooled], x[~fooled])  # AutoAttack gives the clean image where it fails
    forward, backward = attack.passes
    assert forward > 0 and (backward == 0) == (attack_id == "square")  # Square is black-box


def test_target_classes_are_c_minus_1(tiny, data):
    run = ATTACKS.get("autoattack").factory(HeadView(tiny, "logits"), 8 / 255, version="standard", seed=0,
                                            n_queries=50, batch_size=250)
    assert isinstance(run, aab.AutoAttackRun)
    run(data.images[:2], predicted(tiny, data.images[:2]))
    assert run.n_classes == 5
    assert run.adversary.apgd_targeted.n_target_classes == run.adversary.fab.n_target_classes == 4
    assert run.adversary.square.n_queries == 50 and run.adversary.seed == 0


@pytest.mark.parametrize("k", [5, 4])
def test_apgd_t_runs_each_of_the_c_minus_1_targets(data, k, caplog):
    """Behaviour, read from the model's counted passes: at a budget nothing breaks, APGD-T runs 100 + 1
    gradients per image for each target, and there are C − 1 targets, C read from the logits."""
    model = Linear(k)
    x = data.images[:2]
    attack = build_attack(spec("apgd-t", 1e-6), model)
    with caplog.at_level(logging.WARNING, logger="auto-attack"):
        adv = attack(x, predicted(model, x), None)
    assert torch.equal(adv, x)
    assert attack.passes[1] == len(x) * (k - 1) * 101
    assert "target classes" not in caplog.text  # the library's own check agrees


@pytest.mark.parametrize("attack_id,k,needs", [("apgd-t", 3, "APGD-T"), ("autoattack", 3, "APGD-T"),
                                               ("autoattack-fast", 2, "APGD-T"), ("autoattack", 2, "APGD-T")])
def test_too_few_classes_is_a_clear_error(data, attack_id, k, needs):
    attack = build_attack(spec(attack_id, 8 / 255), Linear(k))
    with pytest.raises(ValueError, match=rf"attack '{attack_id}'.*{needs}.*needs at least 4 classes; the model gives {k}"):
        attack(data.images[:2], torch.zeros(2, dtype=torch.long), None)


def test_untargeted_dlr_needs_3_and_ce_2(data):
    x = data.images[:2]
    with pytest.raises(ValueError, match=r"attack 'autoattack-fast'.*APGD-DLR.*needs at least 3 classes; the model gives 2"):
        build_attack(spec("autoattack-fast", 8 / 255, attacks="apgd-ce,apgd-dlr"), Linear(2))(x, torch.zeros(2).long(), None)
    model = Linear(2)  # APGD-CE and Square work with two classes
    for aid in ("apgd-ce", "square"):
        adv = build_attack(spec(aid, 8 / 255), model)(x, predicted(model, x), None)
        assert adv.shape == x.shape


def test_bad_params_are_refused_at_build_time(tiny):
    with pytest.raises(ValueError, match="version must be one of"):
        build_attack(spec("autoattack", 8 / 255, version="fast"), tiny)
    with pytest.raises(ValueError, match="only for version 'custom'"):
        build_attack(spec("autoattack-fast", 8 / 255, version="standard"), tiny)
    with pytest.raises(ValueError, match="needs attacks from"):
        build_attack(spec("autoattack-fast", 8 / 255, attacks="apgd-ce,pgd"), tiny)


def test_fast_is_deterministic_quiet_and_below_clean(tiny, data, capsys):
    x, y = data.images, data.labels
    clean = correct(tiny, x, y)
    rng = torch.get_rng_state()
    tracer = lambda *a: None  # noqa: E731  (a coverage tool's or debugger's tracer, which AutoAttack's check replaces)
    runs = []
    for _ in range(2):
        sys.settrace(tracer)
        try:
            runs.append(build_attack(spec("autoattack-fast", 1 / 255), tiny)(x, y, None, active=clean))
        finally:
            found = sys.gettrace()
            sys.settrace(None)
        assert found is tracer
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(torch.get_rng_state(), rng)  # the global generator is left as it was
    robust = correct(tiny, runs[0], y)
    assert robust.float().mean() <= clean.float().mean()
    assert not (robust & ~clean).any()
    assert capsys.readouterr().out == ""


def test_fast_is_a_prefix_of_standard(data):
    """Same seed: every image the fast version breaks, the standard one breaks; the standard one costs more."""
    model, x = Linear(5, seed=1), data.images
    y = predicted(model, x)
    eps = 6 / 255  # the images' least L∞ distances to another class (no box) lie in 4.7–6.8/255
    fast, standard = (build_attack(spec(a, eps), model) for a in ("autoattack-fast", "autoattack"))
    broken_fast = ~correct(model, fast(x, y, None), y)
    broken_std = ~correct(model, standard(x, y, None), y)
    assert 0 < broken_fast.sum() < len(x)
    assert not (broken_fast & ~broken_std).any()
    assert fast.passes[0] < standard.passes[0]


def test_same_result_as_pyautoattack_directly(tiny, data, monkeypatch):
    x = data.images
    y = predicted(tiny, x)
    eps = 1 / 255  # some images survive: a non-trivial comparison
    adversary = AutoAttack(HeadView(tiny, "logits"), attacks=["apgd-ce", "apgd-t"], device="cpu", eps=eps, norm="Linf",
                           seed=0, version="custom")
    adversary.verbose = False
    adversary.apgd.n_restarts = 1
    adversary.apgd_targeted.n_target_classes = 4
    direct, _ = adversary.run_standard_evaluation(x.contiguous(), y)  # the split's images are channels-last:
    # AutoAttack .view()s the input gradient, which takes their layout, and fails
    robust_direct = correct(tiny, direct, y)
    assert 0 < robust_direct.sum() < len(x)
    # on the model itself (crafting copies off) the suite's run is AutoAttack's, bit for bit
    monkeypatch.setattr(fusion, "ENABLED", False)
    suite = build_attack(spec("autoattack-fast", eps), tiny)(x, y, None, active=correct(tiny, x, y))
    assert torch.equal(direct, suite)
    # through the crafting copy (BatchNorm folded: the same function up to float rounding) the same verdicts
    monkeypatch.setattr(fusion, "ENABLED", True)
    suite = build_attack(spec("autoattack-fast", eps), tiny)(x, y, None, active=correct(tiny, x, y))
    assert (correct(tiny, suite, y) != robust_direct).sum() <= 1


def test_the_suite_hands_autoattack_the_whole_split(monkeypatch):
    """More images than the runner's passes (128): the suite's AutoAttack is pyautoattack run directly on the same
    images with the same batch size, bit for bit (one call, so the same batches, seeded the same)."""
    from robustbench_wbc.bench import runner
    from robustbench_wbc.bench.custom import HeadDict

    x = SPLITS.get("synth:test").load(160, 32).images
    torch.manual_seed(1)  # not linear: where the random start lies decides the result
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 32), nn.Tanh(), nn.Linear(32, 5))
    model = HeadDict(net).eval()
    y = predicted(model, x)
    eps, batch = 2 / 255, 100  # AutoAttack's batches: 100 + 60 (per-128 calls would give 100 + 28, then 32)
    assert len(x) > runner.BATCH_SIZE
    adversary = AutoAttack(HeadView(model, "logits"), attacks=["apgd-ce"], device="cpu", eps=eps, norm="Linf", seed=0,
                           version="custom")
    adversary.verbose = False
    adversary.apgd.n_restarts = 1
    direct, _ = adversary.run_standard_evaluation(x.contiguous(), y, batch_size=batch)
    assert 0 < correct(model, direct, y).sum() < len(x)  # some survive, some do not: a non-trivial comparison
    monkeypatch.setattr(fusion, "ENABLED", False)  # on the model itself, as above
    attack = build_attack(spec("apgd-ce", eps, batch_size=batch), model)
    suite = runner.attack_images(attack, x, y, None, torch.ones(len(x), dtype=torch.bool))
    assert torch.equal(direct, suite)
