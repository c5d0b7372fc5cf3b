"""Effective robustness (the ID → OOD line) and the corruption error (mCE), on hand-built tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from robustbench_wbc.bench.runner import COLUMNS
from robustbench_wbc.report.shift import (
    corruption_error,
    corruption_error_markdown,
    default_baseline,
    effective_robustness,
    effective_robustness_markdown,
    from_axis,
    to_axis,
)

FAMILY = {"cls": ("classifier", "full"), "cls_b": ("classifier", "full"), "mt": ("multitask", "full"),
          "mt2": ("multitask", "full"), "unet": ("unet", "full"), "cls_lin": ("classifier", "linear"),
          "at": ("classifier", "full-at"), "mt_at": ("multitask", "masked-small-at")}
T0 = pd.Timestamp("2024-01-01", tz="UTC")


def row(model: str, split: str, value: float, metric: str = "accuracy", seed: int = 0, status: str = "ok",
        attack: str = "none", eps: float = 0.0, sha: str | None = None, minutes: int = 0, n: int = 500) -> dict:
    family, recipe = FAMILY.get(model, ("classifier", "full"))
    corruption, severity = "none", 0
    if split.startswith("synth:c-"):
        name, sev = split.removeprefix("synth:c-").rsplit("-", 1)
        corruption, severity = name, int(sev)
    r = dict.fromkeys(COLUMNS, "")
    r.update(run_id="r", cell_id=f"{model}|{seed}|{split}|{attack}|{eps}", model=model, family=family, encoder="resnet18",
             recipe=recipe, model_seed=seed, split=split, domain="", corruption=corruption, severity=severity,
             attack=attack, backend="", target="cls" if attack != "none" else "none", norm="linf", eps=eps, seed=0,
             metric=metric, value=value, n=n, ci_low=math.nan, ci_high=math.nan, status=status, time_s=0.0,
             forward_passes=0, backward_passes=0, finished_at=T0 + pd.Timedelta(minutes=minutes),
             labelled_images=1450, masked_images=100, params="", model_sha256=sha or f"sha-{model}-{seed}")
    return r


def table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


def logit(p):
    return math.log(p / (1 - p))


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


SLOPE, INTERCEPT = 0.8, -0.5
ON_LINE = {"cls": 0.80, "cls_b": 0.85, "mt": 0.90, "mt2": 0.95}  # four baselines: the fewest a residual needs


def raw(p, n=500):
    """The observed proportion whose smoothed value (k + ½)/(n + 1) is ``p``: rows built from it lie on a line
    exactly where the fit reads them."""
    return (p * (n + 1) - 0.5) / n


def line_rows(values=ON_LINE, kind="logit", ood_split="synth:ood-lab-b", n=500):
    rows = []
    for m, acc in values.items():
        if kind == "logit":
            ood = sigmoid(SLOPE * logit(acc) + INTERCEPT)
        else:
            ood = SLOPE * acc + INTERCEPT + 0.3
        rows += [row(m, "synth:test", raw(acc, n), n=n), row(m, ood_split, raw(ood, n), n=n)]
    return rows


# ---------------------------------------------------------------- effective robustness


def test_axis_round_trip():
    p = np.array([0.1, 0.5, 0.9, 0.999])
    for kind in ("logit", "probit", "linear"):
        assert from_axis(to_axis(p, kind), kind) == pytest.approx(p)
    assert np.isfinite(to_axis(np.array([0.0, 1.0]), "logit")).all()  # a numerical guard; the fit smooths first
    with pytest.raises(ValueError, match="unknown transform"):
        to_axis(0.5, "log")


def test_models_on_the_line_have_zero_residual():
    fit, per = effective_robustness(table(line_rows()))
    assert fit["slope"] == pytest.approx(SLOPE) and fit["intercept"] == pytest.approx(INTERCEPT)
    assert fit["r2"] == pytest.approx(1.0)
    assert fit["n_models"] == 4 and fit["transform"] == "logit" and fit["metric"] == "accuracy"
    assert fit["determined"], fit["reason"]
    assert per["residual"].abs().max() < 1e-9 and per["residual_transformed"].abs().max() < 1e-9
    assert set(per["model"]) == set(ON_LINE) and per["baseline"].all()
    p = per.set_index("model")
    assert p.loc["mt", "id"] == pytest.approx(raw(0.9))  # the observed accuracy; the fit reads the smoothed one
    assert p.loc["mt", "predicted_ood"] == pytest.approx(sigmoid(SLOPE * logit(0.9) + INTERCEPT))
    assert p.loc["mt", "family"] == "multitask" and p.loc["cls", "recipe"] == "full"
    assert (p["seeds"] == 1).all() and (p["ood_splits"] == 1).all()


def test_model_above_the_line_has_the_constructed_residual():
    rows = line_rows({"cls": 0.70, "cls_b": 0.80, "mt": 0.90, "mt2": 0.95})
    offset = 0.4  # the multitask model sits 0.4 logit above the line through the others
    for r in rows:
        if r["model"] == "mt" and r["split"] == "synth:ood-lab-b":
            r["value"] = raw(sigmoid(SLOPE * logit(0.9) + INTERCEPT + offset))
    # least squares spreads the offset over the fit: the others stay on one line, below the fitted one
    _, per = effective_robustness(table(rows))
    p = per.set_index("model")
    assert per["model"].iloc[0] == "mt"  # best residual first
    assert p.loc["mt", "residual"] > 0 and (p.drop("mt")["residual_transformed"] < 1e-12).all()
    # the residual of a model left out of the fit, measured against the exact line, is the offset
    x = np.array([logit(a) for a in (0.70, 0.80, 0.90, 0.95)])
    y = SLOPE * x + INTERCEPT
    y[2] += offset
    slope, icpt = np.polyfit(x, y, 1)
    assert p.loc["mt", "residual_transformed"] == pytest.approx(y[2] - (slope * x[2] + icpt))
    assert p.loc["mt", "residual"] == pytest.approx(sigmoid(y[2]) - sigmoid(slope * x[2] + icpt))


def test_offset_exact_with_a_large_zoo():
    # many models on the line and one above: the fit barely moves, residual → the offset
    accs = {f"m{i}": a for i, a in enumerate(np.linspace(0.6, 0.97, 40))}
    rows = line_rows(accs)
    rows += [row("star", "synth:test", raw(0.85)),
             row("star", "synth:ood-lab-b", raw(sigmoid(SLOPE * logit(0.85) + INTERCEPT + 0.3)))]
    fit, per = effective_robustness(table(rows))
    star = per.set_index("model").loc["star"]
    assert star["residual_transformed"] == pytest.approx(0.3, abs=0.01)
    expected = sigmoid(SLOPE * logit(0.85) + INTERCEPT + 0.3) - sigmoid(SLOPE * logit(0.85) + INTERCEPT)
    assert star["residual"] == pytest.approx(expected, abs=0.002)
    assert 0.95 < fit["r2"] < 1


def test_linear_transform():
    rows = line_rows(kind="linear")
    fit, per = effective_robustness(table(rows), transform="linear")
    assert fit["slope"] == pytest.approx(SLOPE) and fit["intercept"] == pytest.approx(INTERCEPT + 0.3)
    assert fit["r2"] == pytest.approx(1.0) and fit["transform"] == "linear"
    assert per["residual"].abs().max() < 1e-9
    # on a linear axis the two residuals are the same number
    rows.append(row("cls_lin", "synth:test", raw(0.87)))
    rows.append(row("cls_lin", "synth:ood-lab-b", raw(SLOPE * 0.87 + INTERCEPT + 0.3 + 0.05)))
    _, per = effective_robustness(table(rows), transform="linear")
    assert per["residual"].to_numpy() == pytest.approx(per["residual_transformed"].to_numpy())
    assert per["model"].iloc[0] == "cls_lin" and per["residual"].iloc[0] > 0


def test_probit_and_unknown_transform():
    fit, _ = effective_robustness(table(line_rows()), transform="probit")
    assert fit["transform"] == "probit" and fit["r2"] > 0.99  # logit and probit are nearly the same curve
    with pytest.raises(ValueError, match="unknown transform"):
        effective_robustness(table(line_rows()), transform="sqrt")


def test_seeds_ood_splits_failed_and_attacked_rows():
    rows = line_rows()
    # two OOD splits for cls: the mean counts; second seed of mt, whose mean is the same point
    ood_cls = sigmoid(SLOPE * logit(0.8) + INTERCEPT)
    rows = [r for r in rows if not (r["model"] == "cls" and r["split"] == "synth:ood-lab-b")]
    rows += [row("cls", "synth:ood-lab-b", ood_cls - 0.05), row("cls", "synth:ood-stain-b", ood_cls + 0.05)]
    rows = [r for r in rows if r["model"] != "mt"]
    ood_mt = sigmoid(SLOPE * logit(0.9) + INTERCEPT)
    rows += [row("mt", "synth:test", 0.88, seed=0), row("mt", "synth:ood-lab-b", ood_mt - 0.01, seed=0),
             row("mt", "synth:test", 0.92, seed=1), row("mt", "synth:ood-lab-b", ood_mt + 0.01, seed=1)]
    mt2_id = raw(0.95)
    # ignored: a failed cell, an attacked cell, another metric, a seed without OOD, a U-Net (no accuracy)
    rows += [row("mt2", "synth:ood-camera-b", 0.0, status="error"),
             row("mt2", "synth:test", 0.1, attack="pgd", eps=8 / 255),
             row("mt2", "synth:test", 0.3, metric="balanced_accuracy"),
             row("mt2", "synth:test", 0.5, seed=7),
             row("unet", "synth:test", 0.8, metric="nucleus_dice"), row("unet", "synth:ood-lab-b", 0.7, metric="nucleus_dice")]
    fit, per = effective_robustness(table(rows))
    p = per.set_index("model")
    assert set(p.index) == {"cls", "cls_b", "mt", "mt2"}
    assert p.loc["cls", "ood"] == pytest.approx(ood_cls) and p.loc["cls", "ood_splits"] == 2
    assert p.loc["mt", "id"] == pytest.approx(0.9) and p.loc["mt", "seeds"] == 2
    assert p.loc["mt2", "seeds"] == 1 and p.loc["mt2", "id"] == pytest.approx(mt2_id)
    assert fit["n_models"] == 4


def test_older_checkpoint_rows_are_ignored():
    rows = line_rows()
    rows.append(row("mt", "synth:ood-lab-b", 0.01, sha="old", minutes=-10))  # an earlier checkpoint's cell
    fit, per = effective_robustness(table(rows))
    assert fit["r2"] == pytest.approx(1.0)


def test_nucleus_dice():
    rows = [{**r, "metric": "nucleus_dice"} for r in line_rows({"unet": 0.8, "mt": 0.9, "mt2": 0.95})]
    rows += [row("cls", "synth:test", 0.7), row("cls", "synth:ood-lab-b", 0.6)]  # accuracy only: not in a Dice fit
    fit, per = effective_robustness(table(rows), metric="nucleus_dice")
    assert fit["metric"] == "nucleus_dice" and fit["r2"] == pytest.approx(1.0)
    assert set(per["model"]) == {"unet", "mt", "mt2"}


def test_other_ood_role():
    rows = line_rows(ood_split="synth:probe-grayscale")
    with pytest.raises(ValueError, match="the table has none"):
        effective_robustness(table(rows))
    fit, _ = effective_robustness(table(rows), ood_role="probe")
    assert fit["ood_role"] == "probe" and fit["r2"] == pytest.approx(1.0)


def test_effective_robustness_errors_and_undetermined_fits():
    three = [r for r in line_rows() if r["model"] != "mt2"]
    fit, per = effective_robustness(table(three))  # a line through three, but no residual to read off it
    assert fit["n_models"] == 3 and not fit["determined"] and "fitted on 3 standard-trained models" in fit["reason"]
    assert not np.isnan(fit["slope"]) and per["residual"].isna().all() and per["predicted_ood"].isna().all()
    with pytest.raises(ValueError, match="has none"):
        effective_robustness(table([]))
    same = [row(m, s, v) for m in ("cls", "mt", "mt2", "cls_b") for s, v in (("synth:test", 0.9), ("synth:ood-lab-b", 0.8))]
    fit, per = effective_robustness(table(same))
    assert np.isnan(fit["slope"]) and per["residual"].isna().all() and "same test accuracy" in fit["reason"]


FOUR = {"cls": 0.70, "cls_b": 0.80, "mt": 0.90, "mt2": 0.95}


def test_the_line_is_fitted_on_standard_trained_models_only():
    """Taori et al. fit the line on baselines: an adversarially trained model far above it must not pull it up."""
    rows = line_rows(FOUR)
    rows += [row("at", "synth:test", raw(0.75)), row("at", "synth:ood-lab-b", raw(sigmoid(SLOPE * logit(0.75) + 1.5)))]
    fit, per = effective_robustness(table(rows))
    assert fit["determined"], fit["reason"]
    assert fit["slope"] == pytest.approx(SLOPE) and fit["intercept"] == pytest.approx(INTERCEPT)
    assert fit["n_models"] == 4 and fit["baselines"] == sorted(FOUR) and fit["r2"] == pytest.approx(1.0)
    p = per.set_index("model")
    assert not p.loc["at", "baseline"] and p.loc["at", "residual_transformed"] == pytest.approx(1.5 - INTERCEPT)
    assert p.drop("at")["residual"].abs().max() < 1e-9


def test_proportions_are_smoothed_not_clipped():
    """A perfect model reads (n + ½)/(n + 1), set by the data's size: no clipping constant moves any residual."""
    import robustbench_wbc.report.shift as shift

    n = 256
    accs = {"cls": 250, "cls_b": 236, "mt": 256, "mt2": 220}  # images right of 256, one at 100 %
    oods = {"cls": 150, "cls_b": 100, "mt": 220, "mt2": 60}
    rows = [r for m in accs for r in (row(m, "synth:test", accs[m] / n, n=n), row(m, "synth:ood-lab-b", oods[m] / n, n=n))]
    fit, per = effective_robustness(table(rows))
    x = np.array([logit((accs[m] + 0.5) / (n + 1)) for m in sorted(accs)])
    y = np.array([logit((oods[m] + 0.5) / (n + 1)) for m in sorted(accs)])
    slope, icpt = np.polyfit(x, y, 1)
    assert fit["slope"] == pytest.approx(slope) and fit["intercept"] == pytest.approx(icpt)
    assert fit["smoothing"] == "(k + ½)/(n + 1)"
    for clip in (1e-2, 1e-4):  # the residuals do not depend on the numerical guard
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(shift, "CLIP", clip)
            _, again = effective_robustness(table(rows))
        assert again["residual"].to_numpy() == pytest.approx(per["residual"].to_numpy(), abs=1e-12)


