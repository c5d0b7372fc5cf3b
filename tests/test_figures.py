"""Figures of the tidy table and the segmentation panel; ``wbc-robust show segmentation|figures`` through CliRunner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from conftest import WIDE, cli_text
from PIL import Image

from robustbench_wbc.bench.store import ResultStore
from robustbench_wbc.cli.show import show_app
from robustbench_wbc.data.splits import SPLITS, SplitData
from robustbench_wbc.report import figures as F


def png_ok(path: Path, fig, dpi: int = 100) -> np.ndarray:
    """Checks the PNG: there, of the figure's size at ``dpi``, not blank; gives its pixels."""
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = (np.round(fig.get_size_inches() * dpi)).astype(int)
        assert im.size == (w, h)
        pixels = np.asarray(im.convert("RGB"), dtype=float)
    assert pixels.std() > 0
    return pixels


def line(ax, label: str):
    return next(ln for ln in ax.get_lines() if ln.get_label() == label)


def clean_acc_rows(table: pd.DataFrame) -> pd.DataFrame:
    return table[(table["attack"] == "none") & (table["metric"] == "accuracy")]


@pytest.fixture(scope="module")
def test_only(bench_table) -> pd.DataFrame:
    """The bench table without its OOD split."""
    return bench_table[bench_table["split"] == "synth:test"]


# --- robust accuracy against eps ------------------------------------------------------------------
def test_robust_vs_eps_worst_over_attacks(bench_table, tmp_path):
    out = tmp_path / "sub" / "robust.png"
    fig = F.robust_vs_eps(bench_table, out)
    png_ok(out, fig)
    ax = fig.axes[0]
    labels = {ln.get_label() for ln in ax.get_lines()}
    assert labels == {"tiny_cls", "tiny_multitask"}  # a U-Net has no class head
    t = bench_table[bench_table["split"] == "synth:test"]
    for model in labels:
        got = line(ax, model)
        xs, ys = np.asarray(got.get_xdata(), float), np.asarray(got.get_ydata(), float)
        clean = clean_acc_rows(t)
        assert xs[0] == 0 and ys[0] == pytest.approx(clean.loc[clean["model"] == model, "value"].item())
        adv = t[(t["model"] == model) & (t["metric"] == "robust_accuracy") & t["target"].isin(["cls", "joint"])]
        worst = adv.groupby("eps")["value"].min()
        np.testing.assert_allclose(xs[1:], worst.index.to_numpy())
        np.testing.assert_allclose(ys[1:], worst.to_numpy())
    # one attack only, and the nucleus Dice under attacks on the masks
    fig = F.robust_vs_eps(bench_table, tmp_path / "fgsm.png", attack="fgsm")
    fgsm = t[(t["model"] == "tiny_cls") & (t["attack"] == "fgsm") & (t["metric"] == "robust_accuracy")]
    np.testing.assert_allclose(line(fig.axes[0], "tiny_cls").get_ydata()[1:], fgsm.sort_values("eps")["value"])
    fig = F.robust_vs_eps(bench_table, tmp_path / "dice.png", target="seg")
    png_ok(tmp_path / "dice.png", fig)
    assert {ln.get_label() for ln in fig.axes[0].get_lines()} == {"tiny_unet", "tiny_multitask"}


