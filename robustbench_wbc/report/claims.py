"""The mission's four claims, read off a results table: each a paired comparison of two families on one encoder.

Every comparison is of two models trained on the same encoder, scored on the same cells, so it is
made paired (:func:`robustbench_wbc.report.ranking.paired_difference`: the cells resampled alike for
both models, each model's training seeds resampled within it). A row gives each model's number per
seed and their mean, the difference with its 95 % interval, and the verdict the interval allows:
one model *ahead* where the interval excludes 0, else *no difference shown* (not "the same": the
interval says how large a difference the data cannot exclude).

What each comparison controls for: within an encoder the families share the encoder code, the
training budget (steps, batch, optimiser) and the data generator; they differ in their heads and
their labels. The classifier (recipe ``full``) sees 1,450 labelled images, the multitask model and
the U-Net the 100 of them that have masks (``masked-small``); the control ``cls-small`` is the
classifier on those 100 images without their masks, so "multitask against cls-small" isolates what
the masks add, and "multitask against classifier" mixes that with 14.5× fewer images.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from robustbench_wbc.bench.cells import CLEAN
from robustbench_wbc.data.splits import cell_stream
from robustbench_wbc.data.synth import CLASSES
from robustbench_wbc.report.ensemble import ensemble_or_reason
from robustbench_wbc.report.leaderboard import key_evidence
from robustbench_wbc.report.ranking import Evidence, paired_difference
from robustbench_wbc.report.rows import SEED_KEYS, current_rows, split_role

# (family, recipe) of each role in a comparison
CLASSIFIER, MULTITASK, UNET, CONTROL = ("classifier", "full"), ("multitask", "masked-small"), ("unet", "masked-small"), \
    ("classifier", "cls-small")
AT = {"classifier": ("classifier", "full-at"), "multitask": ("multitask", "masked-small-at"),
      "control": ("classifier", "cls-small-at")}


def _model(models: pd.DataFrame, encoder: str, role: tuple[str, str]) -> str | None:
    sel = models[(models["encoder"] == encoder) & (models["family"] == role[0]) & (models["recipe"] == role[1])]
    return sel.index[0] if len(sel) else None


def comparisons(table: pd.DataFrame, first: tuple[str, str], second: tuple[str, str],
                with_at: bool = True, with_control: bool = False) -> list[tuple[str, str, str]]:
    """Gives ``(what, model A, model B)`` for each encoder that has both roles (and the adversarially trained
    pair, and the data control, where asked and present)."""
    models = table.drop_duplicates("model").set_index("model")
    out = []
    for enc in sorted(models["encoder"].dropna().unique()):
        a, b = _model(models, enc, first), _model(models, enc, second)
        if a and b:
            out.append((enc, a, b))
        if with_control:
            c = _model(models, enc, CONTROL)
            if c and b:
                out.append((f"{enc}, data control (same 100 images, no masks)", c, b))
    if with_at:
        for enc in sorted(models["encoder"].dropna().unique()):
            a, b = _model(models, enc, AT["classifier"]), _model(models, enc, AT["multitask"])
            if a and b:
                out.append((f"{enc}, adversarially trained", a, b))
            c = _model(models, enc, AT["control"])
            if with_control and c and b:
                out.append((f"{enc}, adversarially trained, data control", c, b))
    return out


def class_dice_evidence(table: pd.DataFrame, samples: Callable[[str], pd.DataFrame], role: str, cls: str,
                        part: str = "nucleus") -> dict[str, Evidence]:
    """Per model, the clean per-image ``part`` Dice of the images of class ``cls`` on the splits of ``role``."""
    t = current_rows(table)
    t = t[(t["status"] == "ok") & (t["attack"] == CLEAN) & (t["metric"] == f"{part}_dice")].copy()
    t = t[t["split"].map(split_role) == role]
    label = CLASSES.index(cls)
    out = {}
    for model, rows in t.groupby("model"):
        seeds = []
        for _, per_seed in rows.groupby("model_seed"):
            splits = []
            for _, r in per_seed.iterrows():
                s = samples(r["cell_id"])
                mine = s[s["label"] == label]
                stream = cell_stream(r["split"])
                splits.append((np.array([f"{stream}#{i}" for i in mine["index"]]),
                               mine[f"clean_{part}_dice"].to_numpy(float)))
            seeds.append(tuple(splits))
        out[model] = Evidence(tuple(seeds))
    return out


def _per_seed_text(ev: Evidence) -> str:
    values = [np.mean([np.mean(v) for _, v in seed]) for seed in ev.seeds]
    shown = " / ".join(f"{100 * v:.1f}" for v in values)
    return f"{shown} → **{100 * np.mean(values):.1f}**" if len(values) > 1 else f"**{100 * values[0]:.1f}**"


def claim_table(rows: list[tuple[str, str, str]], evidence: dict[str, Evidence], what: str) -> str:
    """Renders comparisons as markdown: each model's ``what`` per seed → mean (%), B − A with its 95 % interval
    in points, and the verdict."""
    if not rows:
        return "_No pair of models for this comparison in the table._\n"
    lines = [f"| encoder | A | {what}, A % | B | {what}, B % | B − A, points [95 % CI] | verdict |",
             "|---|---|---|---|---|---|---|"]
    verdicts = []
    for label, a, b in rows:
        if a not in evidence or b not in evidence:
            lines.append(f"| {label} | {a} | – | {b} | – | – | no per-sample outcomes |")
            continue
        diff, lo, hi = paired_difference(evidence[b], evidence[a])
        verdict = "B ahead" if lo > 0 else "A ahead" if hi < 0 else "no difference shown"
        verdicts.append(verdict)
        lines.append(f"| {label} | {a} | {_per_seed_text(evidence[a])} | {b} | {_per_seed_text(evidence[b])} | "
                     f"{100 * diff:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] | {verdict} |")
    counts = {v: verdicts.count(v) for v in ("B ahead", "A ahead", "no difference shown")}
    summary = (f"\nOf {len(verdicts)} comparisons: B ahead in {counts['B ahead']}, A ahead in {counts['A ahead']}, "
               f"no difference shown in {counts['no difference shown']}.\n") if verdicts else ""
    return "\n".join(lines) + "\n" + summary


CLAIMS = ("ood", "id", "basophil", "attack")


def claim_markdown(results, claim: str) -> str:
    """Renders one claim's comparisons from ``results`` (a store or a published table, with per-sample outcomes).

    ``ood``: clean accuracy out of distribution (mean over the OOD splits), classifier (A) against
    multitask (B), and the data control; ``id``: the same in distribution; ``basophil``: clean
    basophil nucleus Dice, U-Net (A) against multitask (B), in distribution and out; ``attack``:
    the worst robust accuracy under L∞ attacks at the largest eps (class head; per image over every
    attack there), classifier (A) against multitask (B).
    """
    table = results.table()
    if claim in ("ood", "id"):
        key = "clean_acc_ood" if claim == "ood" else "clean_acc_id"
        what = "OOD accuracy" if claim == "ood" else "ID accuracy"
        ev = key_evidence(table, key, results.samples) or {}
        return claim_table(comparisons(table, CLASSIFIER, MULTITASK, with_control=True), ev, what)
    if claim == "basophil":
        rows = comparisons(table, UNET, MULTITASK, with_at=False)
        parts = []
        for role, name in (("test", "in distribution"), ("ood", "out of distribution (mean over the OOD splits)")):
            ev = class_dice_evidence(table, results.samples, role, "basophil")
            parts.append(f"Basophil nucleus Dice {name}:\n\n" + claim_table(rows, ev, "basophil nucleus Dice"))
        return "\n".join(parts)
    if claim == "attack":
        ens, _ = ensemble_or_reason(results, table)
        ev = key_evidence(table, "worst_robust_acc", results.samples, ens) or {}
        return claim_table(comparisons(table, CLASSIFIER, MULTITASK), ev, "worst robust acc L∞")
    raise ValueError(f"unknown claim {claim!r}; expected one of {', '.join(CLAIMS)}")


CLAIM_TEXT = {"ood": "out of distribution, multitask (B) against classifier or data control (A)",
              "id": "in distribution, multitask (B) against classifier or data control (A)",
              "basophil": "basophil nucleus Dice, multitask (B) against U-Net (A), in and out of distribution",
              "attack": "worst robust accuracy L∞, multitask (B) against classifier (A)"}


def claims_summary_markdown(results) -> str:
    """One line per claim: how many of its comparisons show B ahead, A ahead, or no difference."""
    lines = []
    for claim in CLAIMS:
        body = claim_markdown(results, claim)
        counts = [line for line in body.splitlines() if line.startswith("Of ")]
        lines.append(f"- {CLAIM_TEXT[claim]}: " + " ".join(c[0].lower() + c[1:] for c in counts) if counts
                     else f"- {CLAIM_TEXT[claim]}: no comparison in the table.")
    return "\n".join(lines) + "\n"


def seed_spread_markdown(results, key: str = "clean_acc_ood") -> str:
    """Renders each model's ``key`` per training seed, with the spread between seeds (max − min, points)."""
    from robustbench_wbc.report.leaderboard import per_seed_numbers

    t = current_rows(results.table())
    ok = t[t["status"] == "ok"].copy()
    ok["role"] = ok["split"].map(split_role)
    ens, _ = ensemble_or_reason(results, t) if key.startswith("worst") else (None, "")
    values = per_seed_numbers(ok, ens).values
    if key not in values:
        return f"_No {key} in the table._\n"
    per = values[key].dropna().unstack("model_seed")
    seeds = list(per.columns)
    lines = ["| model | " + " | ".join(f"seed {s} %" for s in seeds) + " | spread (points) |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for model, row in per.sort_index().iterrows():
        cells = ["–" if np.isnan(v) else f"{100 * v:.1f}" for v in row.to_numpy(float)]
        spread = np.nanmax(row.to_numpy(float)) - np.nanmin(row.to_numpy(float))
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {100 * spread:.1f} |")
    return "\n".join(lines) + "\n"


__all__ = ["CLAIMS", "SEED_KEYS", "claim_markdown", "claim_table", "claims_summary_markdown", "class_dice_evidence",
           "comparisons", "seed_spread_markdown"]
