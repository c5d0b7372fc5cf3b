"""Morphometry (robustbench_wbc.data.morphometry) on hand-made masks with known answers, on SynthWBC
cells, on the real Zheng2018 cells where present, and the calibration script end to end on a tiny set."""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from robustbench_wbc.data.morphometry import (
    SHAPE_STATS,
    STAT_COLUMNS,
    compare,
    convex_hull_area,
    lobe_count,
    measure,
    solidity,
    summarise,
)
from robustbench_wbc.data.synth import CLASSES, generate

REPO = Path(__file__).resolve().parents[1]
ZHENG = (REPO / ".." / "shared" / "data" / "zheng2018-dataset1").resolve()


def disk(size: int, r: float, cy: float | None = None, cx: float | None = None) -> np.ndarray:
    c = (size - 1) / 2
    y, x = np.mgrid[:size, :size]
    return np.hypot(y - (c if cy is None else cy), x - (c if cx is None else cx)) <= r


def cell_mask(size: int = 64, r_cell: float = 25, nucleus: np.ndarray | None = None) -> np.ndarray:
    m = disk(size, r_cell).astype(np.uint8)
    if nucleus is not None:
        m[nucleus & (m == 1)] = 2
    return m


def grey(size: int) -> np.ndarray:
    return np.full((size, size, 3), 0.5)


# --- shapes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("r", [6, 12, 20])
def test_disk_area_diameter_solidity_and_one_lobe(r):
    nuc = disk(64, r)
    out = measure(grey(64), cell_mask(64, 28, nuc))
    assert out["nucleus_area"] == pytest.approx(math.pi * r**2, rel=0.05)
    assert out["cell_area"] == pytest.approx(math.pi * 28**2, rel=0.02)
    assert out["cell_diameter"] == pytest.approx(56, rel=0.01)
    assert out["nc_ratio"] == pytest.approx(out["nucleus_area"] / out["cell_area"])
    assert out["nucleus_solidity"] == pytest.approx(1.0, abs=0.01)
    assert out["nucleus_lobes"] == 1 and out["nucleus_components"] == 1
    assert out["cell_clipped"] == 0 and math.isnan(out["um_per_px"])


def test_two_separate_disks_are_two_lobes():
    nuc = disk(64, 8, cx=20) | disk(64, 8, cx=44)
    out = measure(grey(64), cell_mask(64, 30, nuc))
    assert out["nucleus_lobes"] == 2 and out["nucleus_components"] == 2
    assert out["nucleus_solidity"] < 0.85  # the hull spans the gap


@pytest.mark.parametrize("strand", [1, 2, 3])
def test_lobes_joined_by_a_thin_strand_are_two(strand):
    nuc = disk(64, 8, cx=20) | disk(64, 8, cx=44)
    nuc[31:31 + strand, 20:45] = True  # a filament narrower than a third of the lobes' width (17 px)
    assert lobe_count(nuc) == 2
    assert measure(grey(64), cell_mask(64, 30, nuc))["nucleus_components"] == 1


def test_broad_neck_ellipse_and_band_are_one_lobe():
    dumbbell = disk(64, 8, cx=27) | disk(64, 8, cx=37)  # overlapping: the neck (12 px) is most of the width (17)
    assert lobe_count(dumbbell) == 1
    y, x = np.mgrid[:64, :64]
    assert lobe_count(((y - 32) / 10) ** 2 + ((x - 32) / 25) ** 2 <= 1) == 1
    band = np.zeros((64, 64), bool)
    band[20:28, 8:56] = True
    band[20:50, 8:16] = True  # an L of even width: one lobe, however bent
    assert lobe_count(band) == 1


def test_three_lobes_in_a_row_and_specks_do_not_count():
    nuc = disk(80, 7, cx=16) | disk(80, 7, cx=40) | disk(80, 7, cx=64)
    nuc[39:41, 16:64] = True
    assert lobe_count(nuc) == 3
    speck = disk(80, 12).copy()
    speck[5, 5] = True  # a one-pixel speck far away is narrower than a third of the nucleus
    assert lobe_count(speck) == 1


def test_l_shape_solidity_below_one():
    m = np.zeros((40, 40), bool)
    m[5:35, 5:12] = True
    m[28:35, 5:35] = True
    area = int(m.sum())
    hull = convex_hull_area(m)
    assert hull > area
    assert solidity(m) == pytest.approx(area / hull)
    assert 0.5 < solidity(m) < 0.8
    assert solidity(np.ones((6, 9), bool)) == 1.0


