"""Leaderboards from the tidy table: numbers in, formatted text out only at the last step."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from robustbench_wbc.attacks.base import eps_label
from robustbench_wbc.bench.cells import CLEAN
from robustbench_wbc.data.splits import SPLITS
from robustbench_wbc.report.reliability import unreliable
from robustbench_wbc.stats import wilson

logger = logging.getLogger(__name__)

COORDS = ["model", "model_seed", "split", "attack", "target", "norm", "eps", "seed", "params", "metric"]


def current_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Keeps the rows that describe each model as it is now.

    An output directory may hold cells of an earlier checkpoint of a model (it was retrained) or
    the same measurement at several ``n``: keep the newest checkpoint's cells, and of repeated
    coordinates the row with the most images (then the newest). An attack crafted in bfloat16
    (``run --precision bf16``: ``precision=bf16`` in its params) is named ``<attack>+bf16``, so
    that no report mixes it with the fp32 attack.
    """
    if table.empty:
        return table
    # one checkpoint per (model, training seed): the newest
    newest = (table.sort_values("finished_at").groupby(["model", "model_seed"], as_index=False)["model_sha256"]
              .last().rename(columns={"model_sha256": "_newest"}))
    merged = table[["model", "model_seed", "model_sha256"]].merge(newest, on=["model", "model_seed"], how="left")
    keep = pd.Series((merged["_newest"] == merged["model_sha256"]).to_numpy(), index=table.index)
    if not keep.all():
        logger.warning("ignoring %d rows of older checkpoints of %s", int((~keep).sum()),
                       sorted(table.loc[~keep, "model"].unique()))
    t = table[keep].sort_values(["n", "finished_at"]).drop_duplicates(COORDS, keep="last")
    if "params" in t.columns:  # an attack crafted in bf16 is reported as its own attack: pgd+bf16
        bf16 = t["params"].fillna("").astype(str).str.contains(r"(?:^|;)precision=bf16(?:;|$)")
        if bf16.any():
            t = t.copy()
            t.loc[bf16, "attack"] = t.loc[bf16, "attack"] + "+bf16"
    return t


SEED_KEYS = ["model", "model_seed"]
REAL = "real"


def split_role(split: str) -> str:
    """The leaderboard's reading of a split: ``test`` (in distribution), ``ood`` (SynthWBC under another lab),
    ``real`` (any split of real cells: every id not ``synth:…``, registered in this process or not),
    or the split's own role (``probe``, ``corruption``, …)."""
    if not split.startswith("synth:"):
        return REAL
    return SPLITS.get(split).role if split in SPLITS else "unknown"


BY = ("linf", "l2", "ood", "seg")
# the number each ranking reads, and the images behind it (for its interval)
BY_KEY = {"linf": ("worst_robust_acc", "n_robust"), "l2": ("worst_robust_acc_l2", "n_robust_l2"),
          "ood": ("clean_acc_ood", "n_ood"), "seg": ("nucleus_dice_adv", "n_seg")}


BY_TEXT = {"linf": "the worst robust accuracy under L∞ attacks at the largest eps",
           "l2": "the worst robust accuracy under L2 attacks at the largest eps",
           "ood": "clean accuracy out of distribution (mean over the OOD splits)",
           "seg": "nucleus Dice under attack on the masks"}


