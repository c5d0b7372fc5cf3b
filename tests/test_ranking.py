"""Ranks compared paired on the same images, over seeds and images together; OOD splits resampled by cell."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from robustbench_wbc.bench.cells import CLEAN
from robustbench_wbc.report import leaderboard, to_markdown
from robustbench_wbc.report.ranking import Evidence, paired_ranks

E = 8 / 255


def _rows(model: str, seed: int, outcomes: dict[str, np.ndarray], samples: dict[str, pd.DataFrame]) -> list[dict]:
    """A clean cell and a PGD cell per model seed (split → per-image robust outcome); their samples go in ``samples``."""
    rows = []
    for split, robust in outcomes.items():
        n = len(robust)
        for attack in (CLEAN, "pgd"):
            cell = f"{model}-{seed}-{split}-{attack}"
            clean = attack == CLEAN
            # clean: every image right on the test split; on an OOD split `robust` says which are right
            right = robust if (clean and split != "synth:test") else np.ones(n, bool) if clean else robust
            samples[cell] = pd.DataFrame({"index": np.arange(n), "label": np.zeros(n, int),
                                          "clean_pred": np.where(right if clean else np.ones(n, bool), 0, 1),
                                          "robust": robust})
            if split != "synth:test" and not clean:
                continue
            rows.append({"model": model, "model_seed": seed, "family": "classifier", "recipe": "full",
                         "labelled_images": 1, "masked_images": 0, "split": split, "attack": attack,
                         "norm": "none" if clean else "linf", "eps": 0.0 if clean else E,
                         "target": "none" if clean else "cls", "metric": "accuracy" if clean else "robust_accuracy",
                         "value": float(right.mean()) if clean else float(robust.mean()), "n": n, "status": "ok",
                         "cell_id": cell, "seed": 0, "params": "", "model_sha256": f"{model}-w{seed}",
                         "finished_at": pd.Timestamp("2026-12-01", tz="UTC")})
    return rows


def _board(models: dict[str, list[np.ndarray]], by: str = "linf", paired: bool = True, split: str = "synth:test"):
    samples: dict[str, pd.DataFrame] = {}
    rows = []
    for model, seeds in models.items():
        for seed, robust in enumerate(seeds):
            rows += _rows(model, seed, {split: robust} if split == "synth:test" else
                          {"synth:test": np.ones(len(robust), bool), split: robust}, samples)
    return leaderboard(pd.DataFrame(rows), by=by, samples=samples.__getitem__ if paired else None)


def test_paired_comparison_separates_what_overlapping_intervals_tie():
    """A is right on every image B is right on, and on 14 more of 200: Wilson's intervals overlap (±7 points),
    but on the same images B never beats A, so A is ahead."""
    b = np.zeros(200, bool)
    b[:100] = True
    a = b.copy()
    a[100:114] = True
    paired = _board({"a": [a], "b": [b]})
    assert paired["model"].tolist() == ["a", "b"] and paired["rank"].tolist() == [1, 2]
    assert "compared paired on the same cells" in to_markdown(paired)
    unpaired = _board({"a": [a], "b": [b]}, paired=False)
    assert unpaired["rank"].tolist() == [1, 1]  # what the intervals alone can say
    assert "wholly above" in to_markdown(unpaired)


def test_models_that_disagree_image_by_image_share_a_rank():
    """Same accuracy gap as above, but the images each gets right are unrelated: the difference is noise."""
    rng = np.random.default_rng(1)
    a, b = rng.random(200) < 0.57, rng.random(200) < 0.50
    board = _board({"a": [a], "b": [b]})
    assert board["rank"].tolist() == [1, 1] and board["tied"].all()


def test_two_seeds_hierarchical_bootstrap_against_the_t_interval():
    """Two trainings a few points apart on 500 images each: t(1) = 12.7 ties every such pair of models; resampling
    seeds and images together orders the clearly separated pair and ties the one whose seeds disagree."""
    rng = np.random.default_rng(2)

    def seeds(*ps):
        return [rng.random(500) < p for p in ps]

    models = {"good": seeds(0.80, 0.78), "worse": seeds(0.62, 0.60), "erratic": seeds(0.95, 0.45)}
    board = _board(models).set_index("model")
    assert board.loc["good", "rank"] == 1 and board.loc["worse", "rank"] == 2
    assert board.loc["erratic", "rank"] == 1  # its seeds span both: nothing is shown ahead of it, nor is it ahead
    fallback = _board(models, paired=False).set_index("model")
    assert (fallback["rank"] == 1).all()  # the t-interval over two seeds ties all three


def test_ood_splits_of_the_same_cells_are_resampled_by_cell():
    """ood-lab-b and ood-stain-b hold the same test cells: counting both as independent images narrows the
    interval by √2. Resampled by cell (or, without samples, counted once), the interval is that of one split."""
    rng = np.random.default_rng(3)
    right = rng.random(300) < 0.6
    samples: dict[str, pd.DataFrame] = {}
    one = _rows("m", 0, {"synth:test": np.ones(300, bool), "synth:ood-lab-b": right}, samples)
    two = _rows("m", 0, {"synth:test": np.ones(300, bool), "synth:ood-lab-b": right, "synth:ood-stain-b": right}, samples)
    for paired in (samples.__getitem__, None):
        w1 = leaderboard(pd.DataFrame(one), by="ood", samples=paired).iloc[0]
        w2 = leaderboard(pd.DataFrame(two), by="ood", samples=paired).iloc[0]
        width1, width2 = w1["key_high"] - w1["key_low"], w2["key_high"] - w2["key_low"]
        assert width2 == pytest.approx(width1, rel=0.05), (paired is not None, width1, width2)


def test_paired_ranks_unit():
    clusters = np.array([f"s#{i}" for i in range(100)])
    hi = Evidence(((( clusters, np.r_[np.ones(70), np.zeros(30)]),),))
    lo = Evidence((((clusters, np.r_[np.ones(40), np.zeros(60)]),),))
    ranks, low, high = paired_ranks({"hi": hi, "lo": lo}, ["hi", "lo", "none"])
    assert ranks.tolist() == [1, 2, 3] and np.isnan(low[2]) and low[0] < 0.7 < high[0]
    assert hi.value() == pytest.approx(0.7)


def test_the_leaderboard_shows_numbers_that_mix_code_versions_loudly(bench_table):
    """A worst case over FGSM cells of an older engine and PGD cells of this one is one number from two codes:
    the board names the component and its values, and counts the cells this install's code did not compute."""
    t = bench_table.copy()
    old = (t["model"] == "tiny_cls") & (t["attack"] == "fgsm")
    t.loc[old, "code_engine"] = 99
    board = leaderboard(t).set_index("model")
    assert board.loc["tiny_cls", "mixed_versions"] == "engine: 1, 99"
    assert board.loc["tiny_multitask", "mixed_versions"] == ""
    md = to_markdown(board.reset_index())
    assert "mixed code versions" in md.splitlines()[0] and "engine: 1, 99" in md
    n_old = t.loc[old, "cell_id"].nunique()
    assert f"**{n_old} of {t['cell_id'].nunique()} cells were computed by other code" in md
    assert "mixed_versions" not in leaderboard(bench_table)  # one code: no column, no note