def test_degenerate_and_empty_regions():
    line = np.zeros((10, 10), bool)
    line[4, 2:8] = True
    assert convex_hull_area(line) == 6 and solidity(line) == 1.0
    assert convex_hull_area(np.zeros((5, 5), bool)) == 0.0 and math.isnan(solidity(np.zeros((5, 5), bool)))
    out = measure(grey(32), cell_mask(32, 10))  # a cell without nucleus
    assert out["nucleus_area"] == 0 and out["nc_ratio"] == 0 and out["nucleus_lobes"] == 0
    assert math.isnan(out["nucleus_solidity"]) and math.isnan(out["nucleus_R_mean"])
    empty = measure(grey(16), np.zeros((16, 16), np.uint8))
    assert empty["cell_area"] == 0 and math.isnan(empty["nc_ratio"])


def test_um_per_px_scales_areas_by_its_square():
    m = cell_mask(64, 25, disk(64, 10))
    px = measure(grey(64), m)
    um = measure(grey(64), m, um_per_px=0.25)
    assert um["cell_area"] == pytest.approx(px["cell_area"] * 0.0625)
    assert um["nucleus_area"] == pytest.approx(px["nucleus_area"] * 0.0625)
    assert um["cell_diameter"] == pytest.approx(px["cell_diameter"] * 0.25)
    for k in ("nc_ratio", "nucleus_solidity", "nucleus_lobes", "nucleus_R_mean"):
        assert um[k] == px[k]
    assert um["um_per_px"] == 0.25


def test_clipped_cell_is_flagged():
    m = np.zeros((32, 32), np.uint8)
    m[:10, :10] = 1
    assert measure(grey(32), m)["cell_clipped"] == 1


# --- colour ---------------------------------------------------------------------------------------
COLOURS = {2: (0.2, 0.3, 0.4), 1: (0.6, 0.5, 0.7), 0: (0.9, 0.8, 0.85)}


def painted(mask: np.ndarray) -> np.ndarray:
    img = np.zeros((*mask.shape, 3))
    for v, c in COLOURS.items():
        img[mask == v] = c
    return img


def test_colour_stats_of_constant_regions_are_exact():
    m = cell_mask(48, 18, disk(48, 8))
    out = measure(painted(m), m)
    for region, v in (("nucleus", 2), ("cytoplasm", 1), ("background", 0)):
        for k, ch in enumerate("RGB"):
            assert out[f"{region}_{ch}_mean"] == pytest.approx(COLOURS[v][k], abs=1e-12)
            assert out[f"{region}_{ch}_sd"] == pytest.approx(0, abs=1e-12)
            od = -math.log10(COLOURS[v][k] / COLOURS[0][k])
            assert out[f"{region}_od_{ch}_mean"] == pytest.approx(od, abs=1e-12)
            assert out[f"{region}_od_{ch}_sd"] == pytest.approx(0, abs=1e-12)
    assert [out[f"background_ref_{c}"] for c in "RGB"] == pytest.approx(COLOURS[0])
    assert set(out) == {*STAT_COLUMNS, "um_per_px"}
    assert all(isinstance(v, float) for v in out.values())


