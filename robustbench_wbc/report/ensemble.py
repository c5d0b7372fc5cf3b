"""Derived from the stored per-sample outcomes, without re-running: the worst case over attacks, and
the cross-task matrix of multitask models.

*Ensemble robust accuracy* is AutoAttack's per-sample worst case taken over every attack in the
store: an image counts as robust at eps only if it was classified correctly and no attack that
scores the class head (a ``cls`` or ``joint`` target; any library, any plugin) fooled it. It is
never higher than any single attack's robust accuracy, and it is what a new attack is measured
against: add a plugin, run only it, and the ensemble column updates.

The *cross-task matrix* reads, for each attacked head (``cls``, ``seg``, ``joint``), the damage to
both heads: accuracy and nucleus/cytoplasm Dice, clean and under the strongest attack at each eps.
A multitask model whose Dice survives a ``cls`` attack but not a ``joint`` one is protected by the
single-task attack's focus, not by its training (Ghamizi et al., AAAI 2022).
"""

from __future__ import annotations

import pandas as pd

from robustbench_wbc.attacks.base import eps_label
from robustbench_wbc.bench.cells import CLEAN
from robustbench_wbc.bench.store import ResultStore
from robustbench_wbc.report.rows import current_rows

GROUP = ["model", "model_seed", "split", "norm", "eps", "n"]


def robust_outcome(samples: pd.DataFrame) -> pd.Series:
    """Per image of a cell's per-sample outcomes: robust (right before and after the attack)."""
    if "robust" in samples:
        return samples["robust"].astype(bool)
    return (samples["clean_pred"] == samples["label"]) & (samples["adv_pred"] == samples["label"])