def leaderboard(table: pd.DataFrame, ensemble_rows: pd.DataFrame | None = None, by: str | None = None) -> pd.DataFrame:
    """Gives one row per model: labels used, clean ID/OOD accuracy, robust accuracy, Dice, reliability.

    Clean numbers come from the in-distribution test split (role ``test``), the mean over SynthWBC's
    OOD splits, and (columns ``real_*``, where the table has them) the mean over splits of real cells;
    robust accuracy is on the in-distribution test split under attacks on the class head, one column
    per attack and eps (``attack:joint@eps`` for a joint attack on a multitask model, which counts
    for its worst case too); Dice under attack is the worst over attacks on the mask head at
    the model's largest eps.

    Each number is first worked out per training seed (``seeds`` says how many) from that seed's
    cells, as above; the column holds the mean over seeds and ``<column>_sd`` the sample standard
    deviation over seeds (ddof=1; NaN where fewer than two seeds have the number). In particular
    ``worst_robust_acc`` is the mean over seeds of each seed's worst robust accuracy over the
    attacks at the largest eps (``worst_robust_eps``), not the worst of the seed-mean columns.
    Models are ranked by their (mean) worst robust accuracy, then by clean OOD accuracy; U-Nets
    (no classifier) rank by nucleus Dice under attack after them.

    ``ensemble_rows`` (from :func:`robustbench_wbc.report.ensemble.ensemble`) adds one
    ``ensemble@eps`` column per eps where two or more attacks ran: the per-image worst case over
    them, which then also counts for ``worst_robust_acc``. ``unreliable`` and
    ``unreliable_reason`` come from :func:`robustbench_wbc.report.reliability.unreliable` (a model
    is flagged when any of its seeds is).

    ``by`` picks the ranking (RobustBench's one leaderboard per threat model): ``linf`` the worst
    robust accuracy under L∞ attacks at the largest eps (the default when L∞ attacks ran), ``l2``
    the same under L2 attacks, ``ood`` the clean accuracy out of distribution (the default
    otherwise), ``seg`` nucleus Dice under attack on the masks. Models without the number rank
    last. **Ties:** each model's number has a 95 % interval (``key_low``, ``key_high``): over
    seeds, mean ± t·sd/√k when it has k ≥ 2 seeds; with one seed, Wilson's over the images behind
    it (for a mean Dice, a conservative bound, as its variance is at most μ(1 − μ)). A model's rank
    is 1 + the number of models whose interval lies wholly above its own, so models whose
    intervals overlap share a rank (``tied``), instead of an order the data cannot support.
    """
    if by is not None and by not in BY:
        raise ValueError(f"unknown ranking {by!r}; expected one of {', '.join(BY)}")
    if table.empty:
        return pd.DataFrame()
    table = current_rows(table)
    ok = table[table["status"] == "ok"].copy()
    ok["role"] = ok["split"].map(split_role)
    models = table.drop_duplicates("model").set_index("model")
    board = pd.DataFrame(index=models.index)
    board["family"] = models["family"]
    board["recipe"] = models["recipe"]
    board["labelled_images"] = models["labelled_images"]
    board["masked_images"] = models["masked_images"]
    board["seeds"] = ok.groupby("model")["model_seed"].nunique().reindex(board.index).fillna(0).astype(int)

    clean = ok[ok["attack"] == CLEAN]
    attacked = ok[ok["attack"] != CLEAN]
    # one row per (model, training seed), one column per number the board shows
    per_seed = pd.DataFrame(index=pd.MultiIndex.from_frame(ok[SEED_KEYS].drop_duplicates()))

    def mean_of(df: pd.DataFrame, metric: str, role: str) -> pd.Series:
        sel = df[(df["metric"] == metric) & (df["role"] == role)]
        return sel.groupby(SEED_KEYS)["value"].mean()

    def n_of(df: pd.DataFrame, metric: str, role: str) -> pd.Series:
        sel = df[(df["metric"] == metric) & (df["role"] == role)]
        return sel.groupby(SEED_KEYS)["n"].sum()

    per_seed["clean_acc_id"] = mean_of(clean, "accuracy", "test")
    per_seed["clean_acc_ood"] = mean_of(clean, "accuracy", "ood")
    ood_acc = clean[(clean["metric"] == "accuracy") & (clean["role"] == "ood")]
    per_seed["clean_acc_ood_worst"] = ood_acc.groupby(SEED_KEYS)["value"].min()
    counts = pd.DataFrame(index=per_seed.index)  # images behind the ranking numbers, per seed
    counts["n_ood"] = n_of(clean, "accuracy", "ood")
    counts["n_robust"] = counts["n_robust_l2"] = n_of(clean, "accuracy", "test")
    counts["n_seg"] = n_of(clean, "nucleus_dice", "test")
    robust_cols = []
    # accuracy under attack on the class head: a cls attack, or a joint one on a multitask model (the
    # attacker may pick either loss, so both count for the worst case)
    rob = attacked[(attacked["metric"] == "robust_accuracy") & (attacked["role"] == "test")
                   & attacked["target"].isin(["cls", "joint"])]
    for (target, attack, norm, eps), grp in rob.groupby(["target", "attack", "norm", "eps"], sort=True):
        col = f"{attack}{'' if target == 'cls' else ':' + target}@{eps_label(eps, norm)}"
        per_seed[col] = grp.groupby(SEED_KEYS)["value"].mean()
        robust_cols.append((norm, eps, col))
    if ensemble_rows is not None and not ensemble_rows.empty:
        ens = ensemble_rows[(ensemble_rows["split"].map(split_role) == "test") & (ensemble_rows["attacks"] >= 2)]
        for (norm, eps), grp in ens.groupby(["norm", "eps"], sort=True):
            col = f"ensemble@{eps_label(eps, norm)}"
            per_seed[col] = grp.groupby(SEED_KEYS)["robust_accuracy"].min()
            robust_cols.append((norm, eps, col))
    for part in ("nucleus", "cytoplasm"):
        per_seed[f"{part}_dice_id"] = mean_of(clean, f"{part}_dice", "test")
        per_seed[f"{part}_dice_ood"] = mean_of(clean, f"{part}_dice", "ood")
    if (clean["role"] == REAL).any():  # the sim-to-real gap: real cells, for models trained on generated ones
        per_seed["real_acc"] = mean_of(clean, "accuracy", REAL)
        per_seed["real_balanced_acc"] = mean_of(clean, "balanced_accuracy", REAL)
        for part in ("nucleus", "cytoplasm"):
            per_seed[f"{part}_dice_real"] = mean_of(clean, f"{part}_dice", REAL)
    seg_adv = attacked[(attacked["metric"] == "nucleus_dice") & (attacked["role"] == "test")
                       & (attacked["target"] == "seg")]
    if not seg_adv.empty:  # every seed at the model's largest eps
        worst_eps = seg_adv.groupby("model")["eps"].transform("max")
        at_max = seg_adv[seg_adv["eps"] == worst_eps]
        per_seed["nucleus_dice_adv"] = at_max.groupby(SEED_KEYS)["value"].min()
    top_eps = {}
    for norm, suffix in (("linf", ""), ("l2", "_l2")):  # the worst case over attacks at the largest eps, per norm
        of_norm = [(e, c) for nm, e, c in robust_cols if nm == norm]
        if not of_norm:
            continue
        top_eps[norm] = max(e for e, _ in of_norm)
        # every cls attack must have run; joint attacks (multitask only) and the ensemble (where two or more
        # attacks ran) count where they exist
        optional = [c for e, c in of_norm if e == top_eps[norm] and (":" in c or c.startswith("ensemble@"))]
        cols = [c for e, c in of_norm if e == top_eps[norm] and c not in optional]
        worst = per_seed[cols].min(axis=1, skipna=False) if cols else pd.Series(np.nan, index=per_seed.index)
        joint = optional
        if joint:
            worst = worst.where(worst.isna(), np.fmin(worst, per_seed[joint].min(axis=1)))
        per_seed[f"worst_robust_acc{suffix}"] = worst

    by_model = per_seed.astype(float).groupby(level="model")
    mean, sd = by_model.mean(), by_model.std(ddof=1)
    for col in per_seed.columns:
        board[col] = mean[col]
        board[f"{col}_sd"] = sd[col]
    if not seg_adv.empty:
        board["nucleus_dice_adv_eps"] = at_max.groupby("model")["eps"].max()
    failed = table[table["status"] != "ok"].groupby("model")["cell_id"].nunique()
    board["failed_cells"] = failed.reindex(board.index).fillna(0).astype(int)
    flags = unreliable(table)
    if not flags.empty:
        by_model = flags.groupby("model").agg(unreliable=("unreliable", "any"),
                                              unreliable_reason=("unreliable_reason", lambda r: "; ".join(x for x in r if x)))
        board["unreliable"] = by_model["unreliable"].reindex(board.index).fillna(False).astype(bool)
        board["unreliable_reason"] = by_model["unreliable_reason"].reindex(board.index).fillna("")

    _add_shift_columns(board, table)
    for norm, suffix in (("linf", ""), ("l2", "_l2")):
        if norm in top_eps:
            col = f"worst_robust_acc{suffix}"
            board[f"worst_robust_eps{suffix}"] = np.where(board[col].notna(), top_eps[norm], np.nan)
    if "model_params" in table:
        board["params"] = models["model_params"]

    by = by or ("linf" if "linf" in top_eps else "l2" if "l2" in top_eps else "ood")
    key, n_col = BY_KEY[by]
    if key not in board:
        raise ValueError(f"nothing to rank by {by!r}: the results have no {key!r} "
                         f"({'run an attack of that norm' if by in ('linf', 'l2') else 'run the splits it needs'})")
    lo, hi = _intervals(board[key], board.get(f"{key}_sd"), board["seeds"],
                        counts[n_col].groupby(level="model").mean().reindex(board.index))
    board["key_low"], board["key_high"] = lo, hi
    seg_key = board["nucleus_dice_adv"] if "nucleus_dice_adv" in board else board["nucleus_dice_id"]
    board = board.assign(_k1=board[key].fillna(-1), _k2=board["clean_acc_ood"].fillna(-1), _k3=seg_key.fillna(-1))
    board = board.sort_values(["_k1", "_k2", "_k3"], ascending=False).drop(columns=["_k1", "_k2", "_k3"])
    first = ["family", "recipe", "seeds", "labelled_images", "masked_images", "params", "clean_acc_id", "clean_acc_ood",
             "clean_acc_ood_worst", "effective_robustness", "mce", "worst_robust_acc", "worst_robust_eps",
             "worst_robust_acc_l2", "worst_robust_eps_l2"]
    sds = {f"{c}_sd" for c in per_seed.columns}
    order = [c for c in first if c in board] + [c for c in board if c not in first and c not in sds]
    board = board[[x for c in order for x in (c, f"{c}_sd") if x in board]]  # each _sd after its mean
    board = board.rename_axis("model").reset_index()
    ranks = _ranks(board[key].to_numpy(float), board["key_low"].to_numpy(float), board["key_high"].to_numpy(float))
    board.insert(0, "rank", ranks)
    board.insert(1, "tied", pd.Series(ranks).duplicated(keep=False).to_numpy() & ~np.isnan(board[key].to_numpy(float)))
    board.attrs["by"] = by
    return board