def test_colour_stats_known_sd_uint8_input_and_margin():
    m = cell_mask(48, 18, disk(48, 8))
    img = painted(m)
    img[m == 1] = 0.5
    cyto = np.argwhere(m == 1)
    half = cyto[: len(cyto) // 2]
    img[half[:, 0], half[:, 1]] = 0.7  # two values, half and half: sd 0.1 exactly
    out = measure(img, m)
    assert out["cytoplasm_R_mean"] == pytest.approx(0.6) and out["cytoplasm_R_sd"] == pytest.approx(0.1)
    u8 = measure(np.round(painted(m) * 255).astype(np.uint8), m)
    assert u8["nucleus_G_mean"] == pytest.approx(round(0.3 * 255) / 255)
    # a margin leaves out the pixels along region edges: a blurred rim no longer counts
    rim = painted(m)
    edge = (m == 2) & ~disk(48, 7)
    rim[edge] = 0.0
    assert measure(rim, m)["nucleus_R_sd"] > 0
    assert measure(rim, m, margin_px=2)["nucleus_R_sd"] == pytest.approx(0, abs=1e-12)


def test_no_background_gives_nan_od():
    m = np.ones((10, 10), np.uint8)
    m[3:7, 3:7] = 2
    out = measure(np.full((10, 10, 3), 0.4), m)
    assert out["nucleus_R_mean"] == pytest.approx(0.4)
    assert math.isnan(out["nucleus_od_R_mean"]) and math.isnan(out["background_ref_G"])


@pytest.mark.parametrize("image, mask, um, match", [
    (np.zeros((8, 8)), np.zeros((8, 8), np.uint8), None, "H×W×3"),
    (np.zeros((8, 8, 3)), np.zeros((7, 8), np.uint8), None, "differs"),
    (np.zeros((8, 8, 3)), np.full((8, 8), 3, np.uint8), None, "mask values"),
    (np.full((8, 8, 3), 2.0), np.zeros((8, 8), np.uint8), None, r"\[0, 1\]"),
    (np.zeros((8, 8, 3)), np.zeros((8, 8), np.uint8), 0.0, "positive"),
])
def test_bad_inputs_raise(image, mask, um, match):
    with pytest.raises(ValueError, match=match):
        measure(image, mask, um)


# --- summarise and compare ------------------------------------------------------------------------
def test_summarise_tiny_frame():
    df = pd.DataFrame({"class": ["monocyte"] * 5 + ["neutrophil"] * 2,
                       "x": [1.0, 2.0, 3.0, 4.0, np.nan, 10.0, 20.0],
                       "y": [0, 0, 0, 0, 0, 1, 1],
                       "um_per_px": 0.2, "stem": "a"})
    s = summarise(df, "real")
    assert list(s.columns) == ["source", "class", "statistic", "n", "median", "p10", "p90", "mean", "sd"]
    assert s["class"].tolist() == ["neutrophil", "neutrophil", "monocyte", "monocyte"]  # CLASSES order
    assert s["statistic"].tolist() == ["x", "y", "x", "y"]  # not um_per_px, not text
    mono = s[(s["class"] == "monocyte") & (s["statistic"] == "x")].iloc[0]
    assert mono["n"] == 4 and mono["median"] == 2.5 and mono["mean"] == 2.5
    assert mono["p10"] == pytest.approx(1.3) and mono["p90"] == pytest.approx(3.7)
    assert mono["sd"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert (s["source"] == "real").all() and s["n"].dtype.kind == "i" and s["median"].dtype.kind == "f"
    one = summarise(df[df["class"] == "neutrophil"].iloc[:1], "real", ["x"]).iloc[0]
    assert one["n"] == 1 and one["median"] == 10 and math.isnan(one["sd"])


def test_compare_verdicts():
    real = pd.DataFrame({"class": ["neutrophil"] * 10 + ["basophil"] * 2,
                         "a": list(np.arange(10.0)) + [1.0, 2.0],
                         "b": list(np.arange(10.0)) + [1.0, 2.0],
                         "c": list(np.arange(10.0)) + [1.0, 2.0],
                         "d": [np.nan] * 10 + [1.0, 2.0]})
    synth = pd.DataFrame({"class": ["neutrophil"] * 10 + ["basophil"] * 10,
                          "a": [4.0] * 10 + [1.5] * 10, "b": [20.0] * 10 + [9.0] * 10,
                          "c": [-5.0] * 10 + [1.0] * 10, "d": [1.0] * 20})
    cmp = compare(summarise(real, "real"), summarise(synth, "SynthWBC"))
    got = {(r["class"], r["statistic"]): (r["within"], r["verdict"]) for _, r in cmp.iterrows()}
    assert got[("neutrophil", "a")] == (True, "within")
    assert got[("neutrophil", "b")] == (False, "above")
    assert got[("neutrophil", "c")] == (False, "below")
    assert got[("neutrophil", "d")][1] == "too few"  # no real values at all
    assert got[("basophil", "a")][1] == "too few"  # two real cells: the range means little
    assert compare(summarise(real, "real"), summarise(synth, "s"), min_n=1).set_index(
        ["class", "statistic"]).loc[("basophil", "b"), "verdict"] == "above"
    a = cmp.set_index(["class", "statistic"]).loc[("neutrophil", "b")]
    assert a["offset"] == pytest.approx((20 - 4.5) / (8.1 - 0.9))
    assert a["n_real"] == 10 and a["n_synth"] == 10 and a["real_median"] == 4.5 and a["synth_median"] == 20
    assert cmp["within"].dtype == bool and cmp["offset"].dtype.kind == "f"


# --- SynthWBC and real cells ----------------------------------------------------------------------
def test_synthwbc_cells_measure_finite_with_ratios_in_range():
    images, labels, masks, meta = generate(11, 20, 64)
    rows = [{**measure(img.transpose(1, 2, 0), mask, m["um_per_px"]), "class": CLASSES[lab]}
            for img, mask, lab, m in zip(images, masks, labels.tolist(), meta)]
    df = pd.DataFrame(rows)
    assert np.isfinite(df[list(STAT_COLUMNS)].to_numpy()).all()
    assert ((df["nc_ratio"] > 0) & (df["nc_ratio"] < 1)).all()
    assert ((df["nucleus_solidity"] > 0) & (df["nucleus_solidity"] <= 1)).all()
    assert (df["nucleus_lobes"] >= 1).all()
    assert (df.loc[df["class"] == "neutrophil", "nucleus_lobes"] >= 2).all()  # SynthWBC draws 2–5 separated lobes
    assert (df.loc[df["class"] == "lymphocyte", "nucleus_lobes"] == 1).all()
    diam = np.array([m["diameter_um"] for m in meta])
    assert np.allclose(df["cell_diameter"], diam, rtol=0.12)  # equivalent diameter ≈ the drawn one
    s = summarise(df, "SynthWBC")
    assert set(s["class"]) == set(CLASSES) and (s["n"] == 4).all()


@pytest.mark.skipif(not (ZHENG / "labels.csv").is_file(),
                    reason=f"real data absent: Zheng2018 dataset 1 is read from {ZHENG} (../shared/data beside the repo)")
def test_real_zheng2018_cells_measure_finite():
    from robustbench_wbc.data.real import read_zheng2018

    cells = read_zheng2018(ZHENG)[:20]
    df = pd.DataFrame([{**measure(img, mask), "class": cls} for img, mask, cls, _ in cells])
    assert np.isfinite(df[list(SHAPE_STATS)].to_numpy()).all()
    assert ((df["nc_ratio"] > 0) & (df["nc_ratio"] < 1)).all()
    assert ((df["nucleus_solidity"] > 0) & (df["nucleus_solidity"] <= 1)).all()
    assert (df["nucleus_lobes"] >= 1).all()


# --- the calibration script, end to end on a tiny fake Zheng2018 folder ------------------------------
def _load_script():
    spec = importlib.util.spec_from_file_location("calibrate_synth", REPO / "benchmarks" / "calibrate_synth.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_calibrate_script_end_to_end(tmp_path, capsys):
    # a fake Zheng2018 folder: SynthWBC cells saved as BMP + grey masks, labels 1..5 as in the real set
    root = tmp_path / "zheng"
    (root / "images").mkdir(parents=True)
    images, labels, masks, _ = generate(21, 15, 40)
    zheng_label = {"neutrophil": 1, "lymphocyte": 2, "monocyte": 3, "eosinophil": 4, "basophil": 5}
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image ID", "class label"])
        for i, (img, mask, lab) in enumerate(zip(images, masks, labels.tolist()), 1):
            Image.fromarray(np.round(img.transpose(1, 2, 0) * 255).astype(np.uint8)).save(root / "images" / f"{i:03d}.bmp")
            Image.fromarray(np.array([0, 128, 255], np.uint8)[mask]).save(root / "images" / f"{i:03d}.png")
            w.writerow([i, zheng_label[CLASSES[lab]]])
    out = tmp_path / "out"
    script = _load_script()
    assert script.main(["--real", str(root), "--n-synth", "10", "--out", str(out), "--min-n", "3"]) == 0
    printed = capsys.readouterr().out
    for name in ("real_cells.csv", "synth_cells.csv", "summary.csv", "compare.csv", "report.md"):
        assert (out / name).is_file()
    assert "| statistic | neutrophil real (n=3) | neutrophil SynthWBC |" in printed
    assert "outside the real spread" in printed and "µm/px" in printed
    cmp = pd.read_csv(out / "compare.csv")
    assert set(cmp["verdict"]) <= {"within", "below", "above", "too few", "n/a"}
    real = pd.read_csv(out / "real_cells.csv")
    # the pixel size makes the median real neutrophil 12.5 µm across, by construction
    assert real.loc[real["class"] == "neutrophil", "cell_diameter"].median() == pytest.approx(12.5)
    assert script.main(["--real", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