def ensemble(store: ResultStore, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Gives the worst case over attacks on the class head, per (model, seed, split, norm, eps, n).

    Columns: the group, ``attacks`` (how many), ``attack_ids`` (comma-joined), ``robust_accuracy``.
    """
    table = store.table() if table is None else table
    cols = [*GROUP, "attacks", "attack_ids", "robust_accuracy"]
    if table.empty:
        return pd.DataFrame(columns=cols)
    t = current_rows(table)
    cells = t[(t["status"] == "ok") & (t["attack"] != CLEAN) & t["target"].isin(["cls", "joint"])
              & (t["metric"] == "robust_accuracy") & (t["eps"] > 0)].drop_duplicates("cell_id")
    rows = []
    for key, grp in cells.groupby(GROUP, sort=True):
        robust = None
        for cell_id in grp["cell_id"]:
            r = robust_outcome(store.samples(cell_id)).to_numpy()
            robust = r if robust is None else robust & r
        ids = sorted(a if t == "cls" else f"{a}:{t}" for a, t in zip(grp["attack"], grp["target"]))
        rows.append({**dict(zip(GROUP, key)), "attacks": len(grp), "attack_ids": ",".join(ids),
                     "robust_accuracy": float(robust.mean()) if len(robust) else float("nan")})
    return pd.DataFrame(rows, columns=cols)


def ensemble_or_reason(results, table: pd.DataFrame) -> tuple[pd.DataFrame | None, str]:
    """Gives ``(ensemble rows, "")``, or ``(None, why)`` where the per-sample outcomes cannot be read
    (a published table without its ``samples.parquet``): the leaderboard then has no ensemble column
    and its legend says so."""
    try:
        return ensemble(results, table), ""
    except (OSError, KeyError, ValueError) as exc:
        return None, f"no ensemble column: the per-sample outcomes could not be read ({exc})"


HEAD_METRICS = {"accuracy": "robust_accuracy", "nucleus_dice": "nucleus_dice", "cytoplasm_dice": "cytoplasm_dice"}


def cross_task(table: pd.DataFrame) -> pd.DataFrame:
    """Gives, per (model, seed, split, norm, eps, target), each head's clean score and its worst under attack.

    Columns: the coordinates, ``metric`` (accuracy, nucleus_dice, cytoplasm_dice), ``clean``,
    ``attacked`` (the minimum over attacks on that target), ``drop`` (clean − attacked), ``attack``
    (the attack that did the most damage).
    """
    cols = ["model", "family", "model_seed", "split", "norm", "eps", "target", "metric", "clean", "attacked", "drop",
            "attack"]
    if table.empty:
        return pd.DataFrame(columns=cols)
    t = current_rows(table)
    t = t[t["status"] == "ok"]
    clean = t[t["attack"] == CLEAN].set_index(["model", "model_seed", "split", "n", "metric"])["value"]
    rows = []
    attacked = t[(t["attack"] != CLEAN) & (t["eps"] > 0) & t["metric"].isin(HEAD_METRICS.values())]
    for (model, seed, split, n, norm, eps, target), grp in attacked.groupby(
            ["model", "model_seed", "split", "n", "norm", "eps", "target"], sort=True):
        for head, metric in HEAD_METRICS.items():
            sel = grp[grp["metric"] == metric]
            base = clean.get((model, seed, split, n, head))
            if sel.empty or base is None:
                continue
            worst = sel.loc[sel["value"].idxmin()]
            rows.append({"model": model, "family": worst["family"], "model_seed": seed, "split": split, "norm": norm,
                         "eps": eps, "target": target, "metric": head, "clean": float(base),
                         "attacked": float(worst["value"]), "drop": float(base) - float(worst["value"]),
                         "attack": worst["attack"]})
    return pd.DataFrame(rows, columns=cols)


def cross_task_rows(matrix: pd.DataFrame) -> list[tuple[str, str, str, float, str, list[str]]]:
    """Gives the multitask models' matrix as rendered rows ``(model, split, norm, eps, target, cells)``.

    One row per attacked head that has a number, in (model, split, eps) order; ``cells`` are the drop
    of accuracy, nucleus and cytoplasm Dice as ``drop (clean → attacked)`` in points, mean over
    training seeds, or ``–``.
    """
    m = matrix[matrix["family"] == "multitask"]
    mean = m.groupby(["model", "split", "norm", "eps", "target", "metric"], sort=True)[["clean", "attacked", "drop"]].mean()
    rows = []
    for (model, split, norm, eps), blk in mean.groupby(level=["model", "split", "norm", "eps"], sort=True):
        for target in ("cls", "seg", "joint"):
            cells = []
            for metric in HEAD_METRICS:
                key = (model, split, norm, eps, target, metric)
                if key in blk.index:
                    r = blk.loc[key]
                    cells.append(f"{100 * r['drop']:.1f} ({100 * r['clean']:.1f} → {100 * r['attacked']:.1f})")
                else:
                    cells.append("–")
            if any(c != "–" for c in cells):
                rows.append((model, split, norm, float(eps), target, cells))
    return rows


def cross_task_markdown(matrix: pd.DataFrame) -> str:
    """Renders the cross-task matrix of each model with two heads: rows the attacked head, columns each head's drop.

    One block per (model, split, eps), mean over training seeds, in points (clean − attacked).
    """
    if matrix.empty:
        return "_No attacked cells with both heads yet._\n"
    if not (matrix["family"] == "multitask").any():
        return "_No multitask model in the results._\n"
    out, block = [], None
    for model, split, norm, eps, target, cells in cross_task_rows(matrix):
        if block != (model, split, norm, eps):
            if block is not None:
                out.append("")
            block = (model, split, norm, eps)
            out.append(f"**{model}** on `{split}`, eps {eps_label(eps, norm)} ({norm}): drop in points, clean → attacked\n")
            out.append("| attacked head | accuracy | nucleus Dice | cytoplasm Dice |")
            out.append("|---|---|---|---|")
        out.append(f"| {target} | " + " | ".join(cells) + " |")
    out.append("")
    return "\n".join(out)
