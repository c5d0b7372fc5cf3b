"""``wbc-robust data``: write a split to disk, or draw a grid of it."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from robustbench_wbc.cli._common import console, handle_errors
from robustbench_wbc.cli.run import register_data_options
from robustbench_wbc.data.splits import SPLITS

data_app = typer.Typer(help="Generate SynthWBC splits to disk, and look at them.", no_args_is_help=True)

# Peripheral-blood frequencies in adults (neutrophil 62 %, lymphocyte 30 %, monocyte 5.3 %,
# eosinophil 2.3 %, basophil 0.4 %), in the order of CLASSES.
NATURAL_PRIORS = (0.62, 0.023, 0.004, 0.30, 0.053)


@data_app.command("generate")
@handle_errors
def generate(
    split: Annotated[str, typer.Option(help="A SynthWBC split id (see `splits list`).")] = "synth:train",
    n: Annotated[int, typer.Option(min=1, help="Number of images.")] = 1000,
    size: Annotated[int, typer.Option(min=8, max=256, help="Image size in pixels (the field stays 25.6 µm).")] = 64,
    seed: Annotated[int | None, typer.Option(help="Another cell stream than the split's own.")] = None,
    um_per_px: Annotated[float | None, typer.Option(
        help="Pixel size in µm (the magnification); default: a 25.6 µm field.")] = None,
    priors: Annotated[str, typer.Option(help="Class priors: 'balanced' or 'natural' (peripheral blood).")] = "balanced",
    out: Annotated[Path, typer.Option(help="Directory for images.npy, masks.npy, labels.npy, card.json.")] = Path("synthwbc"),
) -> None:
    """Write a SynthWBC split to disk in batches (bounded memory) and print images/s."""
    from robustbench_wbc.data.cache import write_set

    spec = _synth_spec(split)
    if seed is not None:
        spec = replace(spec, seed=seed)
    if um_per_px is not None:
        spec = replace(spec, um_per_px=um_per_px)
    if priors not in ("balanced", "natural"):
        raise typer.BadParameter(f"--priors must be 'balanced' or 'natural', got {priors!r}")
    if priors == "natural":
        spec = replace(spec, class_probs=NATURAL_PRIORS)
    t0 = time.perf_counter()
    card = write_set(spec, n, size, out, name=split)
    wall = time.perf_counter() - t0
    console.print(f"{n} images of {split} at {size}px → {out}  ({card['images_per_s']:.0f} images/s rendering, "
                  f"{n / wall:.0f} images/s with writing)  sha256 {card['sha256'][:12]}…", markup=False, highlight=False)
    console.print(f"class counts: {card['class_counts']}", markup=False, highlight=False)


def _synth_spec(split: str):
    d = SPLITS.get(split)
    if d.synth is None:
        raise typer.BadParameter(f"{split!r} is not a SynthWBC split; `data generate` makes SynthWBC data only")
    return d.synth


@data_app.command("show")
@handle_errors
def show(
    split: Annotated[str, typer.Option(help="A split id (see `splits list`).")] = "synth:test",
    out: Annotated[Path, typer.Option(help="The PNG to write.")] = Path("grid.png"),
    per_class: Annotated[int, typer.Option(min=1, max=12, help="Cells per class.")] = 4,
    size: Annotated[int, typer.Option(min=8, max=256, help="Image size in pixels.")] = 64,
    domains: Annotated[bool, typer.Option(help="For a SynthWBC split: the same cells in every domain, side by side.")] = True,
    data: Annotated[list[str] | None, typer.Option(metavar="NAME=PATH", help="A real dataset as NAME=PATH.")] = None,
) -> None:
    """Draw a grid: rows are classes, with the mask's outline over each image (nucleus, cell)."""
    from robustbench_wbc.data.synth import CLASSES, DOMAINS
    from robustbench_wbc.report.figures import cell_grid, first_per_class

    register_data_options(data, False)
    d = SPLITS.get(split)
    base = d.load(max(per_class * len(CLASSES) * 4, 40), size)
    picks = first_per_class(base, per_class)
    panels = [(DOMAINS[d.domain].name if d.domain in DOMAINS else d.domain, base, picks)]
    if domains and d.synth is not None:
        from robustbench_wbc.data.splits import load_synth

        for name in ("source", "stain-b", "camera-b", "lab-b"):
            if name != d.domain:
                panels.append((DOMAINS[name].name, load_synth(split, replace(d.synth, domain=name), len(base), size), picks))
    cell_grid(panels, per_class, f"{split}: outline of the cell (green) and nucleus (yellow) from the mask", out)
    console.print(f"wrote {out} ({len(CLASSES)} classes × {per_class} cells × {len(panels)} domains)", markup=False,
                  highlight=False)


