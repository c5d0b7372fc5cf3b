"""Figures: grids of cells by class, with the mask's outline over each image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

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


# --- figures of the tidy table, and the segmentation panel -----------------------------------------
# Each draws on its own matplotlib Figure (no pyplot: no global state, nothing to show or close),
# saves a PNG at ``out`` (its folder made) and gives the Figure back, for inspection.

MASK_NAMES = ("background", "cytoplasm", "nucleus")
MASK_COLORS = ("#1e1e1e", "#9fd88a", "#6a3d9a")  # background, cytoplasm, nucleus (mask values 0, 1, 2)
FAMILY_COLORS = {"classifier": "tab:blue", "unet": "tab:green", "multitask": "tab:orange"}
CLEAN_METRIC = {"robust_accuracy": "accuracy"}  # the clean cell's name of an attacked cell's metric
TARGET_ATTACKS = {"cls": ("cls", "joint"), "seg": ("seg",), "joint": ("joint",)}
TARGET_METRIC = {"cls": "robust_accuracy", "joint": "robust_accuracy", "seg": "nucleus_dice"}
MISSING_OOD = ("no OOD splits in the table: run with --splits synth:ood-lab-b (another lab) or "
               "synth:c-<corruption>-<severity> (see `splits list`)")
SEGMENTATION_CLASSES = ("eosinophil", "lymphocyte", "basophil")


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _save(fig, out: str | Path, dpi: int):
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return fig


def _model_colors(models) -> dict[str, str]:
    """One colour per model, the same in every figure of a table (models in sorted order)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(models) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(sorted(models))}


def _name(metric: str) -> str:
    return metric.replace("_", " ").replace("dice", "Dice")


def _percent(ax, axis: str = "y") -> None:
    from matplotlib.ticker import PercentFormatter

    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(PercentFormatter(1.0, decimals=0))


def scored_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows a figure reads: each model as it is now (:func:`current_rows`), status ``ok``, and
    ``role`` (:func:`split_role`) added."""
    from robustbench_wbc.report.rows import current_rows, split_role

    if table is None or table.empty:
        raise ValueError("the table is empty: no results yet (run `wbc-robust run` first)")
    missing = {"model", "model_seed", "split", "attack", "metric", "value", "status"} - set(table.columns)
    if missing:
        raise ValueError(f"not a tidy results table: columns {sorted(missing)} are missing")
    t = current_rows(table)
    t = t[t["status"] == "ok"].copy()
    if t.empty:
        raise ValueError("no cell of the table finished with status ok")
    t["role"] = t["split"].map(split_role)
    return t


def _ci_mean(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean of value and of the interval's ends per group (over model seeds and splits)."""
    cols = ["value", "ci_low", "ci_high"]
    return df.groupby(by, sort=True)[cols].mean().reset_index()