def test_a_saturated_or_flat_fit_is_undetermined_and_shows_no_residual():
    from robustbench_wbc.report import leaderboard, to_markdown

    n = 256  # ID at or a few images from 100 %: the slope is set by single images
    saturated = {"cls": (256, 100), "cls_b": (255, 200), "mt": (256, 150), "mt2": (254, 60)}
    rows = [r for m, (i, o) in saturated.items()
            for r in (row(m, "synth:test", i / n, n=n), row(m, "synth:ood-lab-b", o / n, n=n))]
    fit, _ = effective_robustness(table(rows))
    assert not fit["determined"] and "saturated" in fit["reason"]
    board = leaderboard(table(rows))
    assert board["effective_robustness"].isna().all()
    md = to_markdown(board)
    assert "saturated" in md and "undetermined" in md
    assert all(line.split("|")[board.columns.get_loc("effective_robustness")] for line in md.splitlines()[2:6])
    # the ID values spread, but OOD does not follow them: R² near 0
    flat = {"cls": (0.70, 0.5), "cls_b": (0.80, 0.2), "mt": (0.90, 0.6), "mt2": (0.95, 0.25)}
    fit, _ = effective_robustness(table([r for m, (i, o) in flat.items()
                                         for r in (row(m, "synth:test", i), row(m, "synth:ood-lab-b", o))]))
    assert not fit["determined"] and "R²" in fit["reason"]