def field_of_view_um(data, anchor: str = "neutrophil") -> float | None:
    """Estimates a real split's field of view in µm from its masks: the median equivalent diameter
    of its ``anchor`` cells, as a fraction of the image, against SynthWBC's mean diameter for that
    class (the anchor's size then agrees by construction). ``None`` without masks or anchor cells."""
    import numpy as np

    from robustbench_wbc.data.synth import CLASSES, MORPHOLOGY

    if data.masks is None:
        return None
    sel = (data.labels == CLASSES.index(anchor)).numpy()
    if not sel.any():
        return None
    cells = (data.masks[sel] >= 1).flatten(1).sum(1).numpy()
    frac = float(np.median(np.sqrt(4 * cells / np.pi))) / data.masks.shape[-1]
    return float(np.mean(MORPHOLOGY[anchor].diameter_um)) / frac if frac > 0 else None


@data_app.command("compare")
@handle_errors
def compare(
    real: Annotated[str, typer.Option(metavar="NAME=PATH", help="A real dataset with masks, e.g. zheng2018=PATH.")],
    out: Annotated[Path, typer.Option(help="The PNG to write.")] = Path("compare.png"),
    per_class: Annotated[int, typer.Option(min=1, max=8, help="Cells per class and panel.")] = 4,
    size: Annotated[int, typer.Option(min=16, max=256, help="Image size in pixels, both sets.")] = 96,
    split: Annotated[str, typer.Option(help="The SynthWBC cells to show beside them.")] = "synth:test",
    skip_bad: Annotated[bool, typer.Option(help="Skip unreadable files instead of stopping.")] = False,
) -> None:
    """Draw real and SynthWBC cells side by side per class, masks outlined, at the same scale.

    The real images' pixel size is rarely known: their field of view is estimated from their
    neutrophils (median diameter against SynthWBC's 12.5 µm), and SynthWBC is rendered over that field.
    """
    from robustbench_wbc.data.splits import load_synth
    from robustbench_wbc.data.synth import CLASSES, DOMAINS
    from robustbench_wbc.report.figures import cell_grid, first_per_class

    ids = register_data_options([real], skip_bad)
    real_split = ids[0] if len(ids) == 1 else next((i for i in ids if i.endswith(":all") or ":test" in i), ids[0])
    real_data = SPLITS.get(real_split).load(None, size)
    field = field_of_view_um(real_data)
    spec = _synth_spec(split)
    if field is not None:
        spec = replace(spec, um_per_px=field / size)
    n = max(per_class * len(CLASSES) * 4, 40)
    panels = [(f"real: {real_split}", real_data, first_per_class(real_data, per_class))]
    for name in ("source", "lab-b"):
        synth = load_synth(split, replace(spec, domain=name), n, size)
        panels.append((f"SynthWBC {DOMAINS[name].name}", synth, first_per_class(synth, per_class)))
    scale = f"field {field:.1f} µm (estimated from the real neutrophils)" if field else "SynthWBC's own field"
    cell_grid(panels, per_class, f"real vs SynthWBC, {scale}; outline of the cell (green) and nucleus (yellow)", out)
    console.print(f"wrote {out}: {real_split} ({len(real_data)} cells) beside {split}, {scale}", markup=False, highlight=False)
