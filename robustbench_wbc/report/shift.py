"""Distribution shift across the zoo: effective robustness (the ID → OOD line) and the corruption error (mCE).

Effective robustness
--------------------
Across many models, out-of-distribution performance follows in-distribution performance closely,
along a line: Taori et al. (NeurIPS 2020, "Measuring robustness to natural distribution shifts")
and Miller et al. (ICML 2021, "Accuracy on the line") fit it on transformed axes (logit and
probit), and OODRobustBench (Li et al., ICML 2024) fits the ID → OOD trend across its model zoo
and reads a model's *effective robustness* as how far its OOD performance lies above the trend's
prediction from its ID performance. :func:`effective_robustness` fits that line across the
models of a table by least squares and gives each model's residual.

The transform is a parameter. The default is ``"logit"`` (Taori et al.): accuracy and Dice are
bounded in [0, 1], and the models of this bench sit near the ceiling in distribution (90 % and
above), where a straight line in raw units bends (a small zoo fitted on raw accuracy happily
predicts OOD accuracies above 100 % for a better model); the logit stretches both ends so the
trend is linear there and a prediction maps back into (0, 1). ``"probit"`` (Miller et al.) is
nearly the same curve; ``"linear"`` (raw units) is there for a plain reading.

Three rules keep the fit from being an artefact:

* **The line is fitted on the standard-trained models only** (Taori et al. fit it on baselines:
  adversarial training moves a model off the line, which is what is measured, not what sets it).
  Every model with both numbers gets a residual against that line; a recipe this version does not
  know is left out of the fit (it cannot be told standard).
* **Proportions are smoothed before the transform**, ``p̃ = (k + ½)/(n + 1)`` with ``k`` the images
  right (``value × n``, summed over the splits of a role) and ``n`` the images: 100 % on 256
  images reads 99.8 %, a finite logit fixed by the data's own size, where clipping at an arbitrary
  ``1e-4`` set the logit of every perfect model to 9.2 and decided the slope. A mean of per-image
  scores (Dice) is smoothed the same way. The fit, the prediction and the residual are on the
  smoothed values; ``id`` and ``ood`` report the observed ones.
* **A fit that cannot carry a number says so** (``determined`` false, with the ``reason``): fewer
  than :data:`MIN_BASELINES` standard-trained models; in-distribution accuracy *saturated*, i.e.
  the baselines' transformed ID values spread less than :data:`SATURATION_NOISE` times their own
  sampling noise (their sample sd against the root mean square of the delta-method standard error,
  ``1/√(n p̃(1 − p̃))`` on the logit axis, ``n`` the images of one seed: a model's seeds are scored on
  the same images); or ``R²`` below :data:`R2_MIN`. No residual is given then, in any view: the
  leaderboard shows ``–`` with the reason in its legend.

Corruption error
----------------
ImageNet-C (Hendrycks & Dietterich, ICLR 2019) normalises a model's top-1 error under a
corruption by a baseline's, so that corruptions of different difficulty weigh alike::

    CE_c = Σ_s E_{s,c}(model) / Σ_s E_{s,c}(baseline),        mCE = mean_c CE_c

and the *relative* CE measures only the degradation from the clean error::

    relative CE_c = Σ_s (E_{s,c} − E_clean)(model) / Σ_s (E_{s,c} − E_clean)(baseline)

:func:`corruption_error` computes both on the SynthWBC corruption splits (``synth:c-<name>-<sev>``),
the clean error being the in-distribution test split's. ImageNet-C's baseline is AlexNet, a plain
classifier; here each model's default baseline is the plain classifier (family ``classifier``,
recipe ``full``) on the model's own encoder, so that a CE below 100 % says a model (a multitask one,
say) is more robust to the corruption than the classifier-only model with the same backbone, and the
baseline's own mCE is 100 %. One baseline for all models (``baseline=``, ``--mce-baseline``) makes mCE
comparable across encoders, as ImageNet-C's is; per encoder, it answers the mission's question (does
a segmentation head help *this* backbone?). With near-perfect baselines (an error of a few images) a
CE is a ratio of small counts and swings widely: read it with the errors beside it.
"""

