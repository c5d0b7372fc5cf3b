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
