"""Run profiles: the reference matrix is well-formed, and a profile plans its attacks at their own budgets."""

from __future__ import annotations

import pytest
from conftest import WIDE, cli_text

from robustbench_wbc.attacks import ATTACKS
from robustbench_wbc.bench.profiles import RunProfile, get_run_profile
from robustbench_wbc.bench.runner import plan_profile
from robustbench_wbc.cli import app
from robustbench_wbc.data import SPLITS
from robustbench_wbc.data.corruptions import CORRUPTIONS


def test_reference_profile_names_only_registered_things():
    ref = get_run_profile("reference")
    assert ref.seeds == (0, 1, 2) and ref.n_images == 256
    assert all(s in SPLITS for s in ref.splits) and all(s in SPLITS for s in ref.attack_splits)
    assert len([s for s in ref.splits if s.startswith("synth:c-")]) == 3 * len(CORRUPTIONS)
    for attack, eps in ref.attacks.items():
        norm = ATTACKS.get(attack).norm
        assert eps and all(0 < e <= (8 / 255 if norm == "linf" else 1.0) for e in eps), attack
    with pytest.raises(ValueError, match="unknown run profile 'nope'"):
        get_run_profile("nope")


def test_plan_profile_runs_each_attack_at_its_own_budget(tiny_cards):
    profile = RunProfile("t", "test", splits=("synth:test", "synth:ood-lab-b"),
                         attacks={"fgsm": (2 / 255,), "pgd-l2": (0.5,)}, n_images=12)
    models = ["tiny_cls", "tiny_multitask"]
    cells = plan_profile(profile, models, {m: tiny_cards[m] for m in models})
    assert len({c.id for c in cells}) == len(cells)
    clean = [c for c in cells if c.is_clean]
    assert {(c.model, c.split) for c in clean} == {(m, s) for m in models for s in profile.splits}
    attacked = [c for c in cells if not c.is_clean]
    assert {c.split for c in attacked} == {"synth:test"}  # attacks only where the profile says
    assert {(c.attack, c.eps) for c in attacked} == {("fgsm", 2 / 255), ("pgd-l2", 0.5)}
    assert {c.target for c in attacked if c.model == "tiny_cls"} == {"cls"}
    assert {c.target for c in attacked if c.model == "tiny_multitask"} == {"cls", "seg", "joint"}
    assert all(c.n_images == 12 for c in cells)


def test_run_profile_fixes_the_matrix(cli, tmp_path):
    result = cli.invoke(app, ["run", "--profile", "reference", "--attacks", "fgsm", "--out", str(tmp_path)], env=WIDE)
    assert result.exit_code == 2 and "--profile reference fixes the matrix; leave out --attacks" in cli_text(result)
