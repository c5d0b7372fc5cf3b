"""Leaderboards from the tidy table: numbers in, formatted text out only at the last step."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from robustbench_wbc.attacks.base import eps_label
from robustbench_wbc.bench.cells import CLEAN
from robustbench_wbc.data.splits import cell_stream
from robustbench_wbc.report.ranking import METHOD as RANK_METHOD
from robustbench_wbc.report.ranking import Evidence, paired_ranks
from robustbench_wbc.report.reliability import unreliable
from robustbench_wbc.report.rows import COORDS, REAL, SEED_KEYS, current_rows, split_role
from robustbench_wbc.stats import wilson

logger = logging.getLogger(__name__)

__all__ = ["BY", "COORDS", "HEADERS", "SEED_KEYS", "current_rows", "eps_label", "header", "leaderboard", "legend",
           "rendered", "robust_column", "split_role", "threat_label", "to_csv", "to_markdown"]

NORM_TEXT = {"linf": "L∞", "l2": "L2"}
SUFFIX = {"linf": "", "l2": "_l2"}  # the per-norm columns: worst_robust_acc (L∞), worst_robust_acc_l2, …

BY = ("linf", "l2", "ood", "seg", "seg-l2", "real")
# the number each ranking reads
BY_KEY = {"linf": "worst_robust_acc", "l2": "worst_robust_acc_l2", "ood": "clean_acc_ood",
          "seg": "nucleus_dice_adv", "seg-l2": "nucleus_dice_adv_l2", "real": "real_balanced_acc"}
BY_TEXT = {"linf": "the worst robust accuracy under L∞ attacks at the largest L∞ eps",
           "l2": "the worst robust accuracy under L2 attacks at the largest L2 eps",
           "ood": "clean accuracy out of distribution (mean over the OOD splits)",
           "seg": "nucleus Dice under L∞ attacks on the masks at the largest L∞ eps",
           "seg-l2": "nucleus Dice under L2 attacks on the masks at the largest L2 eps",
           "real": "balanced accuracy on real cells (mean over the real splits)"}
FALLBACK_METHOD = ("without per-sample outcomes to compare models on the same images ({why}): rank = 1 + the "
                   "number of models whose 95 % interval lies wholly above its own (Wilson's over the images with one "
                   "training seed, mean ± t·sd/√k over k ≥ 2 seeds)")
EPS_DECIMALS = 10  # eps values are matched after rounding, so 8/255 computed twice is one eps
COUNT_COLUMNS = ("rank", "seeds", "labelled_images", "masked_images", "failed_cells")
# the eps columns, and the norm each is written in
EPS_COLUMNS = {"worst_robust_eps": "linf", "worst_robust_eps_l2": "l2",
               "nucleus_dice_adv_eps": "linf", "nucleus_dice_adv_eps_l2": "l2"}


def threat_label(norm: str, eps: float) -> str:
    """Writes a budget in its norm's form, the norm named: ``L∞ 8/255``, ``L2 0.5``."""
    return f"{NORM_TEXT.get(norm, norm)} {eps_label(eps, norm)}"


def robust_column(attack: str, target: str, norm: str, eps: float) -> str:
    """The leaderboard's column of robust accuracy under ``attack`` on ``target`` at (``norm``, ``eps``).

    Keyed by the norm, so that no two threat models share a column: ``pgd@linf=8/255``,
    ``pgd-l2@l2=1``, ``pgd:joint@linf=2/255`` (a joint attack), ``ensemble@l2=0.5``.
    """
    return f"{attack}{'' if target == 'cls' else ':' + target}@{norm}={eps_label(eps, norm)}"


def column_threat(col: str) -> tuple[str, str, str] | None:
    """Parses a :func:`robust_column` name into ``(attack[:target], norm, eps as written)``; ``None`` for others."""
    name, at, threat = col.rpartition("@")
    norm, eq, eps = threat.partition("=")
    if not (at and eq and norm in NORM_TEXT and name):
        return None
    return name, norm, eps


