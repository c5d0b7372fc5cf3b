"""Per-class results from the per-sample outcomes: which cell types a model gets right, and segments.

The leaderboard averages over classes; the mission's claims are about classes (a U-Net that fails on
basophils, whose granules take the colour of other cells' nuclei). This reads the stored per-sample
outcomes of the clean cells and gives, per model, split and class, the accuracy and the mean
nucleus and cytoplasm Dice.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from robustbench_wbc.bench.cells import CLEAN
from robustbench_wbc.bench.store import ResultStore
from robustbench_wbc.data.synth import CLASSES
from robustbench_wbc.report.rows import current_rows, split_role

METRICS = {"accuracy": "accuracy", "clean_nucleus_dice": "nucleus_dice", "clean_cytoplasm_dice": "cytoplasm_dice"}


def by_class(store: ResultStore, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Gives a tidy table ``model, model_seed, split, role, class, n, metric, value`` of the clean cells.

    Metrics: ``accuracy`` (for models with a class head) and ``nucleus_dice`` / ``cytoplasm_dice``
    (for models with a mask head, on splits with masks), each the mean over the class's images.
    """
    table = store.table() if table is None else table
    if table.empty:
        return pd.DataFrame(columns=["model", "model_seed", "split", "role", "class", "n", "metric", "value"])
    cells = current_rows(table)
    cells = cells[(cells["attack"] == CLEAN) & (cells["status"] == "ok")].drop_duplicates("cell_id")
    parts = []
    for _, c in cells.iterrows():
        s = store.samples(c["cell_id"])
        if "clean_pred" in s:
            s["accuracy"] = (s["clean_pred"] == s["label"]).astype(float)
        present = [m for m in METRICS if m in s]
        if not present:
            continue
        g = s.groupby("label")[present].agg(["mean", "size"])
        for label in g.index:
            for m in present:
                parts.append({"model": c["model"], "model_seed": c["model_seed"], "split": c["split"],
                              "role": split_role(c["split"]),
                              "class": CLASSES[int(label)], "n": int(g.loc[label, (m, "size")]),
                              "metric": METRICS[m], "value": float(g.loc[label, (m, "mean")])})
    return pd.DataFrame(parts)


def by_class_markdown(per_class: pd.DataFrame, metric: str, roles: tuple[str, ...] = ("test", "ood", "real")) -> str:
    """Renders one metric as a markdown table: a row per model, a column per class and role (ID, OOD, real).

    Each number is the mean over the model's training seeds and over the role's splits, in %.
    """
    sel = per_class[(per_class["metric"] == metric) & per_class["role"].isin(roles)] if not per_class.empty else per_class
    if sel.empty:
        return f"_No per-class {metric} in these results._\n"
    per_seed = sel.groupby(["model", "model_seed", "role", "class"])["value"].mean()
    wide = per_seed.groupby(["model", "role", "class"]).mean().unstack(["role", "class"])
    names = {"test": "ID", "ood": "OOD", "real": "real"}
    cols = [(r, k) for r in roles for k in CLASSES if (r, k) in wide.columns]
    lines = ["| model | " + " | ".join(f"{k} {names.get(r, r)}" for r, k in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for model, row in wide[cols].iterrows():
        cells = ["–" if np.isnan(v) else f"{100 * v:.1f}" for v in row.to_numpy(dtype=float)]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