def test_robust_vs_eps_errors(bench_table, test_only, tmp_path):
    with pytest.raises(ValueError, match="table is empty"):
        F.robust_vs_eps(pd.DataFrame(), tmp_path / "x.png")
    with pytest.raises(ValueError, match="no splits of role 'corruption'"):
        F.robust_vs_eps(bench_table, tmp_path / "x.png", split_role="corruption")
    with pytest.raises(ValueError, match=r"under attack cw .*\['fgsm', 'pgd'\]"):
        F.robust_vs_eps(bench_table, tmp_path / "x.png", attack="cw")
    with pytest.raises(ValueError, match="--attacks pgd"):
        F.robust_vs_eps(test_only[test_only["attack"] == "none"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="unknown target"):
        F.robust_vs_eps(bench_table, tmp_path / "x.png", target="mask")
    assert not (tmp_path / "x.png").exists()


# --- OOD accuracy per shift and severity ----------------------------------------------------------
def with_corruptions(table: pd.DataFrame) -> pd.DataFrame:
    """The table plus made-up clean cells of two corruptions at severities 1, 3 and 5."""
    base = clean_acc_rows(table[table["split"] == "synth:test"])
    parts = [table]
    for name in ("defocus_blur", "jpeg_compression"):
        for sev in (1, 3, 5):
            r = base.copy()
            r["split"], r["corruption"], r["severity"] = f"synth:c-{name}-{sev}", name, sev
            r["value"] = (1 - 0.15 * sev) * r["value"]
            r["ci_low"], r["ci_high"] = r["value"] - 0.05, r["value"] + 0.05
            parts.append(r)
    return pd.concat(parts, ignore_index=True)


def test_ood_by_shift(bench_table, tmp_path):
    fig = F.ood_by_shift(bench_table, tmp_path / "ood.png")
    png_ok(tmp_path / "ood.png", fig)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["test", "lab-b"]
    clean = clean_acc_rows(bench_table)
    cls = clean[clean["model"] == "tiny_cls"].set_index("split")["value"]
    np.testing.assert_allclose(line(ax, "tiny_cls").get_ydata(), [cls["synth:test"], cls["synth:ood-lab-b"]])

    table = with_corruptions(bench_table)
    fig = F.ood_by_shift(table, tmp_path / "ood_c.png")
    png_ok(tmp_path / "ood_c.png", fig)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown] == ["domain shift", "defocus_blur", "jpeg_compression"]
    got = line(shown[1], "tiny_cls")
    np.testing.assert_allclose(got.get_xdata(), [0, 1, 3, 5])  # severity 0: the test split
    np.testing.assert_allclose(got.get_ydata(), cls["synth:test"] * np.array([1, 0.85, 0.55, 0.25]))
    # corruptions alone, no domain shift
    fig = F.ood_by_shift(table[table["split"] != "synth:ood-lab-b"], tmp_path / "c.png")
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["defocus_blur", "jpeg_compression"]
    # the Dice of the U-Net too
    fig = F.ood_by_shift(bench_table, tmp_path / "dice.png", metric="nucleus_dice")
    assert "tiny_unet" in {ln.get_label() for ln in fig.axes[0].get_lines()}


def test_ood_by_shift_errors(test_only, tmp_path):
    with pytest.raises(ValueError, match="no OOD splits in the table: run with --splits synth:ood-lab-b"):
        F.ood_by_shift(test_only, tmp_path / "x.png")
    with pytest.raises(ValueError, match="not a tidy results table"):
        F.ood_by_shift(pd.DataFrame({"a": [1]}), tmp_path / "x.png")
    with pytest.raises(ValueError, match="no OOD or corruption split with clean balanced_accuracy"):
        F.ood_by_shift(test_only.assign(split="synth:ood-lab-b").query("metric != 'balanced_accuracy'"),
                       tmp_path / "x.png", metric="balanced_accuracy")


# --- in distribution vs OOD ------------------------------------------------------------------------
ID_OOD = {"m_a": (0.9, 0.6), "m_b": (0.8, 0.55), "m_c": (0.6, 0.5), "m_d": (0.5, 0.2)}


@pytest.fixture(scope="module")
def four_models(bench_table) -> pd.DataFrame:
    """Clean accuracy of four made-up models (copies of tiny_cls's cells), ID and OOD as in ``ID_OOD``."""
    clean = clean_acc_rows(bench_table)
    src = clean[clean["model"] == "tiny_cls"]
    parts = []
    for i, (model, (acc_id, acc_ood)) in enumerate(ID_OOD.items()):
        r = src.copy()
        r["model"], r["model_sha256"] = model, f"sha{i}"
        r["family"] = "multitask" if i % 2 else "classifier"
        r["value"] = np.where(r["split"] == "synth:test", acc_id, acc_ood)
        parts.append(r)
    return pd.concat(parts, ignore_index=True)