def _cell(model, attack, value, n=200, eps=E, status="ok", target="cls", split="synth:test", seed=0, metric=None,
          norm="linf"):
    clean = attack == CLEAN
    return {"model": model, "model_seed": seed, "family": "classifier", "recipe": "full", "labelled_images": 1,
            "masked_images": 0, "split": split, "attack": attack, "norm": "none" if clean else norm,
            "eps": 0.0 if clean else eps, "target": "none" if clean else target,
            "metric": metric or ("accuracy" if clean else "robust_accuracy" if status == "ok" else "status"),
            "value": value, "n": n, "status": status, "cell_id": f"{model}-{seed}-{split}-{attack}-{eps}-{n}-{target}",
            "seed": 0, "params": "", "model_sha256": f"{model}{seed}", "finished_at": pd.Timestamp("2026-12-01", tz="UTC")}


def test_an_attack_run_on_one_model_only_does_not_blank_the_others():
    """Regression: every cls attack at the largest eps was required of every model, so one model's extra attack
    (a plugin, a bf16 run) made every other model's worst case unknown and moved the ranks."""
    rows = [_cell("a", CLEAN, 1.0), _cell("a", "pgd", 0.55), _cell("b", CLEAN, 1.0), _cell("b", "pgd", 0.40),
            _cell("b", "noise", 0.38)]
    board = leaderboard(pd.DataFrame(rows)).set_index("model")
    assert board.loc["a", "worst_robust_acc"] == pytest.approx(0.55)
    assert board.loc["b", "worst_robust_acc"] == pytest.approx(0.38)
    # but an attack that was run and failed leaves that model's worst case unknown, never better
    failed = leaderboard(pd.DataFrame([*rows, _cell("a", "noise", np.nan, status="failed")])).set_index("model")
    assert np.isnan(failed.loc["a", "worst_robust_acc"]) and failed.loc["b", "worst_robust_acc"] == pytest.approx(0.38)


