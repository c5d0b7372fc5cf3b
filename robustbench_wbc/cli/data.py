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
                  f"{n / wall:.0f} images/s with writing)  sha256 {card['sha256'][:12]}…", highlight=False)
    console.print(f"class counts: {card['class_counts']}", highlight=False)


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from robustbench_wbc.data.synth import CLASSES, DOMAINS

    register_data_options(data, False)
    d = SPLITS.get(split)
    base = d.load(max(per_class * len(CLASSES) * 4, 40), size)
    picks = {k: np.flatnonzero(base.labels.numpy() == k)[:per_class] for k in range(len(CLASSES))}
    panels = [(d.domain, base)]
    if domains and d.synth is not None:
        from robustbench_wbc.data.splits import load_synth

        for name in ("source", "stain-b", "camera-b", "lab-b"):
            if name != d.domain:
                panels.append((name, load_synth(split, replace(d.synth, domain=name), len(base), size)))
    cols = per_class * len(panels)
    fig, axes = plt.subplots(len(CLASSES), cols, figsize=(1.1 * cols, 1.2 * len(CLASSES)), squeeze=False)
    for r, cls in enumerate(CLASSES):
        for p, (dom, data_) in enumerate(panels):
            for j in range(per_class):
                ax = axes[r][p * per_class + j]
                ax.axis("off")
                if j >= len(picks[r]):
                    continue
                i = picks[r][j]
                ax.imshow(data_.images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
                if data_.masks is not None:
                    m = data_.masks[i].numpy()
                    ax.contour(m >= 1, levels=[0.5], colors="lime", linewidths=0.6)
                    ax.contour(m == 2, levels=[0.5], colors="yellow", linewidths=0.6)
                if r == 0 and j == 0:
                    ax.set_title(DOMAINS[dom].name if dom in DOMAINS else dom, fontsize=8, loc="left")
            axes[r][0].text(-0.1, 0.5, cls, transform=axes[r][0].transAxes, ha="right", va="center", fontsize=8)
    fig.suptitle(f"{split}: outline of the cell (green) and nucleus (yellow) from the mask", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    console.print(f"wrote {out} ({len(CLASSES)} classes × {per_class} cells × {len(panels)} domains)", highlight=False)