def test_id_vs_ood_draws_the_effective_robustness_line(four_models, tmp_path):
    """The figure's line is the shift analysis's fit (standard-trained models, logit axes), not a line of its own."""
    from robustbench_wbc.report.shift import effective_robustness, from_axis, to_axis

    big = four_models.assign(n=2000)  # enough images that the four ID values are told apart
    points = F.id_ood_points(big)
    assert points.set_index("model")[["id", "ood"]].to_dict("index") == {
        m: {"id": pytest.approx(a), "ood": pytest.approx(b)} for m, (a, b) in ID_OOD.items()}
    fig = F.id_vs_ood(big, tmp_path / "scatter.png")
    png_ok(tmp_path / "scatter.png", fig)
    ax = fig.axes[0]
    fit_, _ = effective_robustness(big)
    assert fit_["determined"], fit_["reason"]
    fit = next(ln for ln in ax.get_lines() if ln.get_gid() == "fit")
    xs = np.asarray(fit.get_xdata(), float)
    np.testing.assert_allclose(fit.get_ydata(), from_axis(fit_["slope"] * to_axis(xs) + fit_["intercept"]))
    ident = next(ln for ln in ax.get_lines() if ln.get_gid() == "identity")
    np.testing.assert_allclose(ident.get_xdata(), ident.get_ydata())
    drawn = np.concatenate([c.get_offsets() for c in ax.collections if str(c.get_gid()).startswith("points-")])
    np.testing.assert_allclose(sorted(map(tuple, drawn)), sorted(ID_OOD.values()))
    assert {c.get_gid() for c in ax.collections} >= {"points-classifier", "points-multitask"}
    assert {t.get_text() for t in ax.texts} == set(ID_OOD)  # labelled by model
    # on 20 images the same four models cannot carry a line: none is drawn, and the title says why
    fig = F.id_vs_ood(four_models, tmp_path / "small.png")
    assert not [ln for ln in fig.axes[0].get_lines() if ln.get_gid() == "fit"]
    assert "no line" in fig.axes[0].get_title()


def test_id_vs_ood_on_the_bench(bench_table, test_only, tmp_path):
    fig = F.id_vs_ood(bench_table, tmp_path / "bench.png")  # two models at the same ID accuracy: no fit
    png_ok(tmp_path / "bench.png", fig)
    with pytest.raises(ValueError, match="no OOD splits in the table: run with --splits synth:ood-lab-b"):
        F.id_vs_ood(test_only, tmp_path / "x.png")
    with pytest.raises(ValueError, match="role test.*--splits synth:test"):
        F.id_vs_ood(bench_table[bench_table["split"] != "synth:test"], tmp_path / "x.png")


# --- the segmentation panel ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def test_images() -> SplitData:
    return SPLITS.get("synth:test").load(40, 32)


@pytest.fixture(scope="module")
def seg_models(load_tiny) -> dict:
    return {"U-Net": load_tiny("tiny_unet"), "multitask": load_tiny("tiny_multitask")}


def test_segmentation_panel(seg_models, test_images, tmp_path):
    out = tmp_path / "seg.png"
    fig = F.segmentation_panel(seg_models, test_images, out, attack_eps=8 / 255)
    pixels = png_ok(out, fig)
    assert pixels.shape[:2] == tuple((np.round(fig.get_size_inches()[::-1] * 100)).astype(int))
    grid = [ax for ax in fig.axes if ax.images]
    assert len(grid) == 6 * 4  # (3 classes clean + 3 attacked) × (image, two masks, truth)
    assert [ax.get_title() for ax in grid[:4]] == ["image", "U-Net", "multitask", "ground truth"]
    assert [ax.get_ylabel() for ax in grid[::4]] == ["eosinophil", "lymphocyte", "basophil",
                                                     "eosinophil\npgd 8/255", "lymphocyte\npgd 8/255",
                                                     "basophil\npgd 8/255"]
    picks = F.pick_per_class(test_images, F.SEGMENTATION_CLASSES)
    for r, i in enumerate(picks):  # the ground truth is the picked image's mask, in every block
        for block in (0, 3):
            np.testing.assert_array_equal(grid[(block + r) * 4 + 3].images[0].get_array(), test_images.masks[i].numpy())
    clean_mask = grid[1].images[0].get_array()
    assert clean_mask.shape == (32, 32) and set(np.unique(clean_mask)) <= {0, 1, 2}
    # the attacked image stays within the budget of the clean one
    delta = np.abs(grid[12].images[0].get_array() - grid[0].images[0].get_array())
    assert 0 < delta.max() <= 8 / 255 + 1e-6
    # without an attack: the clean block only, the same masks
    fig2 = F.segmentation_panel(seg_models, test_images, tmp_path / "clean.png")
    png_ok(tmp_path / "clean.png", fig2)
    grid2 = [ax for ax in fig2.axes if ax.images]
    assert len(grid2) == 12
    np.testing.assert_array_equal(grid2[1].images[0].get_array(), clean_mask)