def test_effective_robustness_markdown():
    rows = line_rows(FOUR)
    rows += [row("at", "synth:test", 0.85), row("at", "synth:ood-lab-b", 0.9)]
    fit, per = effective_robustness(table(rows))
    md = effective_robustness_markdown(fit, per)
    assert "logit(OOD) = 0.80 · logit(ID) - 0.50" in md and "4 standard-trained models" in md and "R² 1.00" in md
    lines = md.strip().splitlines()
    assert lines[2].startswith("| model | family | recipe | baseline |") and len(lines) == 4 + 5
    assert lines[4].startswith("| at | classifier | full-at | no |")  # the best residual first
    assert "| 85.0 | 90.0 |" in lines[4] and "| +" in lines[4]
    undetermined = effective_robustness_markdown(*effective_robustness(table(line_rows({"cls": 0.8, "mt": 0.9, "mt2": 0.95}))))
    assert "undetermined" in undetermined and "| +" not in undetermined


# ---------------------------------------------------------------- corruption error

CORRS = ("gaussian_noise", "defocus_blur")
BASE_ERR = {("gaussian_noise", s): 0.1 * s for s in range(1, 6)} | {("defocus_blur", s): 0.05 * s for s in range(1, 6)}


def corruption_rows(model, scale, clean_err=0.05, severities=range(1, 6), corrs=CORRS, seed=0, **kw):
    rows = [row(model, "synth:test", 1 - clean_err, seed=seed, **kw)]
    for c in corrs:
        for s in severities:
            rows.append(row(model, f"synth:c-{c}-{s}", 1 - scale * BASE_ERR[c, s], seed=seed, **kw))
    return rows


