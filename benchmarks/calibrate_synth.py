"""Measures real and SynthWBC cells alike, per class, before anyone calibrates the generator (issue #5).

    /tmp/fv/bin/python benchmarks/calibrate_synth.py                     # Zheng2018 dataset 1 vs 500 SynthWBC cells
    /tmp/fv/bin/python benchmarks/calibrate_synth.py --um-per-px 0.2     # assume another real pixel size
    /tmp/fv/bin/python benchmarks/calibrate_synth.py --size 64           # both resized to 64 px, same field of view

Reads the real set at native resolution (``robustbench_wbc.data.real.read_zheng2018``: images/NNN.bmp,
masks images/NNN.png, labels.csv), estimates its pixel size (below), renders SynthWBC at the same
pixel size and field of view (120 px, the real images' usual size), measures every cell with
``robustbench_wbc.data.morphometry.measure`` and prints a markdown table, real vs SynthWBC per class
(median [10th–90th percentile] of each statistic), with the statistics whose SynthWBC median falls
outside the real 10–90 % range. Writes to ``--out``: ``real_cells.csv``, ``synth_cells.csv`` (one row
per cell), ``summary.csv`` (per source, class and statistic), ``compare.csv`` and ``report.md``.

Pixel size. The real images' is not published. It is estimated from the median equivalent-circle
diameter (in px) of the real cells of one class (``--anchor-class``, default neutrophil: the most
numerous class, 176 of 300) against that class's textbook diameter (``--anchor-um``, default the
middle of the range on the SynthWBC dataset card, which follows B. J. Bain, *Blood Cells: A
Practical Guide*, 5th ed., 2015: neutrophil 10–15 µm → 12.5 µm). The anchor class's size then
agrees by construction; the other classes' sizes, every ratio, shape and colour are free to differ.
The report also gives the pixel size each class would imply, and how many pixels a 7.5 µm red cell
spans at the estimate, for a check by eye. ``--um-per-px`` overrides the estimate.

Runtime: about 30 s on 2 CPU cores (most of it rendering 500 cells at 120 px).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from robustbench_wbc.data.morphometry import AREA_STATS, LENGTH_STATS, STAT_COLUMNS, compare, measure, summarise
from robustbench_wbc.data.real import read_zheng2018
from robustbench_wbc.data.synth import CLASSES, DOMAINS, GENERATOR_VERSION, generate

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REAL = (REPO / ".." / "shared" / "data" / "zheng2018-dataset1").resolve()
# Textbook diameters (µm), the middle of the ranges on the SynthWBC dataset card (Bain 2015). Written out here,
# not read from synth.MORPHOLOGY, so that the anchor does not move when the generator is tuned.
# Lymphocytes: 75 % small (6.5–10 µm), 25 % large (10–15 µm) → the mixture's median, 6.5 + 3.5·(0.5/0.75).
TEXTBOOK_DIAMETER_UM = {"neutrophil": 12.5, "eosinophil": 12.5, "basophil": 12.5, "lymphocyte": 8.83, "monocyte": 16.0}
RBC_UM = 7.5  # a red cell's diameter
UNITS = {"cell_area": "µm²", "nucleus_area": "µm²", "cell_diameter": "µm"}


def read_real(root: Path, size: int | None) -> tuple[list[tuple[np.ndarray, np.ndarray, str, str]], list[tuple[int, int]]]:
    """Gives the real cells (resized to ``size`` × ``size`` if given) and each one's native size (H, W)."""
    cells = read_zheng2018(root)
    shapes = [c[1].shape for c in cells]
    if size is None:
        return cells, shapes
    out = []
    for img, mask, cls, stem in cells:
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
        mask = np.asarray(Image.fromarray(mask).resize((size, size), Image.NEAREST))
        out.append((img, mask, cls, stem))  # stretched to a square, as real.py's loaders do
    return out, shapes


def to_um(records: pd.DataFrame, um: np.ndarray | float) -> pd.DataFrame:
    """Gives records measured in pixels with areas in µm² and lengths in µm (``um``: µm per measured pixel)."""
    out = records.copy()
    um = np.asarray(um, dtype=np.float64)
    for col in AREA_STATS:
        out[col] = out[col] * um**2
    for col in LENGTH_STATS:
        out[col] = out[col] * um
    out["um_per_px"] = np.broadcast_to(um, len(out)).astype(np.float64)
    return out


def fmt(x: float) -> str:
    """A number for the table: 3 significant digits, integers as such, NaN as a dash."""
    if not np.isfinite(x):
        return "–"
    if float(x).is_integer() and abs(x) < 1e5:
        return str(int(x))
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def spread(row: pd.Series, prefix: str) -> str:
    return f"{fmt(row[prefix + 'median'])} [{fmt(row[prefix + 'p10'])}–{fmt(row[prefix + 'p90'])}]"