def header(col: str) -> str:
    """The rendered title of a leaderboard column (markdown, HTML): ``pgd L∞ 8/255 robust acc %``."""
    if col in HEADERS:
        return HEADERS[col]
    parsed = column_threat(col)
    if parsed is None:
        return col
    name, norm, eps = parsed
    return f"{name} {NORM_TEXT[norm]} {eps} robust acc %"


def leaderboard(table: pd.DataFrame, ensemble_rows: pd.DataFrame | None = None, by: str | None = None,
                samples: Callable[[str], pd.DataFrame] | None = None) -> pd.DataFrame:
    """Gives one row per model: labels used, clean ID/OOD accuracy, robust accuracy, Dice, reliability.

    Clean numbers come from the in-distribution test split (role ``test``), the mean over SynthWBC's
    OOD splits, and (columns ``real_*``, where the table has them) the mean over splits of real cells;
    robust accuracy is on the in-distribution test split under attacks on the class head, one column
    per attack, norm and eps (:func:`robust_column`; ``attack:joint@…`` for a joint attack on a
    multitask model, which counts for its worst case too). Everything that depends on a budget is
    kept apart per norm: ``worst_robust_acc`` (L∞) and ``worst_robust_acc_l2`` with the eps each was
    read at, and nucleus Dice under attack on the masks, ``nucleus_dice_adv`` (L∞) and
    ``nucleus_dice_adv_l2``, each the worst over attacks of its norm at the model's largest eps of
    that norm (``nucleus_dice_adv_eps``, ``nucleus_dice_adv_eps_l2``).

    Each number is first worked out per training seed (``seeds`` says how many) from that seed's
    cells, as above; the column holds the mean over seeds and ``<column>_sd`` the sample standard
    deviation over seeds (ddof=1; NaN where fewer than two seeds have the number). In particular
    ``worst_robust_acc`` is the mean over seeds of each seed's worst robust accuracy over the
    attacks at the largest eps (``worst_robust_eps``), not the worst of the seed-mean columns.

    ``ensemble_rows`` (from :func:`robustbench_wbc.report.ensemble.ensemble`) adds one
    ``ensemble@norm=eps`` column per norm and eps where two or more attacks ran: the per-image worst
    case over them, which then also counts for the worst case. ``unreliable`` and
    ``unreliable_reason`` come from :func:`robustbench_wbc.report.reliability.unreliable` (a model
    is flagged when any of its seeds is). ``effective_robustness`` is
    :func:`robustbench_wbc.report.shift.effective_robustness`'s residual where its fit is
    determined, else NaN with the reason in ``board.attrs["notes"]``.

    ``by`` picks the ranking (RobustBench's one leaderboard per threat model, :data:`BY_TEXT`):
    ``linf`` (the default when L∞ attacks ran), ``l2``, ``ood`` (the default otherwise), ``seg``,
    ``seg-l2``. Models without the number rank last. **Ranks:** given ``samples`` (``cell_id`` →
    the cell's per-sample outcomes, e.g. ``ResultStore.samples``), models are compared paired on
    the same images, over seeds and images together (:mod:`robustbench_wbc.report.ranking`); a
    model's rank is 1 + the number of models ahead of it at 95 % confidence, and ``key_low`` /
    ``key_high`` its bootstrap interval. Without them (or where they do not reproduce the number),
    rank = 1 + the number of models whose interval lies wholly above its own. Which rule ranked
    the board is in ``board.attrs["rank_method"]``; ``tied`` marks a shared rank.
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

    numbers = per_seed_numbers(table.assign(role=table["split"].map(split_role)), ensemble_rows)
    per_seed, seg_eps, top_eps = numbers.values, numbers.seg_eps, numbers.top_eps
    clean, attacked = ok[ok["attack"] == CLEAN], ok[ok["attack"] != CLEAN]

    by_model = per_seed.astype(float).groupby(level="model")
    mean, sd = by_model.mean(), by_model.std(ddof=1)
    for col in per_seed.columns:
        board[col] = mean[col]
        board[f"{col}_sd"] = sd[col]
    for norm, suffix in SUFFIX.items():
        if norm in seg_eps:
            board[f"nucleus_dice_adv_eps{suffix}"] = seg_eps[norm]
    failed = table[table["status"] != "ok"].groupby("model")["cell_id"].nunique()
    board["failed_cells"] = failed.reindex(board.index).fillna(0).astype(int)
    flags = unreliable(table)
    if not flags.empty:
        by_model = flags.groupby("model").agg(unreliable=("unreliable", "any"),
                                              unreliable_reason=("unreliable_reason", lambda r: "; ".join(x for x in r if x)))
        board["unreliable"] = by_model["unreliable"].reindex(board.index).fillna(False).astype(bool)
        board["unreliable_reason"] = by_model["unreliable_reason"].reindex(board.index).fillna("")

    notes = []
    _add_code_checks(board, table, notes)
    _add_shift_columns(board, table, notes)
    for norm, suffix in SUFFIX.items():
        if norm in top_eps:
            col = f"worst_robust_acc{suffix}"
            board[f"worst_robust_eps{suffix}"] = np.where(board[col].notna(), top_eps[norm], np.nan)
    if "model_params" in table:
        board["params"] = models["model_params"]

    if by is None:
        no_ood = "clean_acc_ood" not in board or board["clean_acc_ood"].isna().all()
        by = ("linf" if "linf" in top_eps else "l2" if "l2" in top_eps
              else "real" if no_ood and "real_balanced_acc" in board else "ood")
    key = BY_KEY[by]
    if key not in board:
        need = "an attack of that norm" if by in ("linf", "l2") else "the splits it needs" if by == "ood" \
            else "an attack of that norm on the masks"
        raise ValueError(f"nothing to rank by {by!r}: the results have no {key!r} (run {need})")
    seg_key = board["nucleus_dice_adv"] if "nucleus_dice_adv" in board else board["nucleus_dice_id"]
    board = board.assign(_k1=board[key].fillna(-1), _k2=board["clean_acc_ood"].fillna(-1), _k3=seg_key.fillna(-1))
    board = board.sort_values(["_k1", "_k2", "_k3"], ascending=False).drop(columns=["_k1", "_k2", "_k3"])
    order = list(board.index)
    evidence, problems = (_evidence(key, numbers, samples, board[key]) if samples is not None
                          else ({}, {"*": "no per-sample outcomes were given"}))
    if not problems:
        ranks, lo, hi = paired_ranks(evidence, order)
        board.attrs["rank_method"] = RANK_METHOD
    else:  # one rule for the whole board: intervals, and the legend says why
        for model, why in problems.items():
            if model != "*":
                logger.warning("ranking by intervals: %s: %s", model, why)
        counts = _independent_images(clean, attacked, key, per_seed.index)
        lo, hi = _intervals(board[key], board.get(f"{key}_sd"), board["seeds"],
                            counts.groupby(level="model").mean().reindex(board.index))
        ranks = _ranks(board[key].to_numpy(float), lo, hi)
        why = "; ".join(w if m == "*" else f"{m}: {w}" for m, w in problems.items())
        board.attrs["rank_method"] = FALLBACK_METHOD.format(why=why)
    board["key_low"], board["key_high"] = lo, hi
    first = ["family", "recipe", "seeds", "labelled_images", "masked_images", "params", "clean_acc_id", "clean_acc_ood",
             "clean_acc_ood_worst", "effective_robustness", "mce", "worst_robust_acc", "worst_robust_eps",
             "worst_robust_acc_l2", "worst_robust_eps_l2"]
    sds = {f"{c}_sd" for c in per_seed.columns}
    cols = [c for c in first if c in board] + [c for c in board if c not in first and c not in sds]
    board = board[[x for c in cols for x in (c, f"{c}_sd") if x in board]]  # each _sd after its mean
    board = board.rename_axis("model").reset_index()
    board.insert(0, "rank", ranks)
    # in rank order (a model nothing is shown ahead of may hold a lower number than one behind another),
    # then by the number
    board = board.iloc[np.lexsort((-board[key].fillna(-1).to_numpy(float), board["rank"].to_numpy()))].reset_index(drop=True)
    ranks = board["rank"].to_numpy()
    board.insert(1, "tied", pd.Series(ranks).duplicated(keep=False).to_numpy() & ~np.isnan(board[key].to_numpy(float)))
    board.attrs["by"] = by
    board.attrs["notes"] = notes
    return board


@dataclass
class PerSeed:
    """Each leaderboard number per (model, training seed), and the rows it was read from.

    ``values``: one row per (model, model_seed), a column per number; ``sources``: per column, the rows
    behind it (for the paired comparisons); ``candidates``: per worst-case column, the columns it is
    the minimum of; ``top_eps`` the largest eps per norm, ``seg_eps`` per norm the largest eps of each
    model's attacks on the masks.
    """

    values: pd.DataFrame
    sources: dict[str, pd.DataFrame]
    candidates: dict[str, list[str]]
    top_eps: dict[str, float]
    seg_eps: dict[str, pd.Series]


def per_seed_numbers(current: pd.DataFrame, ensemble_rows: pd.DataFrame | None = None) -> PerSeed:
    """Works out every leaderboard number per (model, training seed) from the current rows (``role`` added),
    as :func:`leaderboard` describes them; only ``ok`` rows give numbers, but the failed ones say what was
    run (an attack that failed for a model leaves its worst case unknown, not better)."""
    current = current.assign(eps=current["eps"].astype(float).round(EPS_DECIMALS))  # 8/255 computed twice is one eps
    ok = current[current["status"] == "ok"]
    clean = ok[ok["attack"] == CLEAN]
    attacked = ok[ok["attack"] != CLEAN]
    # one row per (model, training seed), one column per number the board shows
    per_seed = pd.DataFrame(index=pd.MultiIndex.from_frame(ok[SEED_KEYS].drop_duplicates()))
    sources: dict[str, pd.DataFrame] = {}  # each per-seed column's rows (for the paired ranking)
    candidates: dict[str, list[str]] = {}  # the columns each worst case is the minimum of

    def mean_of(df: pd.DataFrame, metric: str, role: str) -> pd.Series:
        sel = df[(df["metric"] == metric) & (df["role"] == role)]
        return sel.groupby(SEED_KEYS)["value"].mean()

    for key, role in (("clean_acc_id", "test"), ("clean_acc_ood", "ood")):
        sources[key] = clean[(clean["metric"] == "accuracy") & (clean["role"] == role)]
        per_seed[key] = sources[key].groupby(SEED_KEYS)["value"].mean()
    per_seed["clean_acc_ood_worst"] = sources["clean_acc_ood"].groupby(SEED_KEYS)["value"].min()
    robust_cols = []  # (norm, eps, column)
    # accuracy under attack on the class head: a cls attack, or a joint one on a multitask model (the
    # attacker may pick either loss, so both count for the worst case)
    rob = attacked[(attacked["metric"] == "robust_accuracy") & (attacked["role"] == "test")
                   & attacked["target"].isin(["cls", "joint"])]
    for (target, attack, norm, eps), grp in rob.groupby(["target", "attack", "norm", "eps"], sort=True):
        col = robust_column(attack, target, norm, eps)
        per_seed[col] = grp.groupby(SEED_KEYS)["value"].mean()
        sources[col] = grp
        robust_cols.append((norm, eps, col))
    if ensemble_rows is not None and not ensemble_rows.empty:
        ens = ensemble_rows[(ensemble_rows["split"].map(split_role) == "test") & (ensemble_rows["attacks"] >= 2)]
        ens = ens.assign(eps=ens["eps"].astype(float).round(EPS_DECIMALS))
        for (norm, eps), grp in ens.groupby(["norm", "eps"], sort=True):
            col = robust_column("ensemble", "cls", norm, eps)
            per_seed[col] = grp.groupby(SEED_KEYS)["robust_accuracy"].mean()
            # the groups of the worst case (model, seed, split, n), each with every attack's rows in it
            groups = grp[[*SEED_KEYS, "split", "n"]]
            sources[col] = rob[(rob["norm"] == norm) & (rob["eps"] == eps)].merge(groups, on=[*SEED_KEYS, "split", "n"])
            robust_cols.append((norm, eps, col))
    for part in ("nucleus", "cytoplasm"):
        per_seed[f"{part}_dice_id"] = mean_of(clean, f"{part}_dice", "test")
        per_seed[f"{part}_dice_ood"] = mean_of(clean, f"{part}_dice", "ood")
    if (clean["role"] == REAL).any():  # the sim-to-real gap: real cells, for models trained on generated ones
        per_seed["real_acc"] = mean_of(clean, "accuracy", REAL)
        per_seed["real_balanced_acc"] = mean_of(clean, "balanced_accuracy", REAL)
        sources["real_balanced_acc"] = clean[(clean["metric"] == "balanced_accuracy") & (clean["role"] == REAL)]
        for part in ("nucleus", "cytoplasm"):
            per_seed[f"{part}_dice_real"] = mean_of(clean, f"{part}_dice", REAL)
    seg_adv = attacked[(attacked["metric"] == "nucleus_dice") & (attacked["role"] == "test")
                       & (attacked["target"] == "seg")]
    seg_eps = {}
    for norm, suffix in SUFFIX.items():  # per norm, at that norm's largest eps (one budget for every model)
        of_norm = seg_adv[seg_adv["norm"] == norm]
        if of_norm.empty:
            continue
        at_max = of_norm[of_norm["eps"] == of_norm["eps"].max()]
        per_seed[f"nucleus_dice_adv{suffix}"] = at_max.groupby(SEED_KEYS)["value"].min()
        sources[f"nucleus_dice_adv{suffix}"] = at_max
        seg_eps[norm] = at_max.groupby("model")["eps"].max()
    # what was run on the class head, per (model, seed), whatever became of it (failed cells included)
    tried = current[(current["attack"] != CLEAN) & (current["role"] == "test") & (current["target"] == "cls")]
    top_eps = {}
    for norm, suffix in SUFFIX.items():  # the worst case over attacks at the largest eps, per norm
        of_norm = [(e, c) for nm, e, c in robust_cols if nm == norm]
        if not of_norm:
            continue
        top_eps[norm] = max(e for e, _ in of_norm)
        # every cls attack run on that model at that eps must have a number (one that failed leaves the worst
        # case unknown); joint attacks (multitask only) and the ensemble (two or more attacks) count where they exist
        optional = [c for e, c in of_norm if e == top_eps[norm] and (":" in c.split("@")[0] or c.startswith("ensemble@"))]
        cols = [c for e, c in of_norm if e == top_eps[norm] and c not in optional]
        ran = tried[(tried["norm"] == norm) & (tried["eps"] == top_eps[norm])]
        ran = ran.assign(_col=[robust_column(a, "cls", norm, top_eps[norm]) for a in ran["attack"]])
        required = pd.DataFrame(False, index=per_seed.index, columns=cols)
        unknown = pd.Series(False, index=per_seed.index)
        for (model, seed), grp in ran.groupby(SEED_KEYS):
            if (model, seed) not in per_seed.index:
                continue
            for c in set(grp["_col"]):
                if c in required.columns:
                    required.at[(model, seed), c] = True
                else:  # run, but no number at all: it failed everywhere
                    unknown.at[(model, seed)] = True
        values = per_seed[cols] if cols else pd.DataFrame(index=per_seed.index)
        worst = values.where(required).min(axis=1)
        missing = (required & values.isna()).any(axis=1) | unknown | ~required.any(axis=1)
        worst = worst.where(~missing)
        if optional:
            worst = worst.where(worst.isna(), np.fmin(worst, per_seed[optional].min(axis=1)))
        per_seed[f"worst_robust_acc{suffix}"] = worst
        candidates[f"worst_robust_acc{suffix}"] = cols + optional
    return PerSeed(per_seed, sources, candidates, top_eps, seg_eps)


def key_evidence(table: pd.DataFrame, key: str, samples: Callable[[str], pd.DataFrame],
                 ensemble_rows: pd.DataFrame | None = None) -> dict[str, Evidence]:
    """The per-image outcomes behind each model's leaderboard number ``key`` (e.g. ``clean_acc_ood``,
    ``worst_robust_acc``), for paired comparisons (:func:`robustbench_wbc.report.ranking.paired_difference`):
    the models whose outcomes can be read and give their number back (the others are left out, logged)."""
    t = current_rows(table)
    t = t.assign(role=t["split"].map(split_role))
    per = per_seed_numbers(t, ensemble_rows)
    if key not in per.values:
        return {}
    values = per.values[key].astype(float).groupby(level="model").mean()
    evidence, problems = _evidence(key, per, samples, values)
    for model, why in problems.items():
        logger.warning("%s: %s", model, why)
    return evidence


def _cells_outcome(samples: Callable[[str], pd.DataFrame], row: pd.Series, column: str) -> tuple[np.ndarray, np.ndarray]:
    """One cell's per-image outcome (``robust``, ``correct`` or a per-image score) with the cell each image shows."""
    from robustbench_wbc.report.ensemble import robust_outcome

    s = samples(row["cell_id"])
    if column == "correct":
        values = (s["clean_pred"] == s["label"]).to_numpy(float)
    elif column == "balanced":  # each image weighted by 1/(its class's images × classes): their mean is the
        labels = s["label"].to_numpy()  # balanced accuracy, and a resample's weighted mean estimates it
        classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        values = (s["clean_pred"] == s["label"]).to_numpy(float) * len(labels) / (len(classes) * counts[inverse])
    elif column == "robust":
        values = robust_outcome(s).to_numpy(float)
    else:
        values = s[column].to_numpy(float)
    stream = cell_stream(row["split"])
    return np.array([f"{stream}#{i}" for i in s["index"].to_numpy()]), values


