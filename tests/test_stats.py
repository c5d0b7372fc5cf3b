"""Intervals over images (Wilson, bootstrap) and their place in the tidy table."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from conftest import BENCH_N

from robustbench_wbc.stats import balanced, mean, proportion, wilson

PROPORTIONS = {"accuracy", "robust_accuracy", "attack_success_rate"}


@pytest.mark.parametrize(("k", "n"), [(0, 10), (10, 10), (3, 7), (128, 256), (1, 1000)])
def test_wilson_contains_the_estimate_and_stays_in_0_1(k, n):
    lo, hi = wilson(k, n)
    assert 0 <= lo <= k / n <= hi <= 1
    assert hi - lo < wilson(k * 4, n * 4)[1] - wilson(k * 4, n * 4)[0] + 0.5  # sanity: finite width


def test_wilson_matches_the_textbook_value():
    """Brown, Cai & DasGupta (2001): 2 of 20 → [0.0279, 0.3010]."""
    lo, hi = wilson(2, 20)
    assert (round(lo, 4), round(hi, 4)) == (0.0279, 0.3010)


def test_wilson_narrows_with_n():
    w = [wilson(n // 2, n) for n in (20, 200, 2000)]
    widths = [hi - lo for lo, hi in w]
    assert widths[0] > widths[1] > widths[2]
    assert all(math.isnan(v) for v in wilson(0, 0))  # no images, no interval


def test_bootstrap_mean_is_seeded_and_covers_the_mean():
    v = torch.rand(200, generator=torch.Generator().manual_seed(0))
    a, b = mean(v), mean(v)
    assert a == b and a.n == 200
    assert a.ci_low < a.value < a.ci_high
    assert a.value == pytest.approx(v.double().mean().item())
    constant = mean(torch.full((50,), 0.7))
    assert constant.ci_low == pytest.approx(0.7) and constant.ci_high == pytest.approx(0.7)


def test_balanced_accuracy_interval():
    hits = torch.tensor([True] * 90 + [False] * 10 + [True] * 5 + [False] * 5)
    labels = torch.tensor([0] * 100 + [1] * 10)
    m = balanced(hits, labels)
    assert m.value == pytest.approx((0.9 + 0.5) / 2) and m.n == 110
    assert m.ci_low < m.value < m.ci_high
    p = proportion(hits)
    assert p.value == pytest.approx(95 / 110)


def test_table_rows_carry_n_and_intervals(bench_table):
    t = bench_table[bench_table["status"] == "ok"]
    with_ci = t[t["ci_low"].notna()]
    assert set(PROPORTIONS) <= set(with_ci["metric"]) and {"nucleus_dice", "mean_perturbation_linf"} <= set(with_ci["metric"])
    assert (with_ci["ci_low"] <= with_ci["value"] + 1e-12).all() and (with_ci["value"] <= with_ci["ci_high"] + 1e-12).all()
    # attack success rate is a share of the images right before the attack: its n is theirs
    for cell_id, cell in t[t["metric"] == "attack_success_rate"].groupby("cell_id"):
        clean = t[(t["model"] == cell["model"].iloc[0]) & (t["split"] == cell["split"].iloc[0])
                  & (t["attack"] == "none") & (t["metric"] == "accuracy")]
        assert cell["n"].iloc[0] == round(clean["value"].iloc[0] * BENCH_N), cell_id
    # per-class recall: one row per class present, over that class's images
    recalls = t[t["metric"].str.startswith("recall_") & (t["model"] == "tiny_cls") & (t["split"] == "synth:test")]
    assert len(recalls) >= 2 and recalls["n"].sum() == BENCH_N
    assert pd.api.types.is_float_dtype(t["ci_low"]) and not math.isnan(recalls["ci_low"].iloc[0])