def robust_vs_eps(table: pd.DataFrame, out: str | Path, split_role: str = "test", target: str = "cls",
                  attack: str | Sequence[str] | None = None, metric: str | None = None, dpi: int = 100):
    """Draws robust accuracy against eps: one line per model, its 95 % interval shaded, one panel per norm.

    Eps 0 is the clean cell (accuracy). ``target`` is the head whose damage is drawn: ``cls``
    reads accuracy under the attacks that climb the class loss (``cls`` and, on multitask models,
    ``joint``, as the leaderboard's worst case does), ``seg`` the nucleus Dice under attacks on the
    masks, ``joint`` accuracy under joint attacks only; ``metric`` overrides what is read. By default
    (``attack=None``) each point is, per training seed, the worst attack at that eps (its own
    interval with it); ``attack`` names one attack or several to take the worst of. Points are
    averaged over model seeds and over the splits of ``split_role`` (the intervals' ends too).
    """
    from robustbench_wbc.attacks.base import eps_label
    from robustbench_wbc.bench.cells import CLEAN

    if target not in TARGET_ATTACKS:
        raise ValueError(f"unknown target {target!r}; expected one of {sorted(TARGET_ATTACKS)}")
    metric = metric or TARGET_METRIC[target]
    t = scored_rows(table)
    sel = t[t["role"] == split_role]
    if sel.empty:
        raise ValueError(f"no splits of role {split_role!r} in the table (it has {sorted(t['role'].unique())})")
    adv = sel[(sel["attack"] != CLEAN) & sel["target"].isin(TARGET_ATTACKS[target]) & (sel["metric"] == metric)
              & (sel["eps"] > 0)]
    if attack is not None:
        names = [attack] if isinstance(attack, str) else list(attack)
        ran = sorted(adv["attack"].unique())
        adv = adv[adv["attack"].isin(names)]
        if adv.empty:
            raise ValueError(f"no {metric} under attack {', '.join(names)} on the {target} head on {split_role} "
                             f"splits; the table has {ran or 'no attacks there'}")
    if adv.empty:
        raise ValueError(f"no {metric} under attacks on the {target} head on {split_role} splits: "
                         f"run with --attacks pgd (and a model with that head)")
    # per seed and split: the worst attack at each eps, with its own interval
    worst = adv.loc[adv.groupby(["model", "model_seed", "split", "norm", "eps"])["value"].idxmin()]
    points = _ci_mean(worst, ["model", "norm", "eps"])
    clean = _ci_mean(sel[(sel["attack"] == CLEAN) & (sel["metric"] == CLEAN_METRIC.get(metric, metric))], ["model"])
    clean = clean.set_index("model")
    norms = sorted(points["norm"].unique())
    colors = _model_colors(t["model"].unique())  # every model of the table: the same colours in each figure
    fig = _new_figure(4.6 * len(norms) + 1.6, 3.6)
    axes = fig.subplots(1, len(norms), squeeze=False)[0]
    for ax, norm in zip(axes, norms):
        on = points[points["norm"] == norm]
        for model, grp in on.groupby("model", sort=True):
            if model in clean.index:
                grp = pd.concat([pd.DataFrame([{"eps": 0.0, **clean.loc[model, ["value", "ci_low", "ci_high"]]}]), grp])
            grp = grp.sort_values("eps")
            ax.plot(grp["eps"], grp["value"], marker="o", ms=3.5, lw=1.4, color=colors[model], label=model)
            ax.fill_between(grp["eps"], grp["ci_low"], grp["ci_high"], color=colors[model], alpha=0.15, lw=0)
        ticks = sorted({0.0, *on["eps"].unique()})
        ax.set_xticks(ticks, [eps_label(e, norm) if e else "0" for e in ticks], fontsize=7)
        ax.set_xlabel(f"eps ({norm})")
        ax.set_ylim(-0.02, 1.02)
        _percent(ax)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(_name(metric))
    how = "worst over attacks" if attack is None else ("worst of " if len(names) > 1 else "") + ", ".join(names)
    fig.suptitle(f"{_name(metric)} on {split_role} splits, attacks on the {target} head ({how})\n"
                 f"eps 0: clean; shaded: 95 % interval over images", fontsize=9)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    return _save(fig, out, dpi)