def _evidence(key: str, per: PerSeed, samples: Callable[[str], pd.DataFrame], values: pd.Series
              ) -> tuple[dict[str, Evidence], dict[str, str]]:
    """The per-image outcomes behind each model's number ``key``, and for the models whose outcomes cannot
    be read or do not give their number back, why (the leaderboard then ranks by intervals and says so).

    For a worst case, each seed's outcomes are those of the column (attack, or ensemble) that gave that
    seed's worst case on all the images; the bootstrap keeps that column fixed across its replicates.
    """
    out, problems = {}, {}
    per_seed = per.values
    for model, seeds in per_seed[key].dropna().groupby(level="model"):
        try:
            rows_per_seed = []
            for _, seed in seeds.index:
                col = key
                if key.startswith("worst_robust_acc"):  # the attack (or ensemble) that gave this seed's worst case
                    cands = [c for c in per.candidates[key] if not np.isnan(per_seed.at[(model, seed), c])]
                    col = min(cands, key=lambda c: per_seed.at[(model, seed), c])
                rows = per.sources[col]
                rows = rows[(rows["model"] == model) & (rows["model_seed"] == seed)]
                if key.startswith("nucleus_dice_adv"):  # the attack cell with the lowest Dice
                    rows = rows.sort_values("value", kind="stable").iloc[:1]
                    splits = [_cells_outcome(samples, rows.iloc[0], "adv_nucleus_dice")]
                elif key in ("clean_acc_ood", "clean_acc_id"):
                    splits = [_cells_outcome(samples, r, "correct") for _, r in rows.iterrows()]
                elif key == "real_balanced_acc":
                    splits = [_cells_outcome(samples, r, "balanced") for _, r in rows.iterrows()]
                elif col.startswith("ensemble@"):  # robust under every attack of the group: per split, all of them
                    splits = []
                    for _, grp in rows.groupby(["split", "n"], sort=True):
                        parts = [_cells_outcome(samples, r, "robust") for _, r in grp.iterrows()]
                        splits.append((parts[0][0], np.logical_and.reduce([p[1] > 0 for p in parts]).astype(float)))
                else:
                    splits = [_cells_outcome(samples, r, "robust") for _, r in rows.iterrows()]
                rows_per_seed.append(tuple(splits))
            ev = Evidence(tuple(rows_per_seed))
        except (OSError, KeyError, ValueError, IndexError) as exc:  # per-sample outcomes missing or unreadable
            problems[model] = f"its per-sample outcomes could not be read ({exc})"
            continue
        if not np.isclose(ev.value(), values.get(model, np.nan), rtol=0, atol=1e-6):  # float32 scores: ~1e-7
            problems[model] = (f"its per-sample outcomes give {100 * ev.value():.2f} %, not the table's "
                               f"{100 * values.get(model, np.nan):.2f} %")
            continue
        out[model] = ev
    return out, problems


