"""Leaderboards from the tidy table."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from conftest import BENCH_ATTACKS, BENCH_EPS, BENCH_MODELS

from robustbench_wbc.bench import CLEAN
from robustbench_wbc.report import current_rows, eps_label, leaderboard, to_markdown
from robustbench_wbc.report.leaderboard import header, robust_column


@pytest.fixture(scope="module")
def board(bench_table):
    return leaderboard(bench_table)


ROBUST_COLS = [robust_column(a, "cls", "linf", e) for a in BENCH_ATTACKS for e in BENCH_EPS]


@pytest.mark.parametrize(("eps", "norm", "label"), [
    (8 / 255, "linf", "8/255"), (1 / 255, "linf", "1/255"), (64 / 255, "linf", "64/255"),
    (0.03, "linf", "0.03"), (0.5 / 255, "linf", "0.001961"),
    (0.5, "l2", "0.5"), (8 / 255, "l2", "0.03137"), (1.0, "l2", "1"),
])
def test_eps_label(eps, norm, label):
    assert eps_label(eps, norm) == label


def test_one_row_per_model_ranked(board):
    assert sorted(board["model"]) == sorted(BENCH_MODELS)
    ranks = board["rank"].tolist()
    assert ranks[0] == 1 and ranks == sorted(ranks)  # shared ranks where intervals overlap
    assert list(board.columns[:3]) == ["rank", "tied", "model"]
    assert board.attrs["by"] == "linf"


def test_columns(board):
    for col in ["clean_acc_id", "clean_acc_ood", "nucleus_dice_id", "cytoplasm_dice_id",
                "nucleus_dice_ood", "failed_cells", "worst_robust_acc", *ROBUST_COLS]:
        assert col in board.columns, col
    assert (board["failed_cells"] == 0).all()


def test_family_rows(board, tiny_cards):
    b = board.set_index("model")
    for m in BENCH_MODELS:
        assert b.loc[m, "family"] == tiny_cards[m].family
        assert b.loc[m, "labelled_images"] == tiny_cards[m].labelled_images
        assert b.loc[m, "masked_images"] == tiny_cards[m].masked_images
    unet = b.loc["tiny_unet"]
    assert np.isnan(unet["clean_acc_id"]) and np.isnan(unet["clean_acc_ood"])
    assert all(np.isnan(unet[c]) for c in ROBUST_COLS)
    assert 0 <= unet["nucleus_dice_id"] <= 1 and 0 <= unet["nucleus_dice_ood"] <= 1
    assert 0 <= unet["nucleus_dice_adv"] <= 1
    cls = b.loc["tiny_cls"]
    assert np.isnan(cls["nucleus_dice_id"])
    for m in ("tiny_cls", "tiny_multitask"):
        assert 0 <= b.loc[m, "clean_acc_id"] <= 1 and 0 <= b.loc[m, "clean_acc_ood"] <= 1
    assert 0 <= b.loc["tiny_multitask", "nucleus_dice_id"] <= 1


def test_robust_columns_below_clean(board):
    for _, row in board[board["family"] != "unet"].iterrows():
        for col in ROBUST_COLS:
            assert row[col] <= row["clean_acc_id"] + 1e-12, (row["model"], col)
        assert row["worst_robust_acc"] == pytest.approx(min(row[c] for c in ROBUST_COLS if c.endswith("8/255")))
        assert row["worst_robust_eps"] == pytest.approx(max(BENCH_EPS))


def test_numbers_come_from_the_table(board, bench_table):
    t = bench_table
    b = board.set_index("model")
    sel = t[(t["model"] == "tiny_cls") & (t["split"] == "synth:test") & (t["attack"] == CLEAN)
            & (t["metric"] == "accuracy")]
    assert b.loc["tiny_cls", "clean_acc_id"] == pytest.approx(sel["value"].item())
    sel = t[(t["model"] == "tiny_multitask") & (t["split"] == "synth:test") & (t["attack"] == "pgd")
            & (t["eps"] == BENCH_EPS[-1]) & (t["target"] == "cls") & (t["metric"] == "robust_accuracy")]
    assert b.loc["tiny_multitask", robust_column("pgd", "cls", "linf", BENCH_EPS[-1])] == pytest.approx(sel["value"].item())


def test_ranking_puts_unet_last(board):
    assert board.iloc[-1]["model"] == "tiny_unet"
    ranked = board[board["family"] != "unet"]
    keys = list(zip(ranked["worst_robust_acc"], ranked["clean_acc_ood"]))
    assert keys == sorted(keys, reverse=True)


def test_to_markdown(board):
    text = to_markdown(board)
    assert "Ranked by the worst robust accuracy under L∞" in text
    lines = [line for line in text.strip().splitlines() if line.startswith("|")]
    assert len(lines) == len(board) + 2
    head_line = lines[0]
    assert head_line.startswith("| rank | model |")
    for col in ROBUST_COLS:
        assert header(col) in head_line
    assert set(lines[1]) <= {"|", "-"}
    n_pipes = head_line.count("|")
    assert all(line.count("|") == n_pipes for line in lines)
    unet_line = next(line for line in lines if "tiny_unet" in line)
    assert "–" in unet_line  # missing numbers are shown as a dash, not "nan"
    assert "nan" not in text.lower()


def test_empty_inputs():
    assert leaderboard(pd.DataFrame()).empty
    assert "No results yet" in to_markdown(pd.DataFrame())


# --- ranking on a hand-made table --------------------------------------------------------------------
def _row(model, family, split, attack, metric, value, eps=0.0, status="ok", cell=None, target="cls",
         sha="w1", n=20, at="2026-11-25T12:00:00Z"):
    return {"model": model, "family": family, "recipe": "r", "labelled_images": 1, "masked_images": 0,
            "split": split, "attack": attack, "norm": "linf" if attack != CLEAN else "none", "eps": eps,
            "target": target if attack != CLEAN else "none", "metric": metric, "value": value,
            "status": status, "cell_id": cell or f"{model}-{split}-{attack}-{eps}-{sha}-{n}",
            "seed": 0, "params": "", "n": n, "model_sha256": sha, "finished_at": pd.Timestamp(at), "model_seed": 0}


def test_leaderboard_uses_newest_checkpoint_and_largest_n():
    rows = [
        _row("a", "classifier", "synth:test", CLEAN, "accuracy", 0.2, sha="old", at="2026-11-25T10:00:00Z"),
        _row("a", "classifier", "synth:test", CLEAN, "accuracy", 0.8, sha="new", n=20, at="2026-11-25T11:00:00Z"),
        _row("a", "classifier", "synth:test", CLEAN, "accuracy", 0.6, sha="new", n=40, at="2026-11-25T10:30:00Z"),
    ]
    table = pd.DataFrame(rows)
    kept = current_rows(table)
    assert kept["model_sha256"].unique().tolist() == ["new"]
    assert kept["value"].tolist() == [0.6]  # the larger n wins over the newer, smaller one
    assert leaderboard(table).set_index("model").loc["a", "clean_acc_id"] == pytest.approx(0.6)


def test_ranking_by_worst_robust_accuracy_then_ood():
    e = 8 / 255
    rows = []
    for model, clean, ood, pgd, fgsm in [("a", 0.9, 0.8, 0.1, 0.5), ("b", 0.5, 0.3, 0.4, 0.45),
                                         ("c", 0.6, 0.5, 0.4, 0.6)]:
        rows += [_row(model, "classifier", "synth:test", CLEAN, "accuracy", clean),
                 _row(model, "classifier", "synth:ood-lab-b", CLEAN, "accuracy", ood),
                 _row(model, "classifier", "synth:test", "pgd", "robust_accuracy", pgd, e),
                 _row(model, "classifier", "synth:test", "fgsm", "robust_accuracy", fgsm, e)]
    rows.append(_row("a", "classifier", "synth:test", "pgd", "status", np.nan, 2 / 255, status="failed"))
    board = leaderboard(pd.DataFrame(rows))
    # b and c tie on the worst case (0.4); c has the better OOD accuracy; a is broken by PGD
    assert board["model"].tolist() == ["c", "b", "a"]
    b = board.set_index("model")
    assert b.loc["a", "worst_robust_acc"] == pytest.approx(0.1)
    assert b.loc["a", "failed_cells"] == 1 and b.loc["b", "failed_cells"] == 0
    assert "pgd@linf=2/255" not in board.columns  # a failed cell gives no number


# --- mean ± sd over training seeds --------------------------------------------------------------------
def _seeded_table():
    """Model ``m`` at 3 training seeds with known numbers, model ``one`` at a single seed."""
    e = 8 / 255
    rows = []
    # seed: clean ID, clean OOD per split, pgd@8/255, fgsm@8/255, fgsm@2/255
    for seed, clean, oods, pgd, fgsm, fgsm2 in [(0, 0.2, (0.1, 0.3), 0.1, 0.3, 0.2), (1, 0.4, (0.4,), 0.3, 0.2, 0.4),
                                                (2, 0.6, (0.6,), 0.5, 0.6, 0.6)]:
        seed_rows = [_row("m", "classifier", "synth:test", CLEAN, "accuracy", clean),
                     _row("m", "classifier", "synth:test", "pgd", "robust_accuracy", pgd, e),
                     _row("m", "classifier", "synth:test", "fgsm", "robust_accuracy", fgsm, e),
                     _row("m", "classifier", "synth:test", "fgsm", "robust_accuracy", fgsm2, 2 / 255)]
        seed_rows += [_row("m", "classifier", split, CLEAN, "accuracy", v)
                      for split, v in zip(["synth:ood-lab-b", "synth:ood-stain-b"], oods)]
        rows += [{**r, "model_seed": seed, "model_sha256": f"w{seed}", "cell_id": f"{r['cell_id']}-s{seed}"}
                 for r in seed_rows]
    rows += [_row("one", "classifier", "synth:test", CLEAN, "accuracy", 0.9),
             _row("one", "classifier", "synth:ood-lab-b", CLEAN, "accuracy", 0.7),
             _row("one", "classifier", "synth:test", "pgd", "robust_accuracy", 0.05, e),
             _row("one", "classifier", "synth:test", "fgsm", "robust_accuracy", 0.15, e)]
    return pd.DataFrame(rows)


@pytest.fixture
def seeded_board():
    return leaderboard(_seeded_table())


def test_mean_and_sd_over_seeds(seeded_board):
    b = seeded_board.set_index("model")
    m = b.loc["m"]
    assert m["seeds"] == 3 and b.loc["one", "seeds"] == 1
    assert 100 * m["clean_acc_id"] == pytest.approx(40.0)  # 0.2, 0.4, 0.6
    assert 100 * m["clean_acc_id_sd"] == pytest.approx(20.0)  # sample sd (ddof=1), not 16.3 (ddof=0)
    # seed 0's two OOD splits average to 0.2 first; pooling all cells would give 0.35
    assert m["clean_acc_ood"] == pytest.approx(0.4) and m["clean_acc_ood_sd"] == pytest.approx(0.2)
    assert m["pgd@linf=8/255"] == pytest.approx(0.3) and m["pgd@linf=8/255_sd"] == pytest.approx(0.2)
    assert m["fgsm@linf=8/255"] == pytest.approx(11 / 30)
    assert m["fgsm@linf=8/255_sd"] == pytest.approx(np.std([0.3, 0.2, 0.6], ddof=1))
    assert m["fgsm@linf=2/255"] == pytest.approx(0.4) and m["fgsm@linf=2/255_sd"] == pytest.approx(0.2)
    # the worst case is each seed's worst at 8/255 (0.1, 0.2, 0.5), then averaged; not min(0.3, 0.367)
    assert m["worst_robust_acc"] == pytest.approx(0.8 / 3)
    assert m["worst_robust_acc_sd"] == pytest.approx(np.std([0.1, 0.2, 0.5], ddof=1))
    assert m["worst_robust_eps"] == pytest.approx(8 / 255)
    assert "worst_robust_eps_sd" not in b.columns and "seeds_sd" not in b.columns
    one = b.loc["one"]
    assert one["clean_acc_id"] == pytest.approx(0.9) and one["worst_robust_acc"] == pytest.approx(0.05)
    for col in ["clean_acc_id", "clean_acc_ood", "pgd@linf=8/255", "fgsm@linf=8/255", "worst_robust_acc"]:
        assert np.isnan(one[f"{col}_sd"]), col
    assert seeded_board["model"].tolist() == ["m", "one"]  # ranked by the mean worst case
    cols = list(seeded_board.columns)
    assert cols.index("clean_acc_id_sd") == cols.index("clean_acc_id") + 1  # each sd next to its mean
    assert cols.index("worst_robust_acc_sd") == cols.index("worst_robust_acc") + 1


def test_markdown_shows_mean_pm_sd_for_several_seeds(seeded_board):
    text = to_markdown(seeded_board)
    lines = [line for line in text.strip().splitlines() if line.startswith("|")]
    assert "_sd" not in lines[0]  # no column of its own
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    cells = {line.split("|")[2].strip(): [c.strip() for c in line.strip("|").split("|")] for line in lines[2:]}
    m, one = dict(zip(head, cells["m"])), dict(zip(head, cells["one"]))
    assert m["clean acc ID %"] == "40.0 ± 20.0"
    assert m["pgd L∞ 8/255 robust acc %"] == "30.0 ± 20.0"
    assert m["worst robust acc L∞ %"] == "26.7 ± 20.8"
    assert m["L∞ eps"] == "8/255" and m["seeds"] == "3"
    assert m["nucleus Dice ID %"] == "–"  # no number, no spread
    assert one["clean acc ID %"] == "90.0" and one["worst robust acc L∞ %"] == "5.0"
    assert "±" not in "|".join(cells["one"]) and one["L∞ eps"] == "8/255"


def test_csv_keeps_mean_and_sd_apart(seeded_board):
    from robustbench_wbc.report.leaderboard import to_csv

    df = pd.read_csv(io.StringIO(to_csv(seeded_board))).set_index("model")
    assert df.loc["m", "clean_acc_id"] == pytest.approx(0.4) and df.loc["m", "clean_acc_id_sd"] == pytest.approx(0.2)
    assert df.loc["m", "worst_robust_acc_sd"] == pytest.approx(np.std([0.1, 0.2, 0.5], ddof=1))
    assert np.isnan(df.loc["one", "clean_acc_id_sd"])
    # a board of single-seed models has the same columns, its _sd empty
    single = leaderboard(_seeded_table().query("model == 'one'"))
    df1 = pd.read_csv(io.StringIO(to_csv(single)))
    assert "clean_acc_id_sd" in df1.columns and df1["clean_acc_id_sd"].isna().all()


# --- per class, from the per-sample outcomes -----------------------------------------------------------
def test_by_class_recomputes_the_cell_means(bench_run, bench_table):
    from robustbench_wbc.bench import ResultStore
    from robustbench_wbc.data import CLASSES
    from robustbench_wbc.report.by_class import by_class, by_class_markdown

    out, _ = bench_run
    pc = by_class(ResultStore(out), bench_table)
    assert set(pc["class"]) <= set(CLASSES) and set(pc["metric"]) == {"accuracy", "nucleus_dice", "cytoplasm_dice"}
    assert "accuracy" not in set(pc.loc[pc["model"] == "tiny_unet", "metric"])
    assert "nucleus_dice" not in set(pc.loc[pc["model"] == "tiny_cls", "metric"])
    # the n-weighted mean over classes is the cell's own number
    clean = bench_table[(bench_table["attack"] == "none") & (bench_table["status"] == "ok")]
    for (model, split, metric), grp in pc.groupby(["model", "split", "metric"]):
        cell = clean[(clean["model"] == model) & (clean["split"] == split) & (clean["metric"] == metric)]
        assert np.average(grp["value"], weights=grp["n"]) == pytest.approx(cell["value"].iloc[0])
        assert grp["n"].sum() == cell["n"].iloc[0]
    md = by_class_markdown(pc, "nucleus_dice")
    assert md.splitlines()[0].startswith("| model | neutrophil ID") and "basophil OOD" in md.splitlines()[0]
    assert {line.split("|")[1].strip() for line in md.splitlines()[2:]} == {"tiny_multitask", "tiny_unet"}
    assert "No per-class" in by_class_markdown(pc, "robust_accuracy")


# --- rankings and ties -----------------------------------------------------------------------------------
def _ranked_table(values: dict[str, float], n: int) -> pd.DataFrame:
    e = 8 / 255
    rows = []
    for model, rob in values.items():
        rows += [_row(model, "classifier", "synth:test", CLEAN, "accuracy", 1.0, n=n),
                 _row(model, "classifier", "synth:ood-lab-b", CLEAN, "accuracy", 1 - rob, n=n),
                 _row(model, "classifier", "synth:test", "pgd", "robust_accuracy", rob, e, n=n)]
    return pd.DataFrame(rows)


def test_overlapping_intervals_share_a_rank():
    """0.50 and 0.45 on 100 images are within noise (Wilson ±10 points); 0.90 is clearly above both."""
    board = leaderboard(_ranked_table({"top": 0.9, "a": 0.5, "b": 0.45, "low": 0.05}, n=100))
    assert board["model"].tolist() == ["top", "a", "b", "low"]
    assert board["rank"].tolist() == [1, 2, 2, 4] and board["tied"].tolist() == [False, True, True, False]
    assert (board["key_low"] < board["worst_robust_acc"]).all() and (board["worst_robust_acc"] < board["key_high"]).all()
    text = to_markdown(board)
    assert "| 2= | a |" in text and "| 2= | b |" in text and "| 1 | top |" in text
    # on 10,000 images the same gap is a real difference
    big = leaderboard(_ranked_table({"top": 0.9, "a": 0.5, "b": 0.45, "low": 0.05}, n=10_000))
    assert big["rank"].tolist() == [1, 2, 3, 4] and not big["tied"].any()


def test_seed_intervals_use_the_spread_over_seeds(seeded_board):
    m = seeded_board.set_index("model").loc["m"]  # worst robust accuracy 0.1, 0.2, 0.5 over 3 seeds
    half = 4.302652729911275 * np.std([0.1, 0.2, 0.5], ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert m["key_low"] == pytest.approx(max(0.0, 0.8 / 3 - half)) and m["key_high"] == pytest.approx(0.8 / 3 + half)


def test_rank_by_ood_and_errors():
    by_ood = leaderboard(_ranked_table({"a": 0.2, "b": 0.6}, 1000), by="ood")
    assert by_ood.attrs["by"] == "ood" and by_ood["model"].tolist() == ["a", "b"]  # OOD 0.8 above 0.4
    with pytest.raises(ValueError, match="unknown ranking"):
        leaderboard(_ranked_table({"a": 0.2}, 10), by="speed")
    with pytest.raises(ValueError, match="nothing to rank by 'l2'"):
        leaderboard(_ranked_table({"a": 0.2}, 10), by="l2")


def test_rank_by_seg_on_the_bench(bench_table):
    b = leaderboard(bench_table, by="seg")
    assert b.attrs["by"] == "seg"
    assert b["model"].tolist()[-1] == "tiny_cls"  # no masks: ranks last
    segs = b["nucleus_dice_adv"].dropna()
    assert segs.is_monotonic_decreasing


def test_effective_robustness_column_only_where_the_fit_carries_it():
    def table(models, recipe="full"):
        return pd.DataFrame([{**r, "recipe": recipe} for m, (i, o) in models.items()
                             for r in (_row(m, "classifier", "synth:test", CLEAN, "accuracy", i, n=100),
                                       _row(m, "classifier", "synth:ood-lab-b", CLEAN, "accuracy", o, n=100))])

    three = leaderboard(table({"a": (0.9, 0.5), "b": (0.7, 0.3), "c": (0.8, 0.6)}))
    assert three["effective_robustness"].isna().all()  # three baselines: no residual, and the legend says why
    assert "fewer than the 4 a line needs" in to_markdown(three)
    four = table({"a": (0.9, 0.5), "b": (0.7, 0.3), "c": (0.8, 0.45), "d": (0.6, 0.2)})
    board = leaderboard(four).set_index("model")
    from robustbench_wbc.report.shift import effective_robustness

    fit, per_model = effective_robustness(four)
    assert fit["determined"], fit["reason"]
    assert board["effective_robustness"].to_dict() == pytest.approx(per_model.set_index("model")["residual"].to_dict())
    md = to_markdown(board.reset_index())
    assert "effective robustness (points)" in md and "fitted on 4 standard-trained models" in md
    assert f"R² {fit['r2']:.2f}" in md
    # the same numbers from models of a recipe this version does not know: not baselines, no fit
    assert leaderboard(table({"a": (0.9, 0.5), "b": (0.7, 0.3), "c": (0.8, 0.45), "d": (0.6, 0.2)}, recipe="r"))[
        "effective_robustness"].isna().all()


def test_an_ensemble_column_of_some_models_does_not_blank_the_others_worst_case():
    """Regression: the L2 ensemble existed only for the multitask model (cls + joint attacks), and as a
    required column it made every classifier's worst L2 robust accuracy NaN."""
    rows = []
    for model, family in (("c", "classifier"), ("m", "multitask")):
        rows += [_row(model, family, "synth:test", CLEAN, "accuracy", 1.0),
                 {**_row(model, family, "synth:test", "pgd-l2", "robust_accuracy", 0.4, 1.0), "norm": "l2"}]
    rows.append({**_row("m", "multitask", "synth:test", "pgd-l2", "robust_accuracy", 0.6, 1.0, target="joint",
                        cell="m-joint"), "norm": "l2"})
    ens = pd.DataFrame([{"model": "m", "model_seed": 0, "split": "synth:test", "norm": "l2", "eps": 1.0, "n": 20,
                         "attacks": 2, "attack_ids": "pgd-l2,pgd-l2:joint", "robust_accuracy": 0.35}])
    b = leaderboard(pd.DataFrame(rows), ens, by="l2").set_index("model")
    assert b.loc["c", "worst_robust_acc_l2"] == pytest.approx(0.4)
    assert b.loc["m", "worst_robust_acc_l2"] == pytest.approx(0.35)
