"""Figures: grids of cells by class, with the mask's outline over each image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from robustbench_wbc.data.splits import SplitData
from robustbench_wbc.data.synth import CLASSES


def first_per_class(data: SplitData, per_class: int) -> dict[int, np.ndarray]:
    """Gives, per class index, the positions of the first ``per_class`` images of that class."""
    labels = data.labels.numpy()
    return {k: np.flatnonzero(labels == k)[:per_class] for k in range(len(CLASSES))}


def cell_grid(panels: Sequence[tuple[str, SplitData, dict[int, np.ndarray]]], per_class: int, title: str,
              out: Path, dpi: int = 80) -> None:
    """Draws one row per class and, side by side, ``per_class`` cells of each panel ``(title, data, picks)``.

    The cell's outline (mask ≥ 1) is drawn in green and the nucleus (mask = 2) in yellow, where the
    data has masks; a panel with fewer cells of a class leaves its places empty.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = per_class * len(panels)
    fig, axes = plt.subplots(len(CLASSES), cols, figsize=(1.1 * cols, 1.2 * len(CLASSES)), squeeze=False)
    for r, cls in enumerate(CLASSES):
        for p, (name, data, picks) in enumerate(panels):
            for j in range(per_class):
                ax = axes[r][p * per_class + j]
                ax.axis("off")
                if r == 0 and j == 0:
                    ax.set_title(name, fontsize=8, loc="left")
                if j >= len(picks[r]):
                    continue
                i = picks[r][j]
                ax.imshow(data.images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
                if data.masks is not None:
                    m = data.masks[i].numpy()
                    ax.contour(m >= 1, levels=[0.5], colors="lime", linewidths=0.6)
                    ax.contour(m == 2, levels=[0.5], colors="yellow", linewidths=0.6)
            axes[r][0].text(-0.1, 0.5, cls, transform=axes[r][0].transAxes, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