def ood_by_shift(table: pd.DataFrame, out: str | Path, metric: str = "accuracy", dpi: int = 100):
    """Draws clean accuracy under each shift: one line per model, its 95 % interval shaded.

    A first panel has the domain shifts (the in-distribution test split, then each OOD split);
    then one panel per corruption, x = severity (0 = the in-distribution test split). Points are
    averaged over model seeds. ``metric`` draws another clean metric (``nucleus_dice`` for U-Nets).
    """
    from robustbench_wbc.bench.cells import CLEAN

    t = scored_rows(table)
    clean = t[(t["attack"] == CLEAN) & (t["metric"] == metric)]
    shifted = clean[clean["role"].isin(["ood", "corruption"])]
    if shifted.empty:
        if t["role"].isin(["ood", "corruption"]).any():
            raise ValueError(f"no OOD or corruption split with clean {metric} in the table: "
                             f"run a model that has it on synth:ood-lab-b")
        raise ValueError(MISSING_OOD)
    models = sorted(shifted["model"].unique())
    clean = clean[clean["model"].isin(models)]
    colors = _model_colors(t["model"].unique())
    test = _ci_mean(clean[clean["role"] == "test"], ["model"]).set_index("model")
    ood = _ci_mean(clean[clean["role"] == "ood"], ["model", "split", "domain"])
    corr = _ci_mean(clean[clean["role"] == "corruption"], ["model", "corruption", "severity"])
    panels = (["domain"] if not ood.empty else []) + sorted(corr["corruption"].unique())
    ncols = min(4, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = _new_figure(3.3 * ncols + 1.6, 2.9 * nrows + 0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes, panels):
        if panel == "domain":
            splits = sorted(ood["split"].unique())
            names = ["test"] + [ood.loc[ood["split"] == s, "domain"].iloc[0] for s in splits]
            for model in models:
                grp = ood[ood["model"] == model].set_index("split").reindex(splits)
                if model in test.index:
                    grp = pd.concat([test.loc[[model], ["value", "ci_low", "ci_high"]], grp[["value", "ci_low", "ci_high"]]])
                    x = np.arange(len(grp))
                else:
                    grp, x = grp[["value", "ci_low", "ci_high"]], np.arange(1, len(splits) + 1)
                ax.plot(x, grp["value"], marker="o", ms=3.5, lw=1.4, color=colors[model], label=model)
                ax.fill_between(x, grp["ci_low"], grp["ci_high"], color=colors[model], alpha=0.15, lw=0)
            ax.set_xticks(np.arange(len(names)), names, fontsize=7)
            ax.set_xlabel("domain")
            ax.set_title("domain shift", fontsize=8)
        else:
            on = corr[corr["corruption"] == panel]
            for model, grp in on.groupby("model", sort=True):
                grp = grp[["severity", "value", "ci_low", "ci_high"]]
                if model in test.index:
                    grp = pd.concat([pd.DataFrame([{"severity": 0, **test.loc[model, ["value", "ci_low", "ci_high"]]}]), grp])
                grp = grp.sort_values("severity")
                ax.plot(grp["severity"], grp["value"], marker="o", ms=3.5, lw=1.4, color=colors[model], label=model)
                ax.fill_between(grp["severity"].astype(float), grp["ci_low"], grp["ci_high"], color=colors[model],
                                alpha=0.15, lw=0)
            ax.set_xticks(range(0, int(max(5, on["severity"].max())) + 1))
            ax.set_xlabel("severity (0: test split)")
            ax.set_title(panel, fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        _percent(ax)
        ax.grid(alpha=0.3)
    for r in range(nrows):
        axes[r * ncols].set_ylabel(_name(metric))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="upper right", frameon=False)
    fig.suptitle(f"clean {_name(metric)} under distribution shift; shaded: 95 % interval", fontsize=9)
    fig.tight_layout(rect=(0, 0, (3.3 * ncols) / (3.3 * ncols + 1.6), 1))
    return _save(fig, out, dpi)


def id_ood_points(table: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Gives one row per model with its clean ``metric`` in distribution and out of it.

    Columns ``model``, ``family``, ``id`` (on the splits of role test) and ``ood`` (the mean over
    the OOD splits, role ood); each first per training seed, then the mean over seeds. Models
    lacking either are left out.
    """
    from robustbench_wbc.bench.cells import CLEAN

    t = scored_rows(table)
    clean = t[(t["attack"] == CLEAN) & (t["metric"] == metric)]
    if not (clean["role"] == "test").any():
        raise ValueError(f"no in-distribution test split (role test) with {metric} in the table: "
                         f"run with --splits synth:test")
    if not (clean["role"] == "ood").any():
        raise ValueError(MISSING_OOD if not (t["role"] == "ood").any()
                         else f"no OOD split with {metric} in the table: run a model that has it on synth:ood-lab-b")
    per_seed = clean[clean["role"].isin(["test", "ood"])].groupby(["model", "model_seed", "role"])["value"].mean()
    per_seed = per_seed.unstack("role").dropna()
    if per_seed.empty:
        raise ValueError(f"no model has {metric} both on the test split and on an OOD split")
    points = per_seed.groupby(level="model")[["test", "ood"]].mean().rename(columns={"test": "id"})
    points["family"] = t.drop_duplicates("model").set_index("model")["family"].reindex(points.index)
    return points.reset_index()[["model", "family", "id", "ood"]]


def id_vs_ood(table: pd.DataFrame, out: str | Path, metric: str = "accuracy", dpi: int = 100):
    """Draws each model's clean accuracy in distribution (x) against its mean OOD accuracy (y), and the line of
    :func:`robustbench_wbc.report.shift.effective_robustness` where its fit is determined.

    Points are coloured by family and labelled by model, the standard-trained models (the baselines
    the line is fitted on) filled, the others (adversarially trained, or of a recipe this version does
    not know) hollow; the points are the observed values, the line is fitted on smoothed ones. The
    line is the fit's, mapped back from its axes (a curve here; the Line2D with gid ``fit``); where
    the fit is undetermined no line is
    drawn and the title says why. The line y = x has gid ``identity``. A model above the line is
    more robust to the shift than its in-distribution accuracy predicts ("accuracy on the line",
    Miller et al. 2021); the distance is its effective robustness.
    """
    from robustbench_wbc.report.shift import effective_robustness, from_axis, to_axis

    points = id_ood_points(table, metric)
    fit, per_model = effective_robustness(table, metric)
    baseline = per_model.set_index("model")["baseline"].reindex(points["model"]).fillna(False).to_numpy(bool)
    fig = _new_figure(5.4, 4.8)
    ax = fig.subplots()
    lo = min(0.0, float(points[["id", "ood"]].min().min()))
    grid = np.array([lo, 1.0])
    ax.plot(grid, grid, ls="--", lw=1, color="grey", label="y = x", gid="identity")
    if fit["determined"]:
        xs = np.linspace(max(lo, 1e-3), 1 - 1e-3, 200)
        kind = fit["transform"]
        ax.plot(xs, from_axis(fit["slope"] * to_axis(xs, kind) + fit["intercept"], kind), lw=1.2, color="black",
                gid="fit", label=f"line of {fit['n_models']} standard-trained models ({kind}), R² {fit['r2']:.2f}")
    for family, grp in points.assign(_base=baseline).groupby("family", sort=True):
        color = FAMILY_COLORS.get(family, "tab:purple")
        for is_base, part in grp.groupby("_base"):
            ax.scatter(part["id"], part["ood"], s=30, zorder=3, label=family if is_base or not grp["_base"].any() else None,
                       gid=f"points-{family}", color=color if is_base else "none", edgecolors=color)
    for _, p in points.iterrows():
        ax.annotate(p["model"], (p["id"], p["ood"]), textcoords="offset points", xytext=(4, 3), fontsize=6.5)
    ax.set_xlim(lo - 0.02, 1.02)
    ax.set_ylim(lo - 0.02, 1.02)
    ax.set_aspect("equal")
    _percent(ax, "x")
    _percent(ax, "y")
    name = _name(metric)
    ax.set_xlabel(f"in-distribution clean {name} (test)")
    ax.set_ylabel(f"OOD clean {name} (mean over OOD splits)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    note = "" if fit["determined"] else "\nno line: " + fit["reason"]
    ax.set_title(f"in distribution vs OOD, {len(points)} models (hollow: not a standard-trained baseline){note}", fontsize=8,
                 wrap=True)
    fig.tight_layout()
    return _save(fig, out, dpi)


def pick_per_class(data: SplitData, classes: Sequence[str]) -> list[int]:
    """Gives the position of the first image of each of ``classes`` in ``data``; a missing one is an error."""
    picks = []
    for cls in classes:
        if cls not in data.classes:
            raise ValueError(f"unknown class {cls!r}; the split's classes are {list(data.classes)}")
        hits = np.flatnonzero(data.labels.numpy() == data.classes.index(cls))
        if not len(hits):
            raise ValueError(f"no {cls} among the {len(data)} images of {data.name}: load more images (--n-images)")
        picks.append(int(hits[0]))
    return picks


def _masks_of(name: str, model, images):
    import torch

    from robustbench_wbc.metrics import mask_pred

    model.eval()
    with torch.no_grad():
        out = model(images)
    if "mask" not in out:
        raise ValueError(f"model {name!r} has no mask head (it gives {sorted(out)}): give a U-Net or a multitask model")
    return mask_pred(out["mask"])


def segmentation_panel(models: dict, data: SplitData, out: str | Path,
                       classes: Sequence[str] = SEGMENTATION_CLASSES, attack_eps: float | None = None,
                       attack: str = "pgd", seed: int = 0, dpi: int = 100):
    """Draws the masks models predict beside the truth: rows are one image of each of ``classes``
    (the first in ``data``), columns the image, each model's mask (``models``: title → module with a
    ``mask`` head) and the ground truth, in background/cytoplasm/nucleus colours (each predicted mask
    has its nucleus Dice on that image).

    With ``attack_eps`` (> 0), a second block of rows has the same under the suite's ``attack``
    (``pgd``) on the mask head at that eps: each model attacked on its own, so its column shows
    its mask of its own adversarial image; the image column shows the one made against the first
    model (the perturbations are invisible at small eps). The attack's randomness is seeded with
    ``seed``, without touching the global generator.
    """
    import torch
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from robustbench_wbc.attacks.base import ATTACKS, build_attack, eps_label
    from robustbench_wbc.metrics import MASK_CLASSES, dice_per_image

    if not models:
        raise ValueError("no models to draw: give at least one model with a mask head")
    if data.masks is None:
        raise ValueError(f"{data.name} has no masks: the segmentation panel needs a split with masks")
    if not classes:
        raise ValueError("no classes to draw")
    idx = pick_per_class(data, classes)
    images, labels, truth = data.images[idx], data.labels[idx], data.masks[idx].long()
    blocks = [("", images, {name: _masks_of(name, m, images) for name, m in models.items()})]
    if attack_eps:
        spec = ATTACKS.get(attack).spec(attack_eps, "seg")
        adv_masks, first_adv = {}, None
        for name, model in models.items():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                adv = build_attack(spec, model)(images, labels, truth)
            first_adv = adv if first_adv is None else first_adv
            adv_masks[name] = _masks_of(name, model, adv)
        blocks.append((f"{attack} {eps_label(spec.eps, spec.norm)}", first_adv, adv_masks))

    cmap = ListedColormap(MASK_COLORS)
    nucleus = MASK_CLASSES["nucleus"]
    cols = 2 + len(models)
    rows = len(classes) * len(blocks)
    fig = _new_figure(1.55 * cols + 0.9, 1.55 * rows + 1.0)
    axes = fig.subplots(rows, cols, squeeze=False)
    first = next(iter(models))
    for b, (tag, shown, masks) in enumerate(blocks):
        heads = (["image", *models] if not tag else [f"attacked image\n(vs {first})", *(f"{m}\n({tag})" for m in models)])
        heads.append("ground truth")
        for r, cls in enumerate(classes):
            row = axes[b * len(classes) + r]
            row[0].imshow(shown[r].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            for c, pred in enumerate(masks.values(), start=1):
                row[c].imshow(pred[r].numpy(), cmap=cmap, vmin=0, vmax=len(MASK_COLORS) - 1, interpolation="nearest")
                dice = float(dice_per_image(pred[r:r + 1], truth[r:r + 1], nucleus)[0])
                row[c].text(0.03, 0.03, f"Dice {dice:.2f}", transform=row[c].transAxes, fontsize=6, color="white",
                            va="bottom", bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "lw": 0})
            row[-1].imshow(truth[r].numpy(), cmap=cmap, vmin=0, vmax=len(MASK_COLORS) - 1, interpolation="nearest")
            for ax in row:
                ax.set_xticks([])
                ax.set_yticks([])
            row[0].set_ylabel(cls if not tag else f"{cls}\n{tag}", fontsize=8)
            if r == 0:
                for ax, head in zip(row, heads):
                    ax.set_title(head, fontsize=7.5)
    fig.legend([Patch(color=c) for c in MASK_COLORS], MASK_NAMES, loc="lower center", ncol=3, fontsize=7,
               frameon=False)
    under = "" if len(blocks) == 1 else (f"\nlower rows: {attack} on each model's mask head at eps "
                                         f"{eps_label(spec.eps, spec.norm)}")
    fig.suptitle(f"{data.name}: predicted masks vs ground truth (nucleus Dice per image){under}", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return _save(fig, out, dpi)