def test_segmentation_panel_errors(seg_models, test_images, load_tiny, tmp_path):
    out = tmp_path / "x.png"
    keep = (test_images.labels != test_images.classes.index("basophil")).nonzero().flatten()
    no_basophil = SplitData("synth:test", test_images.images[keep], test_images.labels[keep], test_images.masks[keep])
    with pytest.raises(ValueError, match=r"no basophil among the 32 images of synth:test: load more images \(--n-images\)"):
        F.segmentation_panel(seg_models, no_basophil, out)
    with pytest.raises(ValueError, match="has no mask head"):
        F.segmentation_panel({"classifier": load_tiny("tiny_cls")}, test_images, out)
    no_masks = SplitData("x", test_images.images, test_images.labels, None)
    with pytest.raises(ValueError, match="x has no masks"):
        F.segmentation_panel(seg_models, no_masks, out)
    with pytest.raises(ValueError, match="no models"):
        F.segmentation_panel({}, test_images, out)
    with pytest.raises(ValueError, match="unknown class 'platelet'"):
        F.segmentation_panel(seg_models, test_images, out, classes=("platelet",))
    assert not out.exists()


# --- the CLI ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def show_cli() -> typer.Typer:
    """A local app with ``show`` mounted as the real one will have it."""
    app = typer.Typer()
    app.add_typer(show_app, name="show")

    @app.callback()
    def main() -> None:
        """Test app."""

    return app


def test_cli_show_segmentation(show_cli, cli, tiny_cards, tmp_path):
    out = tmp_path / "figs" / "seg.png"
    args = ["show", "segmentation", "--unet", "tiny_unet", "--multitask", "tiny_multitask", "--n-images", "40"]
    result = cli.invoke(show_cli, [*args, "--eps", "2/255", "--out", str(out)], env=WIDE)
    assert result.exit_code == 0, cli_text(result)
    assert f"wrote {out}" in cli_text(result) and "pgd (seg) at eps 2/255" in cli_text(result)
    with Image.open(out) as im:
        big = im.size
        assert np.asarray(im.convert("L"), dtype=float).std() > 0
    result = cli.invoke(show_cli, [*args, "--eps", "none", "--out", str(tmp_path / "clean.png")], env=WIDE)
    assert result.exit_code == 0, cli_text(result)
    with Image.open(tmp_path / "clean.png") as im:
        assert im.size[0] == big[0] and im.size[1] < big[1]  # no attacked rows
    result = cli.invoke(show_cli, [*args, "--eps", "1/255,2/255", "--out", str(tmp_path / "x.png")], env=WIDE)
    assert result.exit_code == 2 and "takes one budget" in cli_text(result)
    result = cli.invoke(show_cli, [*args[:-1], "3", "--out", str(tmp_path / "x.png")], env=WIDE)
    assert result.exit_code == 2 and "load more images (--n-images)" in cli_text(result)
    assert not (tmp_path / "x.png").exists()


def test_cli_show_figures(show_cli, cli, bench_run, bench_table, test_only, tmp_path):
    out, _ = bench_run
    to = tmp_path / "figs"
    result = cli.invoke(show_cli, ["show", "figures", "--out", str(out), "--to", str(to)], env=WIDE)
    assert result.exit_code == 0, cli_text(result)
    names = ("robust_vs_eps.png", "nucleus_dice_vs_eps.png", "ood_by_shift.png", "id_vs_ood.png")
    for name in names:
        assert (to / name).stat().st_size > 0 and str(to / name) in cli_text(result)
    # a run without OOD splits: those figures are skipped, with the reason
    store = ResultStore(tmp_path / "run")
    for cell_id, rows in test_only.groupby("cell_id"):
        store.put(cell_id, rows)
    result = cli.invoke(show_cli, ["show", "figures", "--out", str(tmp_path / "run")], env=WIDE)
    assert result.exit_code == 0, cli_text(result)
    text = cli_text(result)
    assert "skipped ood_by_shift.png" in text and "--splits synth:ood-lab-b" in text
    assert sorted(p.name for p in (tmp_path / "run" / "figures").iterdir()) == ["nucleus_dice_vs_eps.png",
                                                                               "robust_vs_eps.png"]
    result = cli.invoke(show_cli, ["show", "figures", "--out", str(tmp_path / "empty")], env=WIDE)
    assert result.exit_code == 1 and "no results in" in cli_text(result)
