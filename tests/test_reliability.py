"""Reliability diagnostics on hand-built tables: each check fires when it should and stays silent within noise."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from robustbench_wbc.report.reliability import (
    DIAG_COLUMNS,
    FLAG_COLUMNS,
    diagnose,
    is_black_box,
    is_white_box,
    noise,
    unreliable,
)

E2, E8 = 2 / 255, 8 / 255
N = 100


def row(metric: str, value: float, attack: str = "none", eps: float = 0.0, target: str | None = None,
        model: str = "m", model_seed: int = 0, split: str = "synth:test", n: int = N, status: str = "ok",
        norm: str | None = None) -> dict:
    """One tidy row; a clean cell by default."""
    clean = attack == "none"
    return {"run_id": "r", "cell_id": f"{model}-{attack}-{eps}-{target}", "model": model, "family": "classifier",
            "model_seed": model_seed, "split": split, "attack": attack,
            "backend": "none" if clean else (attack.split("@")[1] if "@" in attack else "wbc"),
            "target": "none" if clean else (target or "cls"), "norm": "none" if clean else (norm or "linf"),
            "eps": float(eps), "seed": 0, "params": "", "metric": metric, "value": float(value), "n": n,
            "status": status, "reason": "" if status == "ok" else "boom", "time_s": 0.1}


def clean_cell(acc: float = 0.9, zero_grad: float = 0.0, randomness: float = 0.0, proba: float = 0.0, **kw) -> list[dict]:
    return [row("accuracy", acc, **kw), row("balanced_accuracy", acc, **kw),
            row("zero_grad_fraction", zero_grad, **kw), row("output_randomness", randomness, **kw),
            row("probability_outputs", proba, **kw)]


def attacked(attack: str, eps: float, robust: float, **kw) -> list[dict]:
    return [row("robust_accuracy", robust, attack, eps, **kw), row("attack_success_rate", 0.5, attack, eps, **kw)]


def table(*groups: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([r for g in groups for r in g])


def checks(t: pd.DataFrame) -> list[str]:
    return diagnose(t)["check"].tolist()


def reliable_base(**kw) -> list[list[dict]]:
    """A model whose evaluation passes every check."""
    return [clean_cell(0.9, **kw), attacked("fgsm", E2, 0.6, **kw), attacked("fgsm", E8, 0.4, **kw),
            attacked("pgd", E2, 0.5, **kw), attacked("pgd", E8, 0.3, **kw), attacked("square", E8, 0.35, **kw)]


def test_noise_bound():
    assert noise(0.5, 100, 0.5, 100) == pytest.approx(1.96 * math.sqrt(0.005) + 0.01)
    assert noise(0.0, 100, 0.0, 100) == pytest.approx(0.01)  # one image when nothing varies
    assert noise(0.5, 0, 0.5, 100) == math.inf


def test_attack_kinds():
    assert is_white_box("pgd") and is_white_box("pgd@art") and is_white_box("apgd-ce") and is_white_box("cw-l2@torchattacks")
    assert is_black_box("square") and is_black_box("square@art")
    for a in ("autoattack", "autoattack-fast", "my_plugin", "pgdish"):
        assert not is_white_box(a) and not is_black_box(a)


def test_reliable_model_is_silent():
    t = table(*reliable_base())
    d = diagnose(t)
    assert d.empty and list(d.columns) == DIAG_COLUMNS
    assert diagnose(t.iloc[:0]).empty


def test_eps0_not_clean_fires():
    t = table(*reliable_base(), attacked("pgd", 0.0, 0.85))
    d = diagnose(t)
    assert d["check"].tolist() == ["eps0_not_clean"]
    r = d.iloc[0]
    assert (r["attack"], r["target"], r["eps"]) == ("pgd", "cls", 0.0)
    assert "85.0 %" in r["reason"] and "90.0 %" in r["reason"] and "100 images" in r["reason"] and "5 images" in r["reason"]


def test_eps0_equal_is_silent():
    assert checks(table(*reliable_base(), attacked("pgd", 0.0, 0.9))) == []


def test_eps0_needs_same_images():
    # a clean cell of another n is other images: nothing to compare
    t = table(*reliable_base(), attacked("pgd", 0.0, 0.85, n=50))
    assert checks(t) == []


def test_robust_rises_with_eps_fires():
    t = table(clean_cell(0.9), attacked("pgd", E2, 0.412), attacked("pgd", E8, 0.65))
    d = diagnose(t)
    assert d["check"].tolist() == ["robust_rises_with_eps"]
    r = d.iloc[0]
    assert r["eps"] == pytest.approx(E8) and r["attack"] == "pgd"
    tol = noise(0.412, N, 0.65, N)
    assert f"from 41.2 % at eps 2/255 to 65.0 % at 8/255 (pgd, cls): more than noise (±{100 * tol:.1f} points)" in r["reason"]


def test_robust_rise_within_noise_is_silent():
    # 41.2 % → 50.0 %: 8.8 points, under the ±14.7-point noise at n = 100
    assert checks(table(clean_cell(0.9), attacked("pgd", E2, 0.412), attacked("pgd", E8, 0.50))) == []


def test_robust_rise_is_per_backend():
    # pgd and pgd@torchattacks are different attacks: one's 2/255 is not compared with the other's 8/255
    t = table(clean_cell(0.9), attacked("pgd", E2, 0.2), attacked("pgd@torchattacks", E8, 0.6))
    assert checks(t) == []


def test_dice_rising_over_clean_fires_for_seg():
    t = table([row("nucleus_dice", 0.70)], [row("nucleus_dice", 0.95, "pgd", E2, "seg")],
              [row("accuracy", 0.3)], [row("robust_accuracy", 0.9, "pgd", E2, "seg")])  # cross-task: not checked
    d = diagnose(t)
    assert d["check"].tolist() == ["robust_rises_with_eps"]
    assert "nucleus Dice rises from 70.0 % at eps 0 (clean) to 95.0 % at 2/255 (pgd, seg)" in d.iloc[0]["reason"]


def test_pgd_weaker_than_fgsm_fires():
    t = table(clean_cell(0.9), attacked("fgsm", E8, 0.40), attacked("pgd", E8, 0.60))
    d = diagnose(t)
    assert d["check"].tolist() == ["pgd_weaker_than_fgsm"]
    r = d.iloc[0]
    assert r["attack"] == "pgd" and r["eps"] == pytest.approx(E8)
    assert "60.0 % under pgd vs 40.0 % under fgsm" in r["reason"] and "8/255" in r["reason"]
    assert f"±{100 * noise(0.6, N, 0.4, N):.1f} points" in r["reason"]


def test_pgd_within_noise_of_fgsm_is_silent():
    assert checks(table(clean_cell(0.9), attacked("fgsm", E8, 0.40), attacked("pgd", E8, 0.45))) == []


def test_pgd_fgsm_compared_within_one_library():
    t = table(clean_cell(0.9), attacked("fgsm", E8, 0.10), attacked("pgd@torchattacks", E8, 0.60),
              attacked("fgsm@torchattacks", E8, 0.55))
    assert checks(t) == []
    t = table(clean_cell(0.9), attacked("fgsm@torchattacks", E8, 0.30), attacked("pgd@torchattacks", E8, 0.60))
    d = diagnose(t)
    assert d["check"].tolist() == ["pgd_weaker_than_fgsm"] and d.iloc[0]["attack"] == "pgd@torchattacks"


def test_pgd_fgsm_same_eps_and_target_only():
    t = table(clean_cell(0.9), attacked("fgsm", E8, 0.2), attacked("pgd", E2, 0.6))
    assert "pgd_weaker_than_fgsm" not in checks(t)


def test_square_beats_whitebox_fires():
    t = table(clean_cell(0.9), attacked("fgsm", E8, 0.50), attacked("pgd", E8, 0.45), attacked("square", E8, 0.20))
    d = diagnose(t)
    assert d["check"].tolist() == ["square_beats_whitebox"]
    r = d.iloc[0]
    assert r["attack"] == "square"
    assert "20.0 % under square vs at best 45.0 % under pgd" in r["reason"]
    assert f"±{100 * noise(0.2, N, 0.45, N):.1f} points" in r["reason"]


def test_square_within_noise_is_silent():
    t = table(clean_cell(0.9), attacked("pgd", E8, 0.45), attacked("square", E8, 0.36))
    assert checks(t) == []


def test_square_ignores_ensembles_and_plugins():
    # autoattack (which runs Square itself) and a plugin are neither white- nor black-box
    t = table(clean_cell(0.9), attacked("autoattack", E8, 0.6), attacked("my_plugin", E8, 0.7), attacked("square", E8, 0.2))
    assert checks(t) == []


def test_zero_gradients():
    d = diagnose(table(clean_cell(0.9, zero_grad=0.2)))
    assert d["check"].tolist() == ["zero_gradients"]
    assert "20.0 % of the images (20 of 100)" in d.iloc[0]["reason"] and "5.0 %" in d.iloc[0]["reason"]
    assert (d.iloc[0]["attack"], d.iloc[0]["target"]) == ("none", "none")
    assert checks(table(clean_cell(0.9, zero_grad=0.03))) == []


def test_random_outputs():
    d = diagnose(table(clean_cell(0.9, randomness=0.25)))
    assert d["check"].tolist() == ["random_outputs"] and "0.25" in d.iloc[0]["reason"]
    assert checks(table(clean_cell(0.9, randomness=2e-6))) == []


def test_probability_outputs():
    d = diagnose(table(clean_cell(0.9, proba=1.0)))
    assert d["check"].tolist() == ["probability_outputs"] and "probabilities" in d.iloc[0]["reason"]
    assert checks(table(clean_cell(0.9, proba=0.0))) == []


def test_non_ok_rows_are_ignored():
    bad = [{**r, "status": s} for s in ("failed", "invalid")
           for r in [*attacked("pgd", E8, 0.95), *attacked("square", E8, 0.0), *attacked("pgd", 0.0, 0.1),
                     row("zero_grad_fraction", 1.0), row("probability_outputs", 1.0)]]
    assert checks(table(*reliable_base(), bad)) == []


def test_repeats_keep_the_row_with_most_images():
    # an earlier n=20 run of pgd at 8/255 rose; the n=100 run replaces it
    t = table(*reliable_base(), attacked("pgd", E8, 0.95, n=20))
    assert checks(t) == []


def test_unreliable_one_row_per_model():
    t = table(*reliable_base(model="good"), *reliable_base(model="good", model_seed=1),
              clean_cell(0.9, model="bad", proba=1.0), attacked("fgsm", E8, 0.3, model="bad"),
              attacked("pgd", E8, 0.7, model="bad"), attacked("pgd", E2, 0.2, model="bad"),
              [row("accuracy", 0.9, model="broken", status="failed")])
    u = unreliable(t)
    assert list(u.columns) == FLAG_COLUMNS
    assert len(u) == 4 and not u.duplicated(["model", "model_seed"]).any()
    u = u.set_index(["model", "model_seed"])
    assert not u.loc[("good", 0), "unreliable"] and u.loc[("good", 0), "unreliable_reason"] == ""
    assert not u.loc[("good", 1), "unreliable"] and not u.loc[("broken", 0), "unreliable"]
    bad = u.loc[("bad", 0)]
    assert bad["unreliable"]
    parts = bad["unreliable_reason"].split("; ")
    assert len(parts) == 3 and all(p.startswith("synth:test: ") for p in parts)
    assert any("rises from 20.0 %" in p for p in parts) and any("under pgd vs 30.0 % under fgsm" in p for p in parts)
    assert any("probabilities" in p for p in parts)


def test_unreliable_all_reliable_and_empty():
    u = unreliable(table(*reliable_base()))
    assert len(u) == 1 and not u["unreliable"].iloc[0] and u["unreliable_reason"].iloc[0] == ""
    assert list(unreliable(pd.DataFrame(columns=list(row("accuracy", 0.5)))).columns) == FLAG_COLUMNS