def _independent_images(clean: pd.DataFrame, attacked: pd.DataFrame, key: str, index: pd.Index) -> pd.Series:
    """Per (model, seed), the images behind the ranking number that are different cells (for its interval).

    Splits that hold the same cells (:func:`robustbench_wbc.data.splits.cell_stream`: SynthWBC's OOD
    splits are the test cells under other labs) count their cells once, not once per split.
    """
    if key == "clean_acc_ood":
        sel = clean[(clean["metric"] == "accuracy") & (clean["role"] == "ood")]
    elif key == "real_balanced_acc":
        sel = clean[(clean["metric"] == "accuracy") & (clean["role"] == REAL)]
    elif key.startswith("nucleus_dice_adv"):
        sel = clean[(clean["metric"] == "nucleus_dice") & (clean["role"] == "test")]
    else:
        sel = clean[(clean["metric"] == "accuracy") & (clean["role"] == "test")]
    if sel.empty:
        return pd.Series(np.nan, index=index)
    sel = sel.assign(_stream=sel["split"].map(cell_stream))
    return sel.groupby([*SEED_KEYS, "_stream"])["n"].max().groupby(SEED_KEYS).sum().reindex(index)


def _add_code_checks(board: pd.DataFrame, table: pd.DataFrame, notes: list[str]) -> None:
    """Says loudly where a number mixes cells of different code (a ``mixed_versions`` column naming the
    components and their values) and how many cells other code than this install's computed."""
    from robustbench_wbc.bench.provenance import mixed_versions, stale_rows

    if "fingerprint" not in table:
        notes.append("these cells carry no fingerprint of the code that computed them (a table written before the "
                     "suite recorded one): which code made them cannot be checked; re-run to recompute them")
        return
    mixed = mixed_versions(table, keys=("model",))
    if not mixed.empty:
        board["mixed_versions"] = mixed.set_index("model")["reason"].reindex(board.index).fillna("")
        notes.append(f"**{len(mixed)} model{'s' * (len(mixed) != 1)} mix cells of different code versions in their "
                     "numbers** (column `mixed code versions`): re-run the same command to recompute the stale cells")
    stale = table.loc[stale_rows(table), "cell_id"].nunique()
    if stale:
        notes.append(f"**{stale} of {table['cell_id'].nunique()} cells were computed by other code or libraries than "
                     "this install's**: re-run the same command to recompute them")