from __future__ import annotations

import logging
from statistics import NormalDist

import numpy as np
import pandas as pd

from robustbench_wbc.bench.cells import CLEAN
from robustbench_wbc.data.splits import SPLITS
from robustbench_wbc.models.zoo import adversarially_trained
from robustbench_wbc.report.rows import SEED_KEYS, current_rows, split_role

logger = logging.getLogger(__name__)

CLIP = 1e-9  # a numerical guard for plots only: effective_robustness smooths proportions instead
TRANSFORMS = ("logit", "probit", "linear")
MIN_BASELINES = 4  # standard-trained models the line needs before a residual is read off it
R2_MIN = 0.5  # a line that explains less of the baselines' OOD spread than this carries no residual
SATURATION_NOISE = 2.0  # the baselines' ID spread must exceed this many times its sampling noise
SMOOTHING = "(k + ½)/(n + 1)"
_NORMAL = NormalDist()


def to_axis(values: np.ndarray | pd.Series | float, kind: str = "logit", guard: bool = True) -> np.ndarray:
    """Maps values in [0, 1] onto the fit's axis: ``logit``, ``probit`` or ``linear``. With ``guard``, 0 and 1
    are kept finite by a clip at :data:`CLIP` (for plotting); :func:`effective_robustness` smooths its inputs
    away from both instead and transforms them unclipped."""
    x = np.asarray(values, dtype=float)
    if kind == "linear":
        return x
    p = np.clip(x, CLIP, 1 - CLIP) if guard else x
    if kind == "logit":
        return np.log(p / (1 - p))
    if kind == "probit":
        return np.vectorize(_NORMAL.inv_cdf, otypes=[float])(p)
    raise ValueError(f"unknown transform {kind!r}: use one of {', '.join(TRANSFORMS)}")


def from_axis(values: np.ndarray | pd.Series | float, kind: str = "logit") -> np.ndarray:
    """The inverse of :func:`to_axis` (up to its guard)."""
    y = np.asarray(values, dtype=float)
    if kind == "linear":
        return y
    if kind == "logit":
        return 1 / (1 + np.exp(-y))
    if kind == "probit":
        return np.vectorize(_NORMAL.cdf, otypes=[float])(y)
    raise ValueError(f"unknown transform {kind!r}: use one of {', '.join(TRANSFORMS)}")