def test_half_the_baseline_error_is_ce_one_half():
    t = table(corruption_rows("cls", 1.0) + corruption_rows("mt", 0.5, clean_err=0.025))
    ce, mce = corruption_error(t)
    assert default_baseline(t) == "cls"
    c = ce.set_index(["model", "corruption"])
    for corr in CORRS:
        assert c.loc[("mt", corr), "ce"] == pytest.approx(0.5)
        assert c.loc[("cls", corr), "ce"] == pytest.approx(1.0)
        assert c.loc[("mt", corr), "severities"] == 5
    m = mce.set_index("model")
    assert m.loc["mt", "mce"] == pytest.approx(0.5) and m.loc["cls", "mce"] == pytest.approx(1.0)
    assert m.loc["cls", "relative_mce"] == pytest.approx(1.0)
    assert m.loc["mt", "relative_mce"] == pytest.approx(0.5)  # clean error halved too: degradation halved
    assert m.loc["mt", "corruptions"] == 2 and m.loc["mt", "clean_error"] == pytest.approx(0.025)
    assert m.loc["cls", "corruption_error"] == pytest.approx(np.mean(list(BASE_ERR.values())))
    assert (mce["baseline"] == "cls").all() and mce["model"].tolist() == ["mt", "cls"]  # lowest mCE first
    assert m.loc["mt", "family"] == "multitask"