def _add_shift_columns(board: pd.DataFrame, table: pd.DataFrame, notes: list[str]) -> None:
    """Adds ``effective_robustness`` (OOD accuracy above the ID→OOD line of the standard-trained
    models) and ``mce`` (corruption error relative to the classifier-only model of the same
    encoder) where the results allow them; a fit that cannot carry the column leaves it ``–`` and
    says why in ``notes``."""
    from robustbench_wbc.report.shift import corruption_error, effective_robustness, fit_text  # shift reads this module

    try:
        fit, per_model = effective_robustness(table)
    except ValueError:  # no model with both ID and OOD accuracy: nothing to say
        pass
    else:
        residual = per_model.set_index("model")["residual"]
        board["effective_robustness"] = residual.reindex(board.index) if fit["determined"] else np.nan
        notes.append(f"effective robustness: {fit_text(fit)}")
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


def fmt(v: object, col: str, sd: object = None) -> str:
    """Formats one leaderboard value: percent with one decimal (``mean ± sd`` over seeds), an eps in its
    norm's form (:data:`EPS_COLUMNS`), effective robustness in signed points, ``–`` where missing."""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if col == "params":
        v = pd.to_numeric(v, errors="coerce")
        return "–" if pd.isna(v) else f"{float(v) / 1e6:.2f} M"
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if np.isnan(v):
            return "–"
        if col in COUNT_COLUMNS:  # a count made float by a missing value elsewhere in its column
            return f"{v:.0f}"
        if col in EPS_COLUMNS:
            return eps_label(v, EPS_COLUMNS[col])
        text = f"{100 * v:+.1f}" if col == "effective_robustness" else f"{100 * v:.1f}"
        if isinstance(sd, (float, np.floating)) and not np.isnan(sd):
            text += f" ± {100 * float(sd):.1f}"
        return text
    return str(v)


