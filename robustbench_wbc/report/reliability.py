"""Reliability diagnostics: an ``unreliable`` flag with its reasons, computed from the tidy table.

An evaluation is only as good as its attacks. RobustBench marks entries "potentially unreliable"
and AutoAttack warns (its ``checks.py``) when an evaluation shows the usual signs of gradient
masking or of a broken attack. This module computes such signs from the results already in the
tidy table (one row per cell and metric; only rows with status ``ok`` and a value count), so the
flag is measured, not curated. :func:`diagnose` gives one row per violated check,
:func:`unreliable` one row per (model, model_seed) for the leaderboard to merge.

The checks
----------
Attack checks compare the metric of the attacked head: ``robust_accuracy`` for a ``cls`` target,
``nucleus_dice`` and ``cytoplasm_dice`` for ``seg``, all three for ``joint``
(:data:`HEAD_METRICS`). They group by (model, model_seed, split, target, norm) and:

``eps0_not_clean``
    An attack with eps 0 cannot change an image, so every metric of the cell must equal the clean
    cell's on the same images, i.e. the clean cell of the same (model, model_seed, split, n).
    Robust accuracy is a count of images: it must match to the image (a difference of half an
    image, ``0.5/n``, or more fires). Mean Dice is a float mean and may differ in the last bits
    between batchings: it fires above :data:`DICE_EPS0_TOL` (0.1 point). This check looks at
    every target (under a ``seg`` attack the class head sees unchanged images too). A clean cell of
    another ``n`` is other images, so then nothing is compared.
``robust_rises_with_eps``
    A larger budget contains the smaller one, so an attack's metric must not rise with eps. Per
    attack id (backend suffix included: ``pgd`` and ``pgd@torchattacks`` are different attacks),
    attack seed and params, every pair eps₁ < eps₂ is compared, the clean cell standing in at
    eps 0 when the attack has no eps-0 cell of its own; the pair that rises most beyond noise is
    reported.
``pgd_weaker_than_fgsm``
    PGD iterates FGSM's step with a projection; with the same loss, eps and target it must not
    leave more robust images than FGSM. Compared within one library: the suite's ``pgd`` with its
    ``fgsm``, ``pgd@lib`` with ``fgsm@lib``, and ``pgd-X`` with ``fgsm-X`` (e.g. an L2 pair),
    at the same eps, norm and target. Of several variants (params, seeds) of each, the strongest
    counts.
``square_beats_whitebox``
    Square is black-box: it only queries the outputs. If it leaves fewer robust images than the
    best white-box attack at the same eps, norm and target, the gradients mislead the white-box
    attacks (AutoAttack's ``check_square_sr``). White-box are the gradient attacks named
    :data:`WHITE_BOX` (``fgsm``, ``pgd``, ``apgd-…``, ``fab…``, ``cw…``, ``bim``, ``mifgsm``,
    ``deepfool``, any backend); black-box is ``square…``. Ensembles (``autoattack…``, whose
    standard version runs Square itself) and plugins are neither.

Noise
-----
Two measured proportions p₁ (n₁ images) and p₂ (n₂ images) differ "by more than noise" when
``|p₁ − p₂| > 1.96·sqrt(p₁(1−p₁)/n₁ + p₂(1−p₂)/n₂) + 1/min(n₁, n₂)`` (:func:`noise`): the 95 %
two-proportion bound, plus one image so that a one-image difference never fires when a
proportion is 0 or 1 (where the first term vanishes). The cells of one model and split are
scored on the same images, so the two measurements are positively correlated and the unpaired
bound over-estimates the noise: a check that fires is well beyond chance (and attack randomness,
random starts or Square's sampling, is covered by the same margin). Mean Dice is not a proportion,
but it is the mean of per-image scores in [0, 1], whose variance is at most μ(1 − μ)
(Bhatia–Davis), so the same bound holds for it.

Model checks
------------
Measured on the clean images (metrics of the clean cells; on any ``ok`` row that carries them, the
worst value per (model, model_seed, split) counts):

``zero_gradients``
    ``zero_grad_fraction`` > :data:`ZERO_GRAD_MAX` (5 %). An image whose input gradient is exactly
    zero cannot be moved by a gradient attack (FGSM's sign of zero is zero), so robust accuracy can
    be overstated by up to that fraction. AutoAttack warns at any such image; here the flag marks
    an evaluation as unreliable, so it fires where the overstatement can matter: 5 points is half
    the sampling noise of robust accuracy at n = 100 and an effect a reader of the leaderboard would
    act on, while an isolated saturated image (a float32 softmax rounding to exactly one) can occur
    in an honest, very confident model.
``random_outputs``
    ``output_randomness`` (max |Δ| between two forward passes of the same images) >
    :data:`OUTPUT_RANDOMNESS_MAX` (1e-3). A deterministic model in eval mode repeats its outputs
    to the bit, or to ~1e-6 of their size where a GPU reorders its sums; a randomized defence
    (test-time dropout, noise, random resizing) moves them by 1e-2 to 1 and needs an EOT attack
    (AutoAttack's ``version="rand"``). The table holds no logit scale, so the threshold is
    absolute: AutoAttack's 1e-4 of the L2-normalised output is about 1e-3 for logits of norm ~10.
``probability_outputs``
    ``probability_outputs`` ≥ 0.5 (it is 1.0 or 0.0): every row of the class output lies in [0, 1]
    and sums to 1, i.e. the model returns softmax probabilities, not logits. Cross-entropy on
    probabilities saturates and its gradients vanish (AutoAttack's ``check_range_output``).

Seg-only models (no ``robust_accuracy``) get the attack checks on Dice; a check that lacks its
inputs (no clean cell, no FGSM, no white-box attack, one eps) is silent.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from robustbench_wbc.attacks.base import eps_label
from robustbench_wbc.bench.cells import CLEAN
from robustbench_wbc.report.rows import current_rows

Z = 1.96  # two-sided 95 %
ZERO_GRAD_MAX = 0.05
OUTPUT_RANDOMNESS_MAX = 1e-3
PROBABILITY_MIN = 0.5
DICE_EPS0_TOL = 1e-3
EPS_DECIMALS = 10  # eps values are matched after rounding, so 8/255 computed twice is one eps

HEAD_METRICS = {"cls": ("robust_accuracy",), "seg": ("nucleus_dice", "cytoplasm_dice"),
                "joint": ("robust_accuracy", "nucleus_dice", "cytoplasm_dice")}
# the clean cell's name of each attacked metric
CLEAN_METRIC = {"robust_accuracy": "accuracy", "nucleus_dice": "nucleus_dice", "cytoplasm_dice": "cytoplasm_dice"}
METRIC_LABEL = {"robust_accuracy": "robust accuracy", "nucleus_dice": "nucleus Dice", "cytoplasm_dice": "cytoplasm Dice"}
CLEAN_LABEL = {"robust_accuracy": "clean accuracy", "nucleus_dice": "clean nucleus Dice",
               "cytoplasm_dice": "clean cytoplasm Dice"}
WHITE_BOX = re.compile(r"^(fgsm|pgd|bim|mifgsm|apgd|fab|cw|deepfool)(-|$)")
BLACK_BOX = re.compile(r"^square(-|$)")

CHECKS = {
    "eps0_not_clean": "an attack at eps 0 does not give the clean metric",
    "robust_rises_with_eps": "the metric under attack rises with eps",
    "pgd_weaker_than_fgsm": "PGD leaves more robust images than FGSM",
    "square_beats_whitebox": "black-box Square beats the white-box attacks",
    "zero_gradients": "many images have an input gradient of exactly zero",
    "random_outputs": "the outputs change between forward passes",
    "probability_outputs": "the model returns probabilities, not logits",
}
DIAG_COLUMNS = ["model", "model_seed", "split", "check", "target", "attack", "norm", "eps", "reason"]
FLAG_COLUMNS = ["model", "model_seed", "unreliable", "unreliable_reason"]
GROUP = ["model", "model_seed", "split"]


def noise(p1: float, n1: float, p2: float, n2: float) -> float:
    """The difference two proportions (or means of [0, 1] scores) may show by chance: see the module docstring."""
    if not (n1 > 0 and n2 > 0):
        return math.inf
    p1, p2 = min(max(p1, 0.0), 1.0), min(max(p2, 0.0), 1.0)
    return Z * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2) + 1 / min(n1, n2)


def attack_base(attack: str) -> str:
    """The attack id without its backend suffix: ``pgd@torchattacks`` → ``pgd``."""
    return attack.split("@", 1)[0]


def attack_lib(attack: str) -> str:
    """The backend suffix of an attack id (``""`` for the suite's own)."""
    return attack.split("@", 1)[1] if "@" in attack else ""


def is_white_box(attack: str) -> bool:
    return bool(WHITE_BOX.match(attack_base(attack)))


def is_black_box(attack: str) -> bool:
    return bool(BLACK_BOX.match(attack_base(attack)))


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def _pts(v: float) -> str:
    return f"±{100 * v:.1f} points"


def _usable(table: pd.DataFrame) -> pd.DataFrame:
    """The current rows (:func:`robustbench_wbc.report.rows.current_rows`, the rule every report reads by) that
    are ``ok`` and have a value, with the eps rounded for matching (``_eps``)."""
    t = current_rows(table)
    t = t[(t["status"] == "ok") & t["value"].notna()].copy()
    t["eps"] = t["eps"].astype(float).fillna(0.0)
    t["_eps"] = t["eps"].round(EPS_DECIMALS)
    t["n"] = pd.to_numeric(t["n"], errors="coerce").fillna(0)
    return t.drop_duplicates([*GROUP, "attack", "target", "norm", "_eps", "seed", "params", "metric"], keep="last")


def _row(r, check: str, reason: str, attack: str | None = None, eps: float | None = None) -> dict:
    return {"model": r["model"], "model_seed": r["model_seed"], "split": r["split"], "check": check,
            "target": r["target"], "attack": r["attack"] if attack is None else attack, "norm": r["norm"],
            "eps": float(r["eps"] if eps is None else eps), "reason": reason}


def _model_checks(t: pd.DataFrame) -> list[dict]:
    out = []
    for metric, check in (("zero_grad_fraction", "zero_gradients"), ("output_randomness", "random_outputs"),
                          ("probability_outputs", "probability_outputs")):
        rows = t[t["metric"] == metric]
        if rows.empty:
            continue
        # the worst value per (model, model_seed, split), from a clean cell where there is one
        rows = rows.assign(_clean=rows["attack"] == CLEAN).sort_values(["value", "_clean"], kind="stable")
        for _, r in rows.drop_duplicates(GROUP, keep="last").iterrows():
            v, n = float(r["value"]), r["n"]
            if check == "zero_gradients" and v > ZERO_GRAD_MAX:
                count = f" ({round(v * n)} of {int(n)})" if n > 0 else ""
                reason = (f"{_pct(v)} of the images{count} have an input gradient of exactly zero, more than "
                          f"{_pct(ZERO_GRAD_MAX)}: gradient attacks cannot move them, so robust accuracy may be overstated")
            elif check == "random_outputs" and v > OUTPUT_RANDOMNESS_MAX:
                reason = (f"two forward passes of the same images differ by up to {v:.3g} (more than "
                          f"{OUTPUT_RANDOMNESS_MAX:g}): a randomized model, which needs an EOT attack")
            elif check == "probability_outputs" and v >= PROBABILITY_MIN:
                reason = ("the class outputs lie in [0, 1] and sum to 1: the model returns softmax probabilities "
                          "instead of logits, which flattens the gradients of the cross-entropy")
            else:
                continue
            out.append(_row(r, check, reason))
    return out


def _eps0(attacked: pd.DataFrame, clean: pd.DataFrame) -> list[dict]:
    at0 = attacked[(attacked["_eps"] == 0) & attacked["metric"].isin(list(CLEAN_METRIC))]
    if at0.empty or clean.empty:
        return []
    ref = clean[clean["metric"].isin(list(CLEAN_METRIC.values()))][[*GROUP, "n", "metric", "value"]]
    ref = ref.rename(columns={"metric": "_clean_metric", "value": "_clean"})
    at0 = at0.assign(_clean_metric=at0["metric"].map(CLEAN_METRIC)).merge(ref, on=[*GROUP, "n", "_clean_metric"])
    out = []
    for _, r in at0.iterrows():
        v, c, n, m = float(r["value"]), float(r["_clean"]), r["n"], r["metric"]
        if m == "robust_accuracy":  # a count of images: equal to the image
            if n <= 0 or abs(v - c) < 0.5 / n:
                continue
        elif abs(v - c) <= DICE_EPS0_TOL:
            continue
        gap = f"{round(abs(v - c) * n)} images" if m == "robust_accuracy" else f"{100 * abs(v - c):.1f} points"
        reason = (f"{METRIC_LABEL[m]} at eps 0 is {_pct(v)} ({r['attack']}, {r['target']}) but {CLEAN_LABEL[m]} on the "
                  f"same {int(n)} images is {_pct(c)}, {gap} apart: an attack with no budget must leave the images as they are")
        out.append(_row(r, "eps0_not_clean", reason, eps=0.0))
    return out


def _head(attacked: pd.DataFrame) -> pd.DataFrame:
    """The rows of the metrics of the attacked head."""
    keep = [m in HEAD_METRICS.get(t, ()) for t, m in zip(attacked["target"], attacked["metric"])]
    return attacked[pd.Series(keep, index=attacked.index, dtype=bool)]


def _rises(head: pd.DataFrame, clean: pd.DataFrame) -> list[dict]:
    out = []
    keys = [*GROUP, "target", "norm", "attack", "seed", "params", "metric"]
    for _, s in head.groupby(keys, sort=False, dropna=False):
        s = s.sort_values("_eps")
        r0 = s.iloc[0]
        points = [(float(e), float(v), float(n), False) for e, v, n in zip(s["eps"], s["value"], s["n"])]
        if r0["_eps"] > 0:  # the clean cell stands in at eps 0, preferably on the same images
            ref = clean[(clean["model"] == r0["model"]) & (clean["model_seed"] == r0["model_seed"])
                        & (clean["split"] == r0["split"]) & (clean["metric"] == CLEAN_METRIC[r0["metric"]])]
            if not ref.empty:
                same = ref[ref["n"] == r0["n"]]
                c = (same if not same.empty else ref.sort_values("n")).iloc[-1]
                points.insert(0, (0.0, float(c["value"]), float(c["n"]), True))
        worst = None
        for i, (e1, v1, n1, is_clean) in enumerate(points):
            for e2, v2, n2, _ in points[i + 1:]:
                if round(e2, EPS_DECIMALS) <= round(e1, EPS_DECIMALS):
                    continue
                tol = noise(v1, n1, v2, n2)
                if v2 - v1 > tol and (worst is None or v2 - v1 - tol > worst[0]):
                    worst = (v2 - v1 - tol, e1, v1, e2, v2, tol, is_clean)
        if worst is None:
            continue
        _, e1, v1, e2, v2, tol, is_clean = worst
        at1 = "eps 0 (clean)" if is_clean else f"eps {eps_label(e1, r0['norm'])}"
        reason = (f"{METRIC_LABEL[r0['metric']]} rises from {_pct(v1)} at {at1} to {_pct(v2)} at {eps_label(e2, r0['norm'])} "
                  f"({r0['attack']}, {r0['target']}): more than noise ({_pts(tol)})")
        out.append(_row(r0, "robust_rises_with_eps", reason, eps=e2))
    return out


def _strongest(rows: pd.DataFrame) -> pd.Series:
    """Of several variants, the row with the lowest metric (the strongest attack)."""
    return rows.sort_values("value", kind="stable").iloc[0]


def _above(higher: pd.Series, lower: pd.Series) -> float | None:
    """Gives the noise bound if ``higher``'s value exceeds ``lower``'s by more than it, else ``None``."""
    tol = noise(higher["value"], higher["n"], lower["value"], lower["n"])
    return tol if higher["value"] - lower["value"] > tol else None


def _pgd_fgsm(head: pd.DataFrame) -> list[dict]:
    h = head[head["_eps"] > 0]
    base = h["attack"].map(attack_base)
    kind = base.str.extract(r"^(pgd|fgsm)(-.*)?$")
    h = h.assign(_kind=kind[0], _rest=kind[1].fillna(""), _lib=h["attack"].map(attack_lib)).dropna(subset=["_kind"])
    out = []
    for _, g in h.groupby([*GROUP, "target", "norm", "_eps", "_lib", "_rest", "metric"], sort=False, dropna=False):
        pgd, fgsm = g[g["_kind"] == "pgd"], g[g["_kind"] == "fgsm"]
        if pgd.empty or fgsm.empty:
            continue
        p, f = _strongest(pgd), _strongest(fgsm)
        if (tol := _above(p, f)) is None:
            continue
        reason = (f"PGD is weaker than FGSM at eps {eps_label(p['eps'], p['norm'])} ({p['target']}): {METRIC_LABEL[p['metric']]} "
                  f"{_pct(p['value'])} under {p['attack']} vs {_pct(f['value'])} under {f['attack']}, "
                  f"more than noise ({_pts(tol)})")
        out.append(_row(p, "pgd_weaker_than_fgsm", reason))
    return out


def _square(head: pd.DataFrame) -> list[dict]:
    h = head[head["_eps"] > 0]
    h = h.assign(_white=h["attack"].map(is_white_box), _black=h["attack"].map(is_black_box))
    out = []
    for _, g in h.groupby([*GROUP, "target", "norm", "_eps", "metric"], sort=False, dropna=False):
        white = g[g["_white"]]
        if white.empty or not g["_black"].any():
            continue
        w = _strongest(white)
        for _, sq in g[g["_black"]].groupby("attack", sort=False):
            s = _strongest(sq)
            if (tol := _above(w, s)) is None:
                continue
            reason = (f"Square beats the white-box attacks at eps {eps_label(s['eps'], s['norm'])} ({s['target']}): "
                      f"{METRIC_LABEL[s['metric']]} {_pct(s['value'])} under {s['attack']} vs at best {_pct(w['value'])} "
                      f"under {w['attack']}, more than noise ({_pts(tol)}): the gradients mislead the white-box attacks")
            out.append(_row(s, "square_beats_whitebox", reason))
    return out


def diagnose(table: pd.DataFrame) -> pd.DataFrame:
    """One row per violated check: model, model_seed, split, check, target, attack, norm, eps, reason.

    Only rows with status ``ok`` count; see the module docstring for the checks and thresholds.
    """
    if table.empty:
        return pd.DataFrame(columns=DIAG_COLUMNS)
    t = _usable(table)
    clean = t[t["attack"] == CLEAN]
    attacked = t[t["attack"] != CLEAN]
    head = _head(attacked)
    rows = [*_eps0(attacked, clean), *_rises(head, clean), *_pgd_fgsm(head), *_square(head), *_model_checks(t)]
    out = pd.DataFrame(rows, columns=DIAG_COLUMNS)
    if out.empty:
        return out
    order = list(CHECKS)
    out["_order"] = out["check"].map(order.index)
    return (out.sort_values(["model", "model_seed", "split", "_order", "target", "attack", "eps"], kind="stable")
            .drop(columns="_order").reset_index(drop=True))


def unreliable(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, model_seed) of the table: ``unreliable`` and ``unreliable_reason``.

    The reason joins the violated checks' reasons (each prefixed with its split) with ``"; "``;
    it is ``""`` for a model with no violation.
    """
    if table.empty:
        return pd.DataFrame(columns=FLAG_COLUMNS)
    models = table[["model", "model_seed"]].drop_duplicates().reset_index(drop=True)
    d = diagnose(table)
    if d.empty:
        return models.assign(unreliable=False, unreliable_reason="")[FLAG_COLUMNS]
    d = d.assign(_reason=d["split"].astype(str) + ": " + d["reason"])
    joined = (d.groupby(["model", "model_seed"], sort=False, dropna=False)["_reason"]
              .agg(lambda r: "; ".join(dict.fromkeys(r))).rename("unreliable_reason").reset_index())
    out = models.merge(joined, on=["model", "model_seed"], how="left")
    out["unreliable_reason"] = out["unreliable_reason"].fillna("")
    out["unreliable"] = out["unreliable_reason"] != ""
    return out[FLAG_COLUMNS]