def markdown_table(cmp: pd.DataFrame, classes: list[str], min_n: int) -> str:
    """Rows: statistics; per class two columns, real and SynthWBC, each median [p10–p90].

    A SynthWBC value above the real 10–90 % range is marked ↑, below ↓ (classes with fewer than
    ``min_n`` real cells get no marks).
    """
    head = ["statistic"]
    for c in classes:
        n_real = int(cmp.loc[cmp["class"] == c, "n_real"].max())
        head += [f"{c} real (n={n_real})", f"{c} SynthWBC"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by = cmp.set_index(["class", "statistic"])
    for stat in cmp["statistic"].drop_duplicates():
        cells = [f"{stat} ({UNITS[stat]})" if stat in UNITS else stat]
        for c in classes:
            if (c, stat) not in by.index:
                cells += ["–", "–"]
                continue
            row = by.loc[(c, stat)]
            mark = {"above": " ↑", "below": " ↓"}.get(row["verdict"], "")
            cells += [spread(row, "real_"), spread(row, "synth_") + mark]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", type=Path, default=DEFAULT_REAL, help="Zheng2018 dataset 1 folder (images/, labels.csv)")
    p.add_argument("--n-synth", type=int, default=500, help="SynthWBC cells to render (balanced classes)")
    p.add_argument("--size", type=int, default=None,
                   help="measure both at SIZE×SIZE px, same field of view (default: native, real as read, SynthWBC at 120 px)")
    p.add_argument("--seed", type=int, default=5, help="SynthWBC seed")
    p.add_argument("--domain", default="source", choices=sorted(DOMAINS), help="SynthWBC domain (lab)")
    p.add_argument("--anchor-class", default="neutrophil", choices=sorted(TEXTBOOK_DIAMETER_UM),
                   help="class whose median real diameter sets the pixel size")
    p.add_argument("--anchor-um", type=float, default=None, help="its textbook diameter in µm (default: the table)")
    p.add_argument("--um-per-px", type=float, default=None, help="the real images' native pixel size; skips the estimate")
    p.add_argument("--colour-margin", type=int, default=0,
                   help="colour from pixels at least this many px inside their region (0: all; see measure(margin_px))")
    p.add_argument("--min-n", type=int, default=5, help="fewer real cells than this in a class: no verdict")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "calibrate_synth", help="folder for the CSV and markdown")
    a = p.parse_args(argv)
    t0 = time.perf_counter()

    if not (a.real / "labels.csv").is_file():
        print(f"no Zheng2018 dataset 1 at {a.real} (expected images/ and labels.csv); give it with --real PATH", file=sys.stderr)
        return 2
    cells, shapes = read_real(a.real, a.size)
    native_sizes = Counter(shapes)
    native = native_sizes.most_common(1)[0][0]  # the usual native size, (120, 120)
    real = pd.DataFrame([{**measure(img, mask, margin_px=a.colour_margin), "class": cls, "stem": stem}
                         for img, mask, cls, stem in cells])
    # native px per measured px (1 at native size; else √(H·W)/size, which keeps areas)
    native_px = np.ones(len(cells)) if a.size is None else np.sqrt([h * w for h, w in shapes]) / a.size

    # pixel size: textbook diameter of the anchor class over its median real diameter (native px)
    diam_native = real["cell_diameter"] * native_px
    med_px = {c: float(diam_native[real["class"] == c].median()) for c in CLASSES if (real["class"] == c).any()}
    anchor_um = a.anchor_um if a.anchor_um is not None else TEXTBOOK_DIAMETER_UM[a.anchor_class]
    if a.um_per_px is not None:
        um_native = a.um_per_px
        basis = f"given (--um-per-px {a.um_per_px})"
    else:
        um_native = anchor_um / med_px[a.anchor_class]
        basis = (f"{a.anchor_class} textbook diameter {anchor_um:g} µm / median real {a.anchor_class} equivalent diameter "
                 f"{med_px[a.anchor_class]:.1f} px (n = {int((real['class'] == a.anchor_class).sum())})")
    real = to_um(real, um_native * native_px)

    # SynthWBC at the same pixel size and field of view
    synth_size = a.size or native[1]
    um_synth = um_native * native[1] / synth_size
    images, labels, masks, _ = generate(a.seed, a.n_synth, synth_size, DOMAINS[a.domain], um_per_px=um_synth)
    synth = pd.DataFrame([{**measure(img.transpose(1, 2, 0), mask, um_synth, a.colour_margin), "class": CLASSES[lab], "index": i}
                          for i, (img, mask, lab) in enumerate(zip(images, masks, labels.tolist()))])

    stats = list(STAT_COLUMNS)
    real_sum, synth_sum = summarise(real, "real", stats), summarise(synth, "SynthWBC", stats)
    cmp = compare(real_sum, synth_sum, min_n=a.min_n)
    classes = [c for c in CLASSES if c in set(cmp["class"])]

    # the report
    synth_diam = {c: float(synth.loc[synth["class"] == c, "cell_diameter"].median()) for c in classes}
    implied = ["| class | real n | median real diameter (native px) | textbook diameter (µm) | implied µm/px | "
               "SynthWBC median diameter (µm) |", "|---|---|---|---|---|---|"]
    for c in classes:
        n = int((real["class"] == c).sum())
        implied.append(f"| {c} | {n} | {med_px[c]:.1f} | {TEXTBOOK_DIAMETER_UM[c]:g} | "
                       f"{TEXTBOOK_DIAMETER_UM[c] / med_px[c]:.3f} | {synth_diam[c]:.2f} |")
    judged = cmp[cmp["verdict"].isin(["within", "below", "above"])]
    outside = judged[judged["verdict"] != "within"].copy()
    outside["order"] = outside["class"].map(CLASSES.index)
    outside["abs_offset"] = outside["offset"].abs()
    outside = outside.sort_values(["order", "abs_offset"], ascending=[True, False])
    few = sorted(set(cmp.loc[cmp["verdict"] == "too few", "class"]))
    sizes = ", ".join(f"{h}×{w}: {n}" for (h, w), n in native_sizes.most_common(4))
    md = [
        "# SynthWBC vs real cells: morphometry (issue #5)",
        "",
        f"- Real: {a.real.name} ({len(real)} cells: "
        + ", ".join(f"{c} {int((real['class'] == c).sum())}" for c in classes)
        + f"), native sizes (H×W) {sizes}, …; measured at {'native size' if a.size is None else f'{a.size}×{a.size} px'}.",
        f"- SynthWBC: {GENERATOR_VERSION}, seed {a.seed}, {a.n_synth} cells (balanced), domain `{a.domain}`, "
        f"{synth_size} px at {um_synth:.4f} µm/px (field of view {synth_size * um_synth:.1f} µm, as the real "
        f"{native[1]} px images).",
        f"- Pixel size of the real images (native): **{um_native:.4f} µm/px**; basis: {basis}. Field of view "
        f"{native[1] * um_native:.1f} µm; a {RBC_UM:g} µm red cell spans {RBC_UM / um_native:.0f} px at this size "
        "(check by eye against the red cells in the real images).",
        "",
        "Pixel size each class would imply (its textbook diameter over its median real diameter); the anchor's "
        "sizes agree by construction:",
        "",
        *implied,
        "",
        "Per class, median [10th–90th percentile] over cells. SynthWBC marked ↑ (↓) where its median is above "
        "(below) the real 10–90 % range. Areas in µm², colour in [0, 1], od_ = optical density −log10(I/I₀), I₀ the "
        "95th percentile of the image's background; lobes: parts of the nucleus split by necks < 1/3 of its widest "
        "part (see robustbench_wbc/data/morphometry.py)."
        + (f" Colour from pixels ≥ {a.colour_margin} px inside their region." if a.colour_margin else "")
        + (f" No verdict for {', '.join(few)} (fewer than {a.min_n} real cells)." if few else ""),
        "",
        markdown_table(cmp, classes, a.min_n),
        "",
        f"Verdicts: {len(judged) - len(outside)} of {len(judged)} SynthWBC medians within the real 10–90 % range, "
        f"{int((outside['verdict'] == 'above').sum())} above, {int((outside['verdict'] == 'below').sum())} below.",
        "",
        "## SynthWBC statistics outside the real spread",
        "",
        "Per class, largest first; offset = (SynthWBC median − real median) / (real p90 − real p10).",
        "",
    ]
    for cls, grp in outside.groupby("class", sort=False):
        md.append(f"- **{cls}**: " + "; ".join(
            f"{r['statistic']} {fmt(r['synth_median'])} vs {spread(r, 'real_')} ({r['verdict']}, "
            + (f"{r['offset']:+.1f})" if np.isfinite(r["offset"]) else "real spread 0)")
            for _, r in grp.iterrows()))
    if outside.empty:
        md.append("- none")
    report = "\n".join(md) + "\n"

    a.out.mkdir(parents=True, exist_ok=True)
    real.to_csv(a.out / "real_cells.csv", index=False)
    synth.to_csv(a.out / "synth_cells.csv", index=False)
    pd.concat([real_sum, synth_sum], ignore_index=True).to_csv(a.out / "summary.csv", index=False)
    cmp.to_csv(a.out / "compare.csv", index=False)
    (a.out / "report.md").write_text(report, encoding="utf-8")
    print(report)
    print(f"written to {a.out} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