HEADERS = {
    "rank": "rank", "model": "model", "family": "family", "recipe": "recipe",
    "seeds": "seeds", "labelled_images": "labels (images)", "masked_images": "labels (masks)",
    "clean_acc_id": "clean acc ID %", "clean_acc_ood": "clean acc OOD %", "clean_acc_ood_worst": "worst OOD split %",
    "effective_robustness": "effective robustness (points)", "mce": "mCE %",
    "params": "params", "worst_robust_acc": "worst robust acc L∞ %", "worst_robust_eps": "L∞ eps",
    "worst_robust_acc_l2": "worst robust acc L2 %", "worst_robust_eps_l2": "L2 eps",
    "nucleus_dice_id": "nucleus Dice ID %", "cytoplasm_dice_id": "cytoplasm Dice ID %",
    "nucleus_dice_ood": "nucleus Dice OOD %", "cytoplasm_dice_ood": "cytoplasm Dice OOD %",
    "nucleus_dice_adv": "nucleus Dice under L∞ seg attack %", "nucleus_dice_adv_eps": "seg attack L∞ eps",
    "nucleus_dice_adv_l2": "nucleus Dice under L2 seg attack %", "nucleus_dice_adv_eps_l2": "seg attack L2 eps",
    "failed_cells": "failed cells", "mixed_versions": "mixed code versions",
    "unreliable": "unreliable", "unreliable_reason": "why unreliable",
    "real_acc": "real acc %", "real_balanced_acc": "real balanced acc %",
    "nucleus_dice_real": "real nucleus Dice %", "cytoplasm_dice_real": "real cytoplasm Dice %",
}
HIDDEN = ("tied", "key_low", "key_high")  # serve the ranking only: no column of their own when rendered