def _clean_cells(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The current, ``ok``, clean rows of ``metric`` with a value, each with its split's role."""
    if table.empty:
        return table.assign(role=pd.Series(dtype=str))
    t = current_rows(table)
    t = t[(t["status"] == "ok") & (t["attack"] == CLEAN) & (t["metric"] == metric) & t["value"].notna()].copy()
    t["role"] = t["split"].map(split_role)
    return t


def _model_info(table: pd.DataFrame, models) -> pd.DataFrame:
    cols = [c for c in ("family", "encoder", "recipe") if c in table.columns]
    return table.drop_duplicates("model").set_index("model")[cols].reindex(list(models))


EFFECTIVE_COLUMNS = ["model", "family", "recipe", "baseline", "seeds", "ood_splits", "id", "ood", "predicted_ood",
                     "residual", "residual_transformed"]


def smoothed(k: float | np.ndarray, n: float | np.ndarray) -> np.ndarray:
    """The smoothed proportion ``(k + ½)/(n + 1)`` of ``k`` successes in ``n`` (never 0 or 1).

    >>> float(smoothed(256, 256)), float(smoothed(0, 256))
    (0.9980544747081712, 0.0019455252918287938)
    """
    return (np.asarray(k, dtype=float) + 0.5) / (np.asarray(n, dtype=float) + 1.0)


def _axis_se(p: np.ndarray, n: np.ndarray, kind: str) -> np.ndarray:
    """The delta-method standard error of ``T(p̂)`` for a proportion estimated on ``n`` images."""
    p, n = np.asarray(p, dtype=float), np.asarray(n, dtype=float)
    sd = np.sqrt(p * (1 - p) / n)
    if kind == "linear":
        return sd
    if kind == "logit":
        return sd / (p * (1 - p))
    density = np.exp(-0.5 * to_axis(p, "probit", guard=False) ** 2) / np.sqrt(2 * np.pi)
    return sd / density


def effective_robustness(table: pd.DataFrame, metric: str = "accuracy", transform: str = "logit",
                         ood_role: str = "ood", id_role: str = "test") -> tuple[dict, pd.DataFrame]:
    """Fits the ID → OOD line on the standard-trained models and gives each model's effective robustness.

    Per (model, training seed), ``id`` is the clean ``metric`` on the splits of role ``id_role``
    (``test``: the in-distribution test split) and ``ood`` the mean over the splits of role
    ``ood_role`` (``ood``: SynthWBC's other labs; ``real`` or ``corruption`` work too); a seed
    needs both. Each is also smoothed, ``(k + ½)/(n + 1)`` over the role's images (:func:`smoothed`);
    a model's values are the means over its seeds (``seeds`` of them).

    The line ``T(ood) = slope · T(id) + intercept`` is fitted by least squares on the *baselines*:
    the models whose recipe trains without adversarial examples (``baseline`` true;
    :func:`robustbench_wbc.models.zoo.adversarially_trained`), ``T`` being the transform (``logit`` by
    default, ``probit`` or ``linear``; see the module's notes), on the smoothed values.
    ``predicted_ood = T⁻¹(slope · T(id) + intercept)``; ``residual = ood − predicted_ood`` (smoothed
    values, in the metric's own units: the effective robustness, positive above the line) and
    ``residual_transformed`` the same on the fitted axis. Every model with both numbers gets them,
    baselines and adversarially trained ones alike, where the fit is ``determined``; where it is not,
    all three are NaN (the fit's line is still reported, with the reason).

    Gives ``(fit, per_model)``: ``fit`` a dict with ``slope``, ``intercept``, ``r2`` (on the
    baselines, on the transformed axis; NaN when they all have the same OOD value), ``n_models``
    (baselines fitted), ``baselines`` (their names), ``transform``, ``metric``, ``ood_role``,
    ``smoothing``, and ``determined`` with its ``reason`` (see the module's notes; a residual is
    only to be read where ``determined`` is true); ``per_model`` one row per model, best residual
    first (residuals NaN where no line could be fitted at all). Raises :class:`ValueError` when no
    model has both numbers.
    """
    kind = transform
    if kind not in TRANSFORMS:
        raise ValueError(f"unknown transform {kind!r}: use one of {', '.join(TRANSFORMS)}")
    cells = _clean_cells(table, metric)
    if not cells.empty:
        cells = cells.assign(_k=cells["value"] * cells["n"])
    def role_sums(role: str) -> pd.DataFrame:
        sel = cells[cells["role"] == role]
        return sel.groupby(SEED_KEYS).agg(value=("value", "mean"), k=("_k", "sum"), n=("n", "sum"),
                                          splits=("split", "nunique"))
    if cells.empty:
        both = pd.DataFrame()
    else:
        ids, oods = role_sums(id_role), role_sums(ood_role)
        both = ids.add_suffix("_id").join(oods.add_suffix("_ood"), how="inner")
    lacking = sorted(set(cells["model"]) - set(both.index.get_level_values("model"))) if not cells.empty else []
    if lacking:
        logger.info("effective robustness leaves out %s: no seed with both %s (role %s) and %s (role %s)",
                    lacking, metric, id_role, metric, ood_role)
    if both.empty:
        raise ValueError(f"effective robustness needs models with clean {metric} on both the {id_role!r} and the "
                         f"{ood_role!r} splits (status ok); the table has none")
    both = both.assign(id_s=smoothed(both["k_id"], both["n_id"]), ood_s=smoothed(both["k_ood"], both["n_ood"]))
    g = both.groupby(level="model")
    per_model = pd.DataFrame({"id": g["value_id"].mean(), "ood": g["value_ood"].mean(), "id_s": g["id_s"].mean(),
                              "ood_s": g["ood_s"].mean(), "n_id": g["n_id"].mean(), "seeds": g.size(),
                              "ood_splits": g["splits_ood"].max()})
    info = _model_info(table, per_model.index)
    per_model["family"] = info.get("family")
    per_model["recipe"] = info.get("recipe")
    trained_adv = per_model["recipe"].map(lambda r: adversarially_trained(r) if isinstance(r, str) else None)
    unknown = sorted(per_model.index[trained_adv.isna()])
    if unknown:
        logger.info("effective robustness: %s left out of the fit (recipes this version does not know)", unknown)
    per_model["baseline"] = trained_adv.eq(False)
    base = per_model[per_model["baseline"]]
    x, y = to_axis(base["id_s"], kind, guard=False), to_axis(base["ood_s"], kind, guard=False)
    fit = {"slope": float("nan"), "intercept": float("nan"), "r2": float("nan"), "n_models": int(len(base)),
           "baselines": sorted(base.index), "transform": kind, "metric": metric, "ood_role": ood_role,
           "smoothing": SMOOTHING, "determined": False, "reason": ""}
    if len(base) >= 2 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        fitted = slope * x + intercept
        ss_res, ss_tot = float(np.sum((y - fitted) ** 2)), float(np.sum((y - y.mean()) ** 2))
        fit.update(slope=float(slope), intercept=float(intercept), r2=1 - ss_res / ss_tot if ss_tot > 0 else float("nan"))
        line = slope * to_axis(per_model["id_s"], kind, guard=False) + intercept
        per_model["predicted_ood"] = from_axis(line, kind)
        per_model["residual"] = per_model["ood_s"] - per_model["predicted_ood"]
        per_model["residual_transformed"] = to_axis(per_model["ood_s"], kind, guard=False) - line
    else:
        per_model["predicted_ood"] = per_model["residual"] = per_model["residual_transformed"] = np.nan
    fit["reason"] = _undetermined(fit, base, x, kind, id_role)
    fit["determined"] = not fit["reason"]
    if not fit["determined"]:  # a line that cannot carry a residual gives none, in any format
        per_model["predicted_ood"] = per_model["residual"] = per_model["residual_transformed"] = np.nan
    per_model = per_model.rename_axis("model").reset_index()
    per_model["seeds"] = per_model["seeds"].astype(int)
    per_model["ood_splits"] = per_model["ood_splits"].astype(int)
    per_model = per_model.sort_values(["residual", "model"], ascending=[False, True], na_position="last")
    return fit, per_model.reset_index(drop=True)[EFFECTIVE_COLUMNS]


def _undetermined(fit: dict, base: pd.DataFrame, x: np.ndarray, kind: str, id_role: str) -> str:
    """Why the fit cannot carry a residual (``""`` when it can): see the module's notes."""
    if len(base) < MIN_BASELINES:
        return (f"fitted on {len(base)} standard-trained model{'s' * (len(base) != 1)}, fewer than the "
                f"{MIN_BASELINES} a line needs")
    if np.ptp(x) == 0:
        return f"every standard-trained model has the same {id_role} {fit['metric']}: no line through them"
    noise = float(np.sqrt(np.mean(_axis_se(base["id_s"], base["n_id"], kind) ** 2)))
    spread = float(np.std(x, ddof=1))
    if spread < SATURATION_NOISE * noise:
        return (f"in-distribution {fit['metric']} is saturated (or too alike): the standard-trained models' ID values "
                f"spread by {spread:.2f} on the {kind} axis (sd), less than {SATURATION_NOISE:g}× their sampling noise "
                f"({noise:.2f}), so a few images would set the slope")
    if not fit["r2"] >= R2_MIN:
        r2 = "undefined" if np.isnan(fit["r2"]) else f"{fit['r2']:.2f}"
        return f"the line explains little of the baselines' OOD spread (R² {r2}, below {R2_MIN:g})"
    return ""


def fit_text(fit: dict) -> str:
    """One sentence on the ID → OOD fit: what it was fitted on, its line and R², and whether it carries a residual."""
    kind = fit["transform"]
    axis = "{}" if kind == "linear" else f"{kind}({{}})"
    what = (f"{fit['metric']} out of distribution ({fit['ood_role']}) above the line fitted on {fit['n_models']} "
            f"standard-trained model{'s' * (fit['n_models'] != 1)} ({kind} axes, proportions smoothed as "
            f"{fit['smoothing']})")
    if np.isnan(fit["slope"]):
        line = "no line could be fitted"
    else:
        sign = "+" if fit["intercept"] >= 0 else "-"
        r2 = "–" if np.isnan(fit["r2"]) else f"{fit['r2']:.2f}"
        line = (f"{axis.format('OOD')} = {fit['slope']:.2f} · {axis.format('ID')} {sign} {abs(fit['intercept']):.2f}, "
                f"R² {r2}")
    verdict = "" if fit["determined"] else f"; undetermined, so shown as –: {fit['reason']}"
    return f"{what}: {line}{verdict}."


def _corruption_coords(cells: pd.DataFrame) -> pd.DataFrame:
    """Gives each corruption row its ``corruption`` and ``severity``, from the columns or else from the split."""
    cells = cells.copy()

    def spec(split: str):
        return SPLITS.get(split).synth if split in SPLITS else None

    if "corruption" not in cells.columns:
        cells["corruption"] = "none"
    if "severity" not in cells.columns:
        cells["severity"] = 0
    missing = cells["corruption"].isna() | (cells["corruption"] == "none")
    for i in cells.index[missing]:
        s = spec(cells.at[i, "split"])
        if s is not None and s.corruption:
            cells.at[i, "corruption"], cells.at[i, "severity"] = s.corruption, s.severity
    cells["severity"] = cells["severity"].astype(int)
    return cells


def baseline_family(metric: str) -> str:
    """The single-task family a metric's corruption error is normalised by: the U-Net for a mask
    metric (Dice, IoU), the classifier-only model for a class metric (accuracy, recall…)."""
    return "unet" if ("dice" in metric or "iou" in metric) else "classifier"


def default_baseline(table: pd.DataFrame, metric: str = "accuracy", encoder: str | None = None) -> str | None:
    """The model the corruption error is normalised by when none is named: the first, by name, of the
    single-task models of :func:`baseline_family` (classifiers with recipe ``full``; U-Nets) with clean
    ``metric`` on corruption splits — of ``encoder`` when given; ``None`` if there is none."""
    cells = _clean_cells(table, metric)
    if cells.empty:
        return None
    family = baseline_family(metric)
    sel = cells[(cells["role"] == "corruption") & (cells["family"] == family)]
    if family == "classifier":
        sel = sel[sel["recipe"] == "full"]
    if encoder is not None and "encoder" in sel.columns:
        sel = sel[sel["encoder"] == encoder]
    return sorted(sel["model"].unique())[0] if not sel.empty else None


def default_baselines(table: pd.DataFrame, models, metric: str = "accuracy") -> dict[str, str]:
    """Each model's default baseline: the single-task model of the metric's family
    (:func:`baseline_family`: the classifier-only model, recipe ``full``, for a class metric; the
    U-Net for a mask metric) on the same encoder, so that a multitask model is compared with the
    single-task model on its own backbone. A model whose encoder has no such model (or whose
    encoder is unknown) gets none: it is left out of the default corruption error, never compared
    with another encoder's baseline behind the reader's back (name one with ``baseline=``)."""
    info = _model_info(table, models)
    out = {}
    for m in models:
        enc = info.at[m, "encoder"] if "encoder" in info.columns else None
        found = default_baseline(table, metric, encoder=enc) if isinstance(enc, str) and enc else None
        if found is not None:
            out[m] = found
    return out


CE_COLUMNS = ["model", "family", "recipe", "corruption", "severities", "error", "baseline_error", "ce",
              "relative_ce", "baseline"]
MCE_COLUMNS = ["model", "family", "recipe", "mce", "relative_mce", "corruptions", "clean_error", "corruption_error",
               "baseline"]


def corruption_error(table: pd.DataFrame, baseline: str | None = None,
                     metric: str = "accuracy") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The corruption error of each model and corruption, normalised by a baseline, and its mean (mCE).

    From the clean cells on the corruption splits (role ``corruption``), ``E_{s,c} = 1 − metric``
    per (model, corruption ``c``, severity ``s``), the mean over the model's training seeds
    (``metric`` may be any score in [0, 1] where higher is better: ``accuracy`` for top-1 error as
    in ImageNet-C, or ``nucleus_dice`` for 1 − Dice). Then, as in ImageNet-C,
    ``ce = Σ_s E_{s,c}(model) / Σ_s E_{s,c}(baseline)``, the sums over the severities the baseline
    has for ``c``; and ``relative_ce`` the same over ``E_{s,c} − E_clean`` (the clean error on
    the in-distribution test split; NaN where a model or the baseline has none, or the baseline
    does not degrade).

    A corruption is left out for a model that lacks any of the baseline's severities of it (and for
    every model if the baseline lacks it, or its errors sum to 0), so the two sums always cover
    the same severities. ``baseline`` names one baseline model for every model: CE and mCE are then
    relative to that one model, as ImageNet-C's are to AlexNet, and compare across all models. By
    default (``None``) each model's baseline is :func:`default_baselines`' — the classifier-only
    model (recipe ``full``) of its encoder, or its U-Net for a mask metric such as ``nucleus_dice``
    — and the ``baseline`` column says which; a baseline's own CE is 1 (100 %) on every corruption.
    A model whose encoder has no baseline has no CE then: ``mce.attrs["no_baseline"]`` lists such
    models with their encoders.

    Gives ``(ce, mce)``: ``ce`` one row per (model, corruption) used, with ``error`` and
    ``baseline_error`` the mean error over the severities; ``mce`` one row per model, ``mce`` the
    mean CE over its ``corruptions`` (the number used), ``relative_mce`` the mean relative CE,
    ``clean_error`` and ``corruption_error`` (the mean error over the corruptions used and their
    severities), lowest mCE first. Raises :class:`ValueError` when the table has no clean
    corruption cells of ``metric`` (status ok), or the baseline has none (or is not found).
    """
    cells = _clean_cells(table, metric)
    corr = cells[cells["role"] == "corruption"] if not cells.empty else cells
    if corr.empty:
        raise ValueError(f"corruption error: the table has no clean {metric} on corruption splits "
                         "(synth:c-<name>-<severity>, status ok); run them first")
    corr = _corruption_coords(corr)
    models = sorted(corr["model"].unique())
    no_baseline: dict[str, str] = {}
    if baseline is None:
        baselines = default_baselines(table, models, metric)
        info = _model_info(table, models)
        no_baseline = {m: str(info.at[m, "encoder"]) if "encoder" in info.columns else "unknown"
                       for m in models if m not in baselines}
        if no_baseline:
            logger.info("corruption error: no baseline of their own encoder for %s; name one with baseline=", no_baseline)
        if not baselines:
            who = ("no classifier-only model (family 'classifier', recipe 'full')" if baseline_family(metric) == "classifier"
                   else "no U-Net (family 'unet')")
            raise ValueError(f"corruption error: {who} has clean {metric} on corruption splits to serve as the "
                             f"baseline; name one with baseline= "
                             f"(models with corruption cells: {', '.join(models)})")
    elif baseline not in set(corr["model"]):
        raise ValueError(f"corruption error: the baseline {baseline!r} has no clean {metric} on corruption splits "
                         f"(models with some: {', '.join(models)})")
    else:
        baselines = dict.fromkeys(models, baseline)

    # error per (model, corruption, severity): per seed, then the mean over seeds
    err = (1 - corr.groupby([*SEED_KEYS, "corruption", "severity"])["value"].mean()) \
        .groupby(["model", "corruption", "severity"]).mean()
    id_cells = cells[cells["role"] == "test"]
    clean_err = (1 - id_cells.groupby(SEED_KEYS)["value"].mean()).groupby("model").mean() if not id_cells.empty \
        else pd.Series(dtype=float)
    rows = []
    for model in models:
        if model not in baselines:
            continue
        bname = baselines[model]
        base, base_clean = err.loc[bname], clean_err.get(bname, np.nan)
        mine = err.loc[model]
        c_clean = clean_err.get(model, np.nan)
        for c in sorted(base.index.get_level_values("corruption").unique()):
            b = base.loc[c]
            if c not in mine.index.get_level_values("corruption"):
                continue
            m = mine.loc[c].reindex(b.index)
            if m.isna().any():
                logger.info("corruption error: %s leaves out %s (severities %s missing; the baseline %s has %s)",
                            model, c, sorted(b.index[m.isna()]), bname, sorted(b.index))
                continue
            if b.sum() <= 0:
                logger.info("corruption error: %s is left out for %s: the baseline %s makes no error on it",
                            c, model, bname)
                continue
            b_deg = float((b - base_clean).sum())
            rel = float((m - c_clean).sum()) / b_deg if b_deg > 0 else np.nan
            rows.append({"model": model, "corruption": c, "severities": len(b), "error": float(m.mean()),
                         "baseline_error": float(b.mean()), "ce": float(m.sum() / b.sum()), "relative_ce": rel,
                         "baseline": bname})
    ce = pd.DataFrame(rows, columns=[c for c in CE_COLUMNS if c not in ("family", "recipe")])
    info = _model_info(table, ce["model"].unique()) if not ce.empty else pd.DataFrame()
    ce.insert(1, "family", ce["model"].map(info["family"]) if "family" in info else None)
    ce.insert(2, "recipe", ce["model"].map(info["recipe"]) if "recipe" in info else None)
    g = ce.groupby("model")
    mce = pd.DataFrame({"mce": g["ce"].mean(), "relative_mce": g["relative_ce"].mean(),
                        "corruptions": g["corruption"].nunique(), "corruption_error": g["error"].mean()})
    mce["clean_error"] = clean_err.reindex(mce.index)
    mce["baseline"] = [baselines[m] for m in mce.index]
    mce = mce.rename_axis("model").reset_index()
    mce["family"] = mce["model"].map(info["family"]) if "family" in info else None
    mce["recipe"] = mce["model"].map(info["recipe"]) if "recipe" in info else None
    mce["corruptions"] = mce["corruptions"].astype(int)
    mce = mce.sort_values(["mce", "model"]).reset_index(drop=True)[MCE_COLUMNS]
    mce.attrs["no_baseline"] = no_baseline
    return ce[CE_COLUMNS], mce


def _pct(v: object, digits: int = 1, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    return f"{100 * float(v):{'+' if signed else ''}.{digits}f}"


def _cell(v: object) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)


def effective_robustness_markdown(fit: dict, per_model: pd.DataFrame) -> str:
    """Renders :func:`effective_robustness`'s result: the fit (:func:`fit_text`), then a row per model.

    ID, OOD and predicted OOD in % (observed ID and OOD; the prediction from the smoothed ID), the
    effective robustness (``residual``) in percentage points with its sign, and the residual on the
    fitted axis to three decimals; ``baseline`` says which models set the line. Where the fit is
    undetermined the residual columns read ``–``.
    """
    kind = fit["transform"]
    lines = [f"Effective robustness: {fit_text(fit)}", ""]
    head = ["model", "family", "recipe", "baseline", "seeds", "ID %", "OOD %", "predicted OOD %",
            "effective robustness (pp)", f"residual ({kind})"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for _, r in per_model.iterrows():
        shown = fit["determined"]
        vals = [r["model"], _cell(r["family"]), _cell(r["recipe"]), "yes" if r["baseline"] else "no",
                str(int(r["seeds"])), _pct(r["id"]), _pct(r["ood"]), _pct(r["predicted_ood"]),
                _pct(r["residual"], signed=True) if shown else "–",
                f"{r['residual_transformed']:+.3f}" if shown and not np.isnan(r["residual_transformed"]) else "–"]
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def corruption_error_markdown(mce: pd.DataFrame, ce: pd.DataFrame | None = None) -> str:
    """Renders :func:`corruption_error`'s result: a row per model, mCE and relative mCE in % of its
    baseline's (ImageNet-C's convention: a baseline reads 100.0), the baseline (a column when the
    models have more than one), the corruptions used (``k of n``, ``n`` the baseline's: an mCE over
    fewer is a mean over other corruptions), the clean and mean corruption error in %, and (given
    ``ce``) one CE % column per corruption."""
    missing = mce.attrs.get("no_baseline", {})
    left_out = ("\nNo corruption error for " + ", ".join(f"{m} (encoder {e})" for m, e in sorted(missing.items()))
                + ": their encoder has no single-task baseline; name one with `--mce-baseline` to compare across "
                  "encoders.\n") if missing else ""
    if mce.empty:
        return "_No corruption error: no model shares the baseline's corruptions._\n" + left_out
    bases = sorted(mce["baseline"].unique())
    # an mCE over fewer corruptions than its baseline's is not quite comparable: say so in the cell
    used = mce.set_index("model")["corruptions"]
    total = {b: int(used[b]) if b in used.index else int(mce.loc[mce["baseline"] == b, "corruptions"].max()) for b in bases}
    corrs = sorted(ce["corruption"].unique()) if ce is not None and not ce.empty else []
    wide = ce.pivot(index="model", columns="corruption", values="ce") if corrs else None
    per_base = len(bases) > 1
    head = ["model", "family", "recipe", *(["baseline"] if per_base else []), "mCE %", "relative mCE %", "corruptions",
            "clean error %", "corruption error %", *[f"{c} CE %" for c in corrs]]
    title = (f"Corruption error normalised by {bases[0]} (100 % = the baseline's error)." if not per_base else
             "Corruption error of each model normalised by its baseline, the single-task model of its encoder "
             "(the classifier for a class metric, the U-Net for a mask one; 100 % = the baseline's error; compare "
             "within a baseline, not across).")
    lines = [title, "", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for _, r in mce.iterrows():
        vals = [r["model"], _cell(r["family"]), _cell(r["recipe"]), *([r["baseline"]] if per_base else []),
                _pct(r["mce"]), _pct(r["relative_mce"]), f"{int(r['corruptions'])} of {total[r['baseline']]}",
                _pct(r["clean_error"]), _pct(r["corruption_error"])]
        vals += [_pct(wide.at[r["model"], c]) if r["model"] in wide.index else "–" for c in corrs]
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n" + left_out


def shift_report(table: pd.DataFrame, markdown: bool = True, mce_baseline: str | None = None,
                 metric: str = "accuracy") -> str:
    """Gives the effective-robustness fit and the corruption error of ``metric``, each where the results
    allow it (the corruption error against ``mce_baseline`` for every model, else each model's
    encoder's single-task model), as markdown or (``markdown=False``) CSV."""
    parts = []
    for title, compute, render in (
            (f"Effective robustness (ID → OOD {metric}, the line of the standard-trained models)",
             lambda t: effective_robustness(t, metric),
             lambda r: effective_robustness_markdown(*r) if markdown else r[1].to_csv(index=False)),
            (f"Corruption error of {metric} (mCE, % of the single-task baseline)",
             lambda t: corruption_error(t, baseline=mce_baseline, metric=metric),
             lambda r: corruption_error_markdown(r[1], r[0]) if markdown else r[1].to_csv(index=False))):
        try:
            body = render(compute(table))
        except ValueError as exc:
            body = f"_{exc}_\n" if markdown else ""
        parts.append(f"**{title}**\n\n{body}" if markdown else body)
    return "\n".join(parts)
