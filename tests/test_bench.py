"""The bench: cell ids, planning, the result store, and runs of the tiny models."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import BENCH_ATTACKS, BENCH_EPS, BENCH_MODELS, BENCH_N, BENCH_SPLITS

from robustbench_wbc.attacks import ATTACKS
from robustbench_wbc.bench import CLEAN, COLUMNS, Cell, ResultStore, plan, run, runner
from robustbench_wbc.models import MODELS

SHA = "a" * 64


def _cell(**changes) -> Cell:
    base = dict(model="tiny_cls", split="synth:test", attack="pgd", eps=8 / 255, target="cls", seed=0,
                n_images=20, model_sha256=SHA, norm="linf", backend="torchattacks",
                params={"steps": 10, "rel_stepsize": 0.25, "random_start": True})
    return Cell(**{**base, **changes})


# --- cells -------------------------------------------------------------------------------------
def test_cell_id_is_stable():
    a, b = _cell(), _cell()
    assert a.id == b.id
    assert len(a.id) == 20 and int(a.id, 16) >= 0
    # param order does not matter, only values
    assert _cell(params={"random_start": True, "rel_stepsize": 0.25, "steps": 10}).id == a.id


@pytest.mark.parametrize("change", [
    {"eps": 4 / 255}, {"model_sha256": "b" * 64}, {"model": "tiny_multitask"}, {"split": "synth:ood-lab-b"},
    {"attack": "fgsm"}, {"target": "seg"}, {"seed": 1}, {"n_images": 21},
    {"params": {"steps": 20, "rel_stepsize": 0.25, "random_start": True}},
])
def test_cell_id_changes_with_every_coordinate(change):
    assert _cell(**change).id != _cell().id


def test_clean_cell_and_cost():
    clean = Cell("tiny_cls", "synth:test", CLEAN, 0.0, "none", 0, 20, SHA)
    assert clean.is_clean and not _cell().is_clean
    assert clean.cost() == 1.0
    assert _cell().cost() > _cell(attack="fgsm", params={}).cost() > clean.cost()


# --- plan ----------------------------------------------------------------------------------------
def _expected_attack_cells(model_id: str, attacks, eps) -> int:
    family = MODELS.get(model_id).family
    return sum(len(ATTACKS.get(a).default_eps if eps is None else eps)
               for a in attacks for t in runner.default_targets(family) if t in ATTACKS.get(a).targets)


@pytest.mark.parametrize("eps", [list(BENCH_EPS), None], ids=["given-eps", "default-eps"])
def test_plan_matrix(tiny_cards, eps):
    models, splits = list(BENCH_MODELS), list(BENCH_SPLITS)
    cells = plan(models, splits, list(BENCH_ATTACKS), eps, 30, 0, tiny_cards)
    assert len({c.id for c in cells}) == len(cells)
    for m in models:
        card = tiny_cards[m]
        for s in splits:
            mine = [c for c in cells if c.model == m and c.split == s]
            clean = [c for c in mine if c.is_clean]
            assert len(clean) == 1
            assert (clean[0].eps, clean[0].target, clean[0].n_images) == (0.0, "none", 30)
            attacked = [c for c in mine if not c.is_clean]
            assert len(attacked) == _expected_attack_cells(m, BENCH_ATTACKS, eps)
            assert all(c.model_sha256 == card.weights_sha256 for c in mine)
            assert {c.target for c in attacked} == set(runner.default_targets(card.family))
            for c in attacked:
                entry = ATTACKS.get(c.attack)
                assert c.eps in (entry.default_eps if eps is None else eps)
                assert (c.norm, c.backend, c.params) == (entry.norm, entry.backend, entry.params)


def test_default_targets_follow_the_heads():
    assert runner.default_targets("classifier") == ("cls",)
    assert runner.default_targets("unet") == ("seg",)
    assert "cls" in runner.default_targets("multitask")


def test_plan_caps_n_at_the_split_size(tiny_cards):
    cells = plan(["tiny_cls"], ["synth:test"], [], None, 10**6, 0, tiny_cards)
    assert [c.n_images for c in cells] == [500]
    cells = plan(["tiny_cls"], ["synth:test"], [], None, None, 0, tiny_cards)
    assert [c.n_images for c in cells] == [500]


# --- the result store ----------------------------------------------------------------------------
def _rows(cell_id: str, status: str = "ok", value: float = 0.5) -> pd.DataFrame:
    return pd.DataFrame({"cell_id": [cell_id] * 2, "model": ["m", "m"], "split": ["s", "s"],
                         "attack": ["none", "none"], "metric": ["accuracy", "other"],
                         "status": [status] * 2, "value": [value, 1.0]})


def test_store_put_table_is_done(tmp_path):
    store = ResultStore(tmp_path / "out")
    assert store.table().empty
    assert store.status("c1") is None and not store.is_done("c1")
    samples = pd.DataFrame({"index": [0, 1], "correct": [True, False]})
    store.put("c1", _rows("c1"), samples)
    store.put("c2", _rows("c2", status="failed"))
    store.put("c3", _rows("c3", status="invalid"))
    assert store.status("c1") == "ok" and store.is_done("c1")
    assert store.status("c2") == "failed" and not store.is_done("c2")
    assert store.status("c3") == "invalid" and not store.is_done("c3")
    pd.testing.assert_frame_equal(store.samples("c1"), samples)
    table = store.table()
    assert len(table) == 6 and set(table["cell_id"]) == {"c1", "c2", "c3"}
    assert table["value"].dtype == np.float64
    # a retried cell replaces its rows
    store.put("c2", _rows("c2", value=0.9))
    assert store.is_done("c2")
    assert len(store.table()) == 6
    leftovers = [p for p in (tmp_path / "out").rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def test_store_refuses_empty_rows(tmp_path):
    store = ResultStore(tmp_path)
    with pytest.raises(ValueError, match="no rows"):
        store.put("c1", _rows("c1").iloc[:0])
    assert store.status("c1") is None


def test_store_export(tmp_path):
    store = ResultStore(tmp_path)
    store.put("c1", _rows("c1"))
    pq, csv = store.export()
    assert pq == tmp_path / "results.parquet" and csv == tmp_path / "results.csv"
    pd.testing.assert_frame_equal(pd.read_parquet(pq), store.table())
    assert len(pd.read_csv(csv)) == 2
    assert not list(tmp_path.glob(".*"))


# --- runs of the tiny models -----------------------------------------------------------------------
def test_run_summary(bench_run):
    out, summary = bench_run
    assert summary.failed == [] and summary.skipped == 0
    assert summary.ok == summary.planned
    expected = sum(len(BENCH_SPLITS) * (1 + _expected_attack_cells(m, BENCH_ATTACKS, BENCH_EPS))
                   for m in BENCH_MODELS)
    assert summary.planned == expected


def test_run_table_schema(bench_table):
    t = bench_table
    assert list(t.columns) == COLUMNS
    assert t["value"].dtype == np.float64 and t["eps"].dtype == np.float64
    assert set(t["status"]) == {"ok"} and (t["reason"] == "").all()
    assert t["value"].notna().all()
    assert set(t["model"]) == set(BENCH_MODELS) and set(t["split"]) == set(BENCH_SPLITS)
    per_image = ~t["metric"].str.startswith("recall_") & (t["metric"] != "attack_success_rate")
    assert (t.loc[per_image, "n"] == BENCH_N).all()  # the others count a subset (tests/test_stats.py)
    assert (t["n"] <= BENCH_N).all()
    assert t["run_id"].nunique() == 1
    assert set(t.loc[t["split"] == "synth:test", "domain"]) == {"source"}
    assert set(t.loc[t["split"] == "synth:ood-lab-b", "domain"]) == {"lab-b"}
    for m in BENCH_MODELS:
        sel = t[t["model"] == m]
        assert set(sel["family"]) == {MODELS.get(m).family}
        assert sel["model_sha256"].nunique() == 1
    for metric in ("accuracy", "robust_accuracy", "nucleus_dice", "cytoplasm_dice", "attack_success_rate"):
        vals = t.loc[t["metric"] == metric, "value"]
        assert len(vals) and vals.between(0, 1).all(), metric


def test_one_clean_accuracy_row_per_model_and_split(bench_table):
    t = bench_table
    clean_acc = t[(t["attack"] == CLEAN) & (t["metric"] == "accuracy")]
    counts = clean_acc.groupby(["model", "split"]).size()
    with_logits = {m for m in BENCH_MODELS if MODELS.get(m).family != "unet"}
    assert set(counts.index) == {(m, s) for m in with_logits for s in BENCH_SPLITS}
    assert (counts == 1).all()
    # a U-Net has no accuracy at all; its clean cells give Dice and IoU
    unet = t[t["model"] == "tiny_unet"]
    assert not unet["metric"].isin(["accuracy", "robust_accuracy", "attack_success_rate"]).any()
    unet_clean = unet[unet["attack"] == CLEAN]
    assert set(unet_clean["metric"]) == {"nucleus_dice", "cytoplasm_dice", "nucleus_iou", "cytoplasm_iou",
                                         "zero_grad_fraction", "output_randomness"}  # the model checks
    assert len(unet_clean) == 6 * len(BENCH_SPLITS)


def test_robust_accuracy_never_exceeds_clean(bench_table):
    t = bench_table
    clean = t[(t["attack"] == CLEAN) & (t["metric"] == "accuracy")].set_index(["model", "split"])["value"]
    robust = t[t["metric"] == "robust_accuracy"]
    assert set(robust["model"]) == {m for m in BENCH_MODELS if MODELS.get(m).family != "unet"}
    assert len(robust) > 0
    for _, r in robust.iterrows():
        assert r["value"] <= clean[(r["model"], r["split"])] + 1e-12, r.to_dict()


def test_attack_success_rate_is_consistent(bench_table):
    t = bench_table
    clean = t[(t["attack"] == CLEAN) & (t["metric"] == "accuracy")].set_index(["model", "split"])["value"]
    keys = ["model", "split", "attack", "eps", "target"]
    attacked = t[t["attack"] != CLEAN].pivot_table(index=keys, columns="metric", values="value")
    for key, r in attacked.dropna(subset=["robust_accuracy"]).iterrows():
        acc = clean[(key[0], key[1])]
        if acc > 0:
            assert r["robust_accuracy"] == pytest.approx(acc * (1 - r["attack_success_rate"]), abs=1e-6)  # float32 means


def test_perturbations_within_eps(bench_table):
    t = bench_table
    linf = t[t["metric"] == "mean_perturbation_linf"]
    assert len(linf) == len(t[t["attack"] != CLEAN].drop_duplicates("cell_id"))
    assert (linf["value"] <= linf["eps"] + 1e-6).all()
    assert (linf["value"] > 0).all()


def test_cross_task_rows(bench_table):
    """Every attack on a multitask model records the damage to both heads."""
    t = bench_table
    mt = t[(t["model"] == "tiny_multitask") & (t["attack"] != CLEAN)]
    assert "cls" in set(mt["target"])
    for _, cell in mt.groupby("cell_id"):
        metrics = set(cell["metric"])
        assert {"robust_accuracy", "nucleus_dice", "cytoplasm_dice"} <= metrics, metrics
    unet = t[(t["model"] == "tiny_unet") & (t["attack"] != CLEAN)]
    assert set(unet["target"]) == {"seg"}
    assert set(t.loc[t["model"] == "tiny_cls", "target"]) == {"none", "cls"}


def test_results_files_written(bench_run, bench_table):
    out, _ = bench_run
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), bench_table)
    csv = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert list(csv.columns) == COLUMNS and len(csv) == len(bench_table)
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]


def test_samples_per_ok_cell(bench_run, bench_table):
    out, _ = bench_run
    store = ResultStore(out)
    cells = bench_table.drop_duplicates("cell_id")
    assert len(list((out / "samples").glob("*.parquet"))) == len(cells)
    for _, c in cells.iterrows():
        s = store.samples(c["cell_id"])
        assert len(s) == BENCH_N
        assert s["index"].tolist() == list(range(BENCH_N))
        assert s["label"].tolist() == [i % 5 for i in range(BENCH_N)]
        if c["family"] != "unet":
            assert "clean_pred" in s
        if c["attack"] != CLEAN:
            assert (s["perturbation_linf"] <= c["eps"] + 1e-5).all()
            if c["family"] != "unet":
                assert "adv_pred" in s


def test_rerun_skips_everything(bench_run, bench_table, tmp_path):
    out, first = bench_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    again = run(list(BENCH_MODELS), list(BENCH_SPLITS), list(BENCH_ATTACKS), copy,
                eps=list(BENCH_EPS), n_images=BENCH_N)
    assert again.planned == first.planned and again.skipped == again.planned
    assert again.ok == 0 and again.failed == []
    table = ResultStore(copy).table()
    drop = ["run_id", "time_s", "finished_at"]
    pd.testing.assert_frame_equal(table.drop(columns=drop), bench_table.drop(columns=drop))


def test_resume_reruns_only_missing_cells_with_same_numbers(bench_run, bench_table, tmp_path):
    out, first = bench_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    t = bench_table
    victim = t[(t["attack"] == "pgd") & (t["model"] == "tiny_cls")]["cell_id"].iloc[0]
    (copy / "cells" / f"{victim}.parquet").unlink()
    again = run(list(BENCH_MODELS), list(BENCH_SPLITS), list(BENCH_ATTACKS), copy,
                eps=list(BENCH_EPS), n_images=BENCH_N)
    assert again.ok == 1 and again.skipped == first.planned - 1
    table = ResultStore(copy).table()
    drop = ["run_id", "time_s", "finished_at"]
    pd.testing.assert_frame_equal(table.drop(columns=drop), t.drop(columns=drop))  # same numbers
    assert table.loc[table["cell_id"] == victim, "run_id"].iloc[0] != t["run_id"].iloc[0]


def test_seeded_models_train_apart_and_the_leaderboard_averages_them(tmp_path, tiny_cards):
    """`tiny_cls@1` is tiny_cls from seed 1: its own checkpoint; the leaderboard row is the seed mean."""
    from robustbench_wbc.bench import ResultStore, run
    from robustbench_wbc.models import MODELS, load_model
    from robustbench_wbc.models.zoo import with_seeds
    from robustbench_wbc.report import leaderboard

    entry = MODELS.get("tiny_cls@1")
    assert (entry.id, entry.seed, entry.family) == ("tiny_cls@1", 1, "classifier")
    assert with_seeds(["tiny_cls"], [0, 1, 2]) == ["tiny_cls", "tiny_cls@1", "tiny_cls@2"]
    _, card = load_model("tiny_cls@1")
    assert card.id == "tiny_cls@1" and card.seed == 1
    assert card.weights_sha256 != tiny_cards["tiny_cls"].weights_sha256

    summary = run(["tiny_cls", "tiny_cls@1"], ["synth:test"], ["fgsm"], tmp_path, eps=[2 / 255], n_images=20)
    assert not summary.failed
    table = ResultStore(tmp_path).table()
    assert set(table["model"]) == {"tiny_cls"} and set(table["model_seed"]) == {0, 1}
    acc = table[(table["metric"] == "accuracy")].set_index("model_seed")["value"]
    board = leaderboard(table).set_index("model")
    assert board.loc["tiny_cls", "seeds"] == 2
    assert board.loc["tiny_cls", "clean_acc_id"] == pytest.approx((acc[0] + acc[1]) / 2)


def test_balanced_accuracy_is_the_mean_class_recall(bench_table):
    """On a class-balanced split it equals accuracy; it is computed from the same per-sample hits."""
    from robustbench_wbc.metrics import balanced_accuracy

    clean = bench_table[(bench_table["attack"] == "none") & (bench_table["split"] == "synth:test")]
    for _model, grp in clean.groupby("model"):
        values = dict(zip(grp["metric"], grp["value"]))
        if "accuracy" in values:
            assert values["balanced_accuracy"] == pytest.approx(values["accuracy"])
        else:
            assert "balanced_accuracy" not in values
    hits = torch.tensor([True] * 9 + [False] + [False] * 2)
    labels = torch.tensor([0] * 10 + [1] * 2)
    assert balanced_accuracy(hits, labels) == pytest.approx((0.9 + 0.0) / 2)