def rendered(board: pd.DataFrame) -> tuple[list[str], list[str], list[list[str]]]:
    """Gives ``(columns, titles, rows of formatted cells)`` of a leaderboard, as every renderer shows it.

    The ``_sd`` columns fold into their mean (``mean ± sd``), the ranking's helper columns are left
    out, and a shared rank reads ``n=``.
    """
    sd_of = sd_columns(board)
    cols = [c for c in board.columns if c not in sd_of.values() and c not in HIDDEN]
    rows = []
    for _, row in board.iterrows():
        cells = [fmt(row[c], c, row[sd_of[c]] if c in sd_of else None) for c in cols]
        if "tied" in board and bool(row["tied"]) and "rank" in cols:
            cells[cols.index("rank")] += "="  # shares its rank
        rows.append(cells)
    return cols, [header(c) for c in cols], rows


def legend(board: pd.DataFrame) -> list[str]:
    """The sentences that say how to read a leaderboard: what ranks it, by which rule, and its notes."""
    by = board.attrs.get("by")
    out = []
    if by in BY_TEXT:
        out.append(f"Ranked by {BY_TEXT[by]}; {board.attrs.get('rank_method', '')}; "
                   "`n=` marks a rank that two or more models share.")
    out += [n[0].upper() + n[1:] for n in board.attrs.get("notes", [])]
    return out


def to_markdown(board: pd.DataFrame) -> str:
    """Renders a leaderboard as a GitHub markdown table (robust columns as ``attack norm eps robust acc %``),
    then its legend (:func:`legend`).

    A number with a spread over seeds (its ``_sd`` column is not NaN: the model has two or more
    seeds) reads ``mean ± sd``, e.g. ``41.8 ± 2.3``; otherwise just the mean. The ``_sd`` columns
    get no column of their own.
    """
    if board.empty:
        return "_No results yet: run `wbc-robust run` first._\n"
    _, titles, rows = rendered(board)
    lines = ["| " + " | ".join(titles) + " |", "|" + "|".join("---" for _ in titles) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    notes = legend(board)
    return "\n".join(lines) + "\n" + ("\n" + "\n\n".join(notes) + "\n" if notes else "")


def to_csv(board: pd.DataFrame) -> str:
    """Writes a leaderboard as CSV: plain numbers, the mean and its ``_sd`` in separate columns
    (empty where a model has fewer than two seeds), so the schema does not depend on the seeds."""
    return board.to_csv(index=False)