def test_ensemble_evidence_is_read_from_the_ensemble_s_own_groups():
    """Attacks at different n: the ensemble (two or more attacks per group) covers only the n=200 group; the
    paired evidence must be built from the same group, or the board falls back to intervals (and says why)."""
    from robustbench_wbc.report.ensemble import ensemble

    class Store:
        def __init__(self, table, samples):
            self._t, self._s = table, samples

        def table(self):
            return self._t

        def samples(self, cell_id):
            return self._s[cell_id]

    rng = np.random.default_rng(5)
    rows, samples = [], {}
    for model in ("a", "b"):
        for attack, n, p in ((CLEAN, 200, 1.0), ("pgd", 200, 0.5), ("fgsm", 200, 0.7), (CLEAN, 100, 1.0),
                             ("apgd-ce", 100, 0.8)):
            robust = rng.random(n) < p
            r = _cell(model, attack, float(robust.mean()), n=n)
            rows.append(r)
            samples[r["cell_id"]] = pd.DataFrame({"index": np.arange(n), "label": np.zeros(n, int),
                                                  "clean_pred": np.zeros(n, int), "robust": robust})
    table = pd.DataFrame(rows)
    store = Store(table, samples)
    board = leaderboard(table, ensemble(store, table), samples=store.samples)
    assert "compared paired on the same cells" in board.attrs["rank_method"]
    broken = dict(samples)
    first = next(k for k in broken if k.startswith("a-") and "pgd" in k)
    broken[first] = broken[first].assign(robust=True)  # outcomes that no longer give the number
    board = leaderboard(table, ensemble(store, table), samples=broken.__getitem__)
    assert "wholly above" in board.attrs["rank_method"] and "a: its per-sample outcomes give" in board.attrs["rank_method"]


def test_two_seeds_vary_as_two_trainings_do():
    """Resampling 2 seeds with replacement halves their variance; scaled by √(k/(k−1)) it is s²/k."""
    from robustbench_wbc.report.ranking import replicates

    clusters = np.array([f"s#{i}" for i in range(2000)])
    seeds = tuple(((clusters, np.full(2000, v)),) for v in (0.3, 0.7))  # no image noise: only the seeds vary
    stats = replicates({"m": Evidence(seeds)}, n=4000)["m"]
    s = np.std([0.3, 0.7], ddof=1)
    assert np.std(stats) == pytest.approx(s / np.sqrt(2), rel=0.1)


def test_seg_numbers_are_read_at_one_budget_for_every_model():
    rows = []
    for model, eps, dice in (("a", 2 / 255, 0.9), ("b", 8 / 255, 0.5)):
        rows += [_cell(model, CLEAN, 0.9, metric="nucleus_dice"),
                 _cell(model, "pgd", dice, eps=eps, target="seg", metric="nucleus_dice")]
    board = leaderboard(pd.DataFrame(rows), by="seg").set_index("model")
    assert np.isnan(board.loc["a", "nucleus_dice_adv"])  # attacked at 2/255 only: not compared with 8/255
    assert board.loc["b", "nucleus_dice_adv"] == pytest.approx(0.5)


def test_rows_are_in_rank_order():
    """1 + the models ahead: a noisy model nothing is shown ahead of ranks 1 below a firm one's number."""
    rng = np.random.default_rng(7)
    firm_hi, firm_lo = rng.random(2000) < 0.7, rng.random(2000) < 0.6
    noisy = [rng.random(2000) < p for p in (0.95, 0.35)]
    board = _board({"hi": [firm_hi, firm_hi], "lo": [firm_lo, firm_lo], "noisy": noisy})
    assert board["rank"].is_monotonic_increasing


def test_real_cells_rank_by_balanced_accuracy_paired():
    """Real sets are mostly neutrophils: the ranking reads balanced accuracy, and its paired evidence (each image
    weighted by 1/(its class's images × classes)) gives the table's number back."""
    import torch

    from robustbench_wbc.metrics import balanced_accuracy

    rng = np.random.default_rng(11)
    labels = np.r_[np.zeros(80, int), np.ones(15, int), np.full(5, 2)]
    rows, samples = [], {}
    for model, p in (("a", 0.9), ("b", 0.5)):
        right = rng.random(len(labels)) < p
        bal = balanced_accuracy(torch.tensor(right), torch.tensor(labels))
        for metric, value in (("accuracy", right.mean()), ("balanced_accuracy", bal)):
            r = _cell(model, CLEAN, float(value), n=len(labels), split="zheng2018:all", metric=metric)
            rows.append(r)
        samples[r["cell_id"]] = pd.DataFrame({"index": np.arange(len(labels)), "label": labels,
                                              "clean_pred": np.where(right, labels, (labels + 1) % 3)})
    board = leaderboard(pd.DataFrame(rows), samples=samples.__getitem__)
    assert board.attrs["by"] == "real" and "compared paired" in board.attrs["rank_method"]
    assert board["model"].tolist() == ["a", "b"]