def test_ce_is_a_ratio_of_sums_not_a_mean_of_ratios():
    rows = corruption_rows("cls", 1.0, corrs=("gaussian_noise",))
    rows += [row("mt", "synth:test", 0.95)]
    errs = {1: 0.0, 2: 0.1, 3: 0.3, 4: 0.4, 5: 0.7}  # sums to 1.5, the baseline's to 1.5: CE 1
    rows += [row("mt", f"synth:c-gaussian_noise-{s}", 1 - e) for s, e in errs.items()]
    ce, mce = corruption_error(table(rows))
    assert ce.set_index("model").loc["mt", "ce"] == pytest.approx(1.5 / 1.5)
    # relative: Σ(E − 0.05) = 1.25 against the baseline's Σ(E − 0.05) = 1.25
    assert mce.set_index("model").loc["mt", "relative_mce"] == pytest.approx(1.0)


def test_missing_severity_or_corruption_leaves_it_out():
    rows = corruption_rows("cls", 1.0)
    rows += corruption_rows("mt", 0.5, corrs=("gaussian_noise",))  # no defocus blur at all
    rows += corruption_rows("mt", 0.5, corrs=("defocus_blur",), severities=(1, 2, 3, 4))[1:]  # severity 5 missing
    rows += corruption_rows("mt2", 2.0, corrs=("gaussian_noise", "defocus_blur"))
    rows += [row("mt2", "synth:c-pixelate-3", 0.5)]  # the baseline has no pixelate: left out
    ce, mce = corruption_error(table(rows))
    assert set(ce.loc[ce["model"] == "mt", "corruption"]) == {"gaussian_noise"}
    assert set(ce.loc[ce["model"] == "mt2", "corruption"]) == set(CORRS)
    m = mce.set_index("model")
    assert m.loc["mt", "corruptions"] == 1 and m.loc["mt", "mce"] == pytest.approx(0.5)
    assert m.loc["mt2", "corruptions"] == 2 and m.loc["mt2", "mce"] == pytest.approx(2.0)


