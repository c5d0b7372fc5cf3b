"""The real-finetune recipe: folds, shots, cross-validation and its command."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import WIDE, cli_text
from test_real_data import _zheng_root

from robustbench_wbc.cli import app
from robustbench_wbc.data.real import register_dataset, unregister_dataset
from robustbench_wbc.data.splits import SPLITS
from robustbench_wbc.models import finetune as ft

QUICK = ft.replace(ft.FINETUNE, steps=8)
LABELS = (1,) * 8 + (2,) * 4 + (3,) * 4 + (4,) * 3 + (5,)  # 20 cells, unbalanced as real smears are


def test_folds_score_every_image_once_and_stratify():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 5)
    folds = ft.stratified_folds(labels, 5, seed=3)
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested) == list(range(20))
    for f in folds:
        assert set(f.test).isdisjoint(f.pool) and len(f.test) + len(f.pool) == 20
        assert np.bincount(labels[f.test], minlength=3).tolist() == [2, 1, 1]
    with pytest.raises(ValueError, match="at least 2 folds"):
        ft.stratified_folds(labels, 1)


def test_shots_come_from_the_pool_stratified():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 5)
    pool = np.arange(4, 20)
    shots = ft.draw_shots(pool, labels, 6, seed=0)
    assert set(shots) <= set(pool) and len(set(shots)) == 6
    assert np.bincount(labels[shots], minlength=3).tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match="only 16 images"):
        ft.draw_shots(pool, labels, 17, seed=0)


@pytest.fixture
def real_tiny(tmp_path):
    root = _zheng_root(tmp_path / "zheng", labels=LABELS)
    register_dataset("ftz", root)
    yield SPLITS.get("ftz:all").load(None, 32), root
    unregister_dataset("ftz")


def test_cross_validate(real_tiny, tiny_cards, tmp_path, monkeypatch):
    data, _ = real_tiny
    store = tmp_path / "fits"
    table = ft.cross_validate(["tiny_cls", "tiny_unet", "tiny_multitask"], data, [0, 6], folds=4, recipe=QUICK, store=store)
    # every image scored once per (model, shots)
    n = table.drop_duplicates(["model", "shots", "fold"]).groupby(["model", "shots"])["n_test"].sum()
    assert (n == len(LABELS)).all()
    metrics = table.groupby("model")["metric"].unique().map(set).to_dict()
    assert metrics["tiny_cls"] == {"accuracy", "balanced_accuracy"}
    assert metrics["tiny_unet"] == {"nucleus_dice", "cytoplasm_dice"}
    assert metrics["tiny_multitask"] == metrics["tiny_cls"] | metrics["tiny_unet"]
    # shots = 0 is the zoo model as it is, on the same folds
    from robustbench_wbc.models.hub import load_model

    base, _ = load_model("tiny_cls")
    fold0 = ft.stratified_folds(data.labels.numpy(), 4)[0]
    expected = ft.score(base, ft._take(data, fold0.test))["accuracy"]
    got = table.query("model == 'tiny_cls' and shots == 0 and fold == 0 and metric == 'accuracy'")["value"].iloc[0]
    assert got == pytest.approx(expected)
    # fine-tuning changes the model: some number moves
    wide = table.pivot_table(index=["model", "fold", "metric"], columns="shots", values="value")
    assert (wide[0] != wide[6]).any()
    # committed fits are reused: a re-run trains nothing and gives the same table
    monkeypatch.setattr(ft, "fit", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained again")))
    again = ft.cross_validate(["tiny_cls", "tiny_unet", "tiny_multitask"], data, [0, 6], folds=4, recipe=QUICK, store=store)
    pd.testing.assert_frame_equal(again, table)


def test_cross_validate_needs_masks(tiny_cards):
    data = SPLITS.get("synth:test").load(10, 32)
    data.masks = None
    with pytest.raises(ValueError, match="needs masks"):
        ft.cross_validate(["tiny_cls"], data, [0], folds=2)


def test_finetune_command(cli, real_tiny, tiny_cards, tmp_path):
    _, root = real_tiny
    out = tmp_path / "ft"
    result = cli.invoke(app, ["finetune", "--data", f"ftcli={root}", "--models", "tiny_cls,tiny_multitask", "--shots", "0,4",
                              "--folds", "2", "--steps", "8", "--out", str(out)], env=WIDE)
    unregister_dataset("ftcli")
    assert result.exit_code == 0, cli_text(result)
    assert "**Balanced accuracy**" in result.stdout and "| tiny_multitask |" in result.stdout
    assert set(pd.read_parquet(out / "finetune.parquet")["shots"]) == {0, 4}
    bad = cli.invoke(app, ["finetune", "--data", f"ftbad={root}", "--shots", "a,b"], env=WIDE)
    unregister_dataset("ftbad")
    assert bad.exit_code == 2 and "--shots" in cli_text(bad)