def _add_shift_columns(board: pd.DataFrame, table: pd.DataFrame) -> None:
    """Adds ``effective_robustness`` (OOD accuracy above the ID→OOD trend across models) and ``mce``
    (corruption error relative to a classifier-only baseline) where the results allow them."""
    from robustbench_wbc.report.shift import corruption_error, effective_robustness  # shift reads this module

    try:
        _, per_model = effective_robustness(table)
        board["effective_robustness"] = per_model.set_index("model")["residual"].reindex(board.index)
    except ValueError:  # fewer than 3 models with both ID and OOD accuracy: no trend to read
        pass
    try:
        _, mce = corruption_error(table)
        board["mce"] = mce.set_index("model")["mce"].reindex(board.index)
    except ValueError:  # no corruption splits, or no classifier-only baseline
        pass


def _intervals(value: pd.Series, sd: pd.Series | None, seeds: pd.Series, n: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Gives each model's 95 % interval: over seeds (t) with two or more, else Wilson over its images."""
    lo, hi = np.full(len(value), np.nan), np.full(len(value), np.nan)
    for i, (v, k, m) in enumerate(zip(value, seeds, n)):
        s = np.nan if sd is None else sd.iloc[i]
        if np.isnan(v):
            continue
        if k >= 2 and not np.isnan(s):
            import scipy.stats  # imported here: 0.6 s at start-up otherwise

            half = scipy.stats.t.ppf(0.975, k - 1) * s / np.sqrt(k)
            lo[i], hi[i] = max(0.0, v - half), min(1.0, v + half)
        elif m and not np.isnan(m):
            lo[i], hi[i] = wilson(int(round(v * m)), int(m))
    return lo, hi


def _ranks(value: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Gives 1 + the number of models whose interval lies wholly above each model's (NaN ranks last)."""
    ranks = np.empty(len(value), dtype=int)
    have = ~np.isnan(value)
    for i in range(len(value)):
        ranks[i] = 1 + int(np.sum(lo[have] > hi[i])) if have[i] else 1 + int(have.sum())
    return ranks


def sd_columns(board: pd.DataFrame) -> dict[str, str]:
    """Maps each leaderboard column that has a spread over seeds to its ``<column>_sd`` column."""
    return {c: f"{c}_sd" for c in board.columns if f"{c}_sd" in board.columns}


def _fmt(v: object, col: str, sd: object = None) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if col == "params":
        return "–" if pd.isna(v) else f"{float(v) / 1e6:.2f} M"
    if isinstance(v, float):
        if np.isnan(v):
            return "–"
        if col.endswith("_eps"):
            return eps_label(v, "linf")
        text = f"{100 * v:.1f}"
        if isinstance(sd, float) and not np.isnan(sd):
            text += f" ± {100 * sd:.1f}"
        return text
    return str(v)


HEADERS = {
    "rank": "rank", "model": "model", "family": "family", "recipe": "recipe",
    "seeds": "seeds", "labelled_images": "labels (images)", "masked_images": "labels (masks)",
    "clean_acc_id": "clean acc ID %", "clean_acc_ood": "clean acc OOD %", "clean_acc_ood_worst": "worst OOD split %",
    "effective_robustness": "effective robustness (points)", "mce": "mCE %",
    "params": "params", "worst_robust_acc_l2": "worst robust acc L2 %", "worst_robust_eps_l2": "L2 eps",
    "nucleus_dice_id": "nucleus Dice ID %", "cytoplasm_dice_id": "cytoplasm Dice ID %",
    "nucleus_dice_ood": "nucleus Dice OOD %", "cytoplasm_dice_ood": "cytoplasm Dice OOD %",
    "nucleus_dice_adv": "nucleus Dice under seg attack %", "nucleus_dice_adv_eps": "seg attack eps",
    "failed_cells": "failed cells", "worst_robust_acc": "worst robust acc %",
    "worst_robust_eps": "worst at eps",
    "unreliable": "unreliable", "unreliable_reason": "why unreliable",
    "real_acc": "real acc %", "real_balanced_acc": "real balanced acc %",
    "nucleus_dice_real": "real nucleus Dice %", "cytoplasm_dice_real": "real cytoplasm Dice %",
}


def to_markdown(board: pd.DataFrame) -> str:
    """Renders a leaderboard as a GitHub markdown table (robust columns as ``attack@eps %``).

    A number with a spread over seeds (its ``_sd`` column is not NaN: the model has two or more
    seeds) reads ``mean ± sd``, e.g. ``41.8 ± 2.3``; otherwise just the mean. The ``_sd`` columns
    get no column of their own.
    """
    if board.empty:
        return "_No results yet: run `wbc-robust run` first._\n"
    sd_of = sd_columns(board)
    cols = [c for c in board.columns if c not in sd_of.values() and c not in ("tied", "key_low", "key_high")]
    head = [HEADERS.get(c, f"{c} robust acc %") for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in board.iterrows():
        cells = [_fmt(row[c], c, row[sd_of[c]] if c in sd_of else None) for c in cols]
        if "tied" in board and row["tied"]:
            cells[cols.index("rank")] += "="  # shares its rank: the intervals overlap
        lines.append("| " + " | ".join(cells) + " |")
    by = board.attrs.get("by")
    note = (f"\nRanked by {BY_TEXT[by]}; `n=` marks a rank shared by models whose 95 % intervals overlap.\n"
            if by in BY_TEXT else "")
    return "\n".join(lines) + "\n" + note


def to_csv(board: pd.DataFrame) -> str:
    """Writes a leaderboard as CSV: plain numbers, the mean and its ``_sd`` in separate columns
    (empty where a model has fewer than two seeds), so the schema does not depend on the seeds."""
    return board.to_csv(index=False)