def test_baseline_with_fewer_severities_sets_the_sums():
    rows = corruption_rows("cls", 1.0, severities=(1, 2, 3))
    rows += corruption_rows("mt", 0.5)  # has 4 and 5 too: only 1–3 are compared
    ce, _ = corruption_error(table(rows))
    r = ce.set_index("model").loc["mt"]
    assert r["ce"].tolist() == pytest.approx([0.5, 0.5]) and (r["severities"] == 3).all()


def test_failed_rows_seeds_and_attacks():
    rows = corruption_rows("cls", 1.0)
    rows += corruption_rows("mt", 0.4, seed=0) + corruption_rows("mt", 0.6, seed=1)  # mean over seeds: 0.5
    rows += [row("mt", "synth:c-gaussian_noise-3", 0.0, seed=2, status="error"),      # failed: ignored
             row("mt", "synth:c-gaussian_noise-3", 0.0, attack="pgd", eps=8 / 255)]  # attacked: ignored
    _, mce = corruption_error(table(rows))
    assert mce.set_index("model").loc["mt", "mce"] == pytest.approx(0.5)


def test_named_baseline_and_default_choice():
    rows = corruption_rows("cls_b", 1.0) + corruption_rows("cls", 2.0) + corruption_rows("mt", 0.5)
    rows += corruption_rows("cls_lin", 0.1)  # a linear-probe classifier is not the default baseline
    t = table(rows)
    _, mce = corruption_error(t)
    m = mce.set_index("model")
    assert (mce["baseline"] == "cls").all()  # the first classifier with recipe full, by name
    assert m.loc["cls", "mce"] == pytest.approx(1.0) and m.loc["cls_b", "mce"] == pytest.approx(0.5)
    _, mce = corruption_error(t, baseline="cls_b")
    m = mce.set_index("model")
    assert m.loc["cls_b", "mce"] == pytest.approx(1.0) and m.loc["mt", "mce"] == pytest.approx(0.5)
    assert m.loc["cls", "mce"] == pytest.approx(2.0) and m.loc["cls_lin", "mce"] == pytest.approx(0.1)


def test_nucleus_dice_corruption_error():
    rows = [{**r, "metric": "nucleus_dice"} for r in corruption_rows("unet", 1.0) + corruption_rows("mt", 0.5)]
    t = table(rows)
    with pytest.raises(ValueError, match="no U-Net"):  # the Dice baseline is the U-Net; the table's is a classifier
        corruption_error(t[t["model"] != "unet"], metric="nucleus_dice")
    _, mce = corruption_error(t, metric="nucleus_dice")  # by default the U-Net of the same encoder
    assert (mce["baseline"] == "unet").all() and mce.set_index("model").loc["mt", "mce"] == pytest.approx(0.5)
    _, mce = corruption_error(t, baseline="mt", metric="nucleus_dice")
    assert mce.set_index("model").loc["unet", "mce"] == pytest.approx(2.0)


def test_corruption_error_errors():
    with pytest.raises(ValueError, match="no clean accuracy on corruption splits"):
        corruption_error(table(line_rows()))
    failed = [{**r, "status": "error"} for r in corruption_rows("cls", 1.0) if r["corruption"] != "none"]
    with pytest.raises(ValueError, match="no clean accuracy on corruption splits"):
        corruption_error(table(failed))
    t = table(corruption_rows("cls", 1.0) + corruption_rows("mt", 0.5))
    with pytest.raises(ValueError, match="baseline 'alexnet' has no clean accuracy"):
        corruption_error(t, baseline="alexnet")
    with pytest.raises(ValueError, match="no classifier-only model"):
        corruption_error(table(corruption_rows("mt", 0.5)))


def test_relative_ce_without_clean_cells_is_nan():
    rows = corruption_rows("cls", 1.0)[1:] + corruption_rows("mt", 0.5)[1:]
    ce, mce = corruption_error(table(rows))
    assert ce["relative_ce"].isna().all() and mce["relative_mce"].isna().all()
    assert mce.set_index("model").loc["mt", "mce"] == pytest.approx(0.5)


def test_corruption_columns_derived_from_the_split():
    t = table(corruption_rows("cls", 1.0) + corruption_rows("mt", 0.5)).drop(columns=["corruption", "severity"])
    _, mce = corruption_error(t)
    assert mce.set_index("model").loc["mt", "mce"] == pytest.approx(0.5)


def test_corruption_error_markdown():
    ce, mce = corruption_error(table(corruption_rows("cls", 1.0) + corruption_rows("mt", 0.5, clean_err=0.025)))
    md = corruption_error_markdown(mce, ce)
    assert "normalised by cls" in md
    lines = md.strip().splitlines()
    assert "| mCE % | relative mCE % |" in lines[2] and "defocus_blur CE %" in lines[2]
    assert lines[4].startswith("| mt | multitask | full | 50.0 | 50.0 | 2 of 2 | 2.5 |")
    assert lines[5].startswith("| cls | classifier | full | 100.0 | 100.0 | 2 of 2 | 5.0 |")
    assert lines[4].endswith("| 50.0 | 50.0 |")
    assert corruption_error_markdown(mce.iloc[:0]).startswith("_No corruption error")
    assert "mCE %" in corruption_error_markdown(mce)  # without the per-corruption columns
    rows = corruption_rows("cls", 1.0) + corruption_rows("mt", 0.5, corrs=("gaussian_noise",))
    ce, mce = corruption_error(table(rows))
    md = corruption_error_markdown(mce, ce)
    assert "| mt | multitask | full | 50.0 |" in md and "| 1 of 2 |" in md and "| – | 50.0 |" in md


def test_default_baseline_is_the_classifier_of_the_same_encoder():
    # two backbones: each multitask model is compared with the plain classifier on its own encoder
    rows = corruption_rows("cls", 1.0) + corruption_rows("mt", 0.5)
    rows += [{**r, "encoder": "vit"} for r in corruption_rows("cls_b", 2.0) + corruption_rows("mt2", 1.0)]
    # no classifier of its encoder: no corruption error by default, never another encoder's baseline unannounced
    rows += [{**r, "encoder": "convnext"} for r in corruption_rows("unet", 3.0)]
    t = table(rows)
    ce, mce = corruption_error(t)
    m = mce.set_index("model")
    assert m["baseline"].to_dict() == {"cls": "cls", "mt": "cls", "cls_b": "cls_b", "mt2": "cls_b"}
    assert mce.attrs["no_baseline"] == {"unet": "convnext"}
    assert m.loc["mt2", "mce"] == pytest.approx(0.5) and m.loc["cls_b", "mce"] == pytest.approx(1.0)
    assert m.loc["mt", "mce"] == pytest.approx(0.5)
    assert (ce.set_index("model").loc["mt2", "baseline"] == "cls_b").all()
    md = corruption_error_markdown(mce, ce)
    assert "single-task model of its encoder" in md and "| baseline |" in md
    assert "| mt2 | multitask | full | cls_b | 50.0 |" in md
    assert "No corruption error for unet (encoder convnext)" in md and "--mce-baseline" in md
    # one named baseline for all: comparable across encoders
    _, mce = corruption_error(t, baseline="cls")
    m = mce.set_index("model")
    assert (m["baseline"] == "cls").all() and m.loc["mt2", "mce"] == pytest.approx(1.0)
    assert "| baseline |" not in corruption_error_markdown(mce)
