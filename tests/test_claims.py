"""The mission's claims as paired comparisons of families on one encoder (report/claims.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from robustbench_wbc.bench.cells import CLEAN
from robustbench_wbc.data.synth import CLASSES
from robustbench_wbc.report.claims import claim_markdown, comparisons, seed_spread_markdown

N = 300
ROLES = {"e_cls": ("classifier", "full"), "e_multitask": ("multitask", "masked-small"),
         "e_unet": ("unet", "masked-small"), "e_cls_small": ("classifier", "cls-small")}


class Results:
    """A table and its per-sample outcomes, read as a store is."""

    def __init__(self, table: pd.DataFrame, samples: dict[str, pd.DataFrame]) -> None:
        self._table, self._samples = table, samples

    def table(self) -> pd.DataFrame:
        return self._table

    def samples(self, cell_id: str) -> pd.DataFrame:
        return self._samples[cell_id]


def _results(ood_right: dict[str, list[np.ndarray]], basophil_dice: dict[str, float]) -> Results:
    labels = np.arange(N) % len(CLASSES)
    rows, samples = [], {}
    for model, seeds in ood_right.items():
        family, recipe = ROLES[model]
        for seed, right in enumerate(seeds):
            for split, correct in (("synth:test", np.ones(N, bool)), ("synth:ood-lab-b", right)):
                cell = f"{model}-{seed}-{split}"
                dice = np.where(labels == CLASSES.index("basophil"), basophil_dice[model], 0.9)
                s = {"index": np.arange(N), "label": labels}
                if family != "unet":
                    s["clean_pred"] = np.where(correct, labels, (labels + 1) % len(CLASSES))
                if family != "classifier":
                    s["clean_nucleus_dice"] = dice
                samples[cell] = pd.DataFrame(s)
                base = {"model": model, "model_seed": seed, "family": family, "recipe": recipe, "encoder": "e",
                        "labelled_images": 1, "masked_images": 0, "split": split, "attack": CLEAN, "norm": "none",
                        "eps": 0.0, "target": "none", "n": N, "status": "ok", "cell_id": cell, "seed": 0,
                        "params": "", "model_sha256": f"{model}{seed}", "finished_at": pd.Timestamp("2026-12-01", tz="UTC")}
                if family != "unet":
                    rows.append({**base, "metric": "accuracy", "value": float(correct.mean())})
                if family != "classifier":
                    rows.append({**base, "metric": "nucleus_dice", "value": float(dice.mean())})
    return Results(pd.DataFrame(rows), samples)


def test_comparisons_pair_the_families_of_one_encoder_and_the_data_control():
    r = _results({m: [np.ones(N, bool)] for m in ROLES}, dict.fromkeys(ROLES, 0.8))
    from robustbench_wbc.report.claims import CLASSIFIER, MULTITASK

    assert comparisons(r.table(), CLASSIFIER, MULTITASK, with_control=True) == [
        ("e", "e_cls", "e_multitask"), ("e, data control (same 100 images, no masks)", "e_cls_small", "e_multitask")]


def test_the_ood_claim_is_read_paired_and_over_seeds():
    rng = np.random.default_rng(0)
    base = rng.random(N) < 0.5
    ahead = base | (rng.random(N) < 0.25)  # right wherever the classifier is, and on more cells
    r = _results({"e_cls": [base, base], "e_multitask": [ahead, ahead], "e_cls_small": [base, ahead],
                  "e_unet": [base, base]}, dict.fromkeys(ROLES, 0.8))
    md = claim_markdown(r, "ood")
    lines = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| e")}
    assert "B ahead" in lines["e"]  # multitask ahead of the classifier on the same cells
    assert f"{100 * base.mean():.1f} / {100 * base.mean():.1f} → **{100 * base.mean():.1f}**" in lines["e"]
    diff = 100 * (ahead.mean() - base.mean())
    assert f"{diff:+.1f} [" in lines["e"]
    # the control's two seeds disagree (one as the classifier, one as the multitask model): nothing is shown
    assert "no difference shown" in lines["e, data control (same 100 images, no masks)"]


def test_the_id_claim_has_its_evidence():
    rng = np.random.default_rng(1)
    r = _results({m: [rng.random(N) < 0.5] for m in ROLES}, dict.fromkeys(ROLES, 0.8))
    md = claim_markdown(r, "id")  # every clean ID cell is all right here: no difference shown, but read
    assert "no per-sample outcomes" not in md and "| e | e_cls | **100.0** | e_multitask | **100.0** | +0.0" in md


def test_the_basophil_claim_reads_only_basophils():
    same = np.ones(N, bool)
    r = _results({"e_cls": [same], "e_multitask": [same], "e_unet": [same], "e_cls_small": [same]},
                 {"e_cls": 0.0, "e_multitask": 0.85, "e_unet": 0.40, "e_cls_small": 0.0})
    md = claim_markdown(r, "basophil")
    row = next(line for line in md.splitlines() if line.startswith("| e |"))
    assert "| e_unet | **40.0** | e_multitask | **85.0** | +45.0 [+45.0, +45.0] | B ahead |" in row
    assert "out of distribution" in md


def test_seed_spread():
    r = _results({"e_cls": [np.r_[np.ones(150, bool), np.zeros(150, bool)], np.ones(N, bool)],
                  "e_multitask": [np.ones(N, bool)], "e_unet": [np.ones(N, bool)], "e_cls_small": [np.ones(N, bool)]},
                 dict.fromkeys(ROLES, 0.8))
    md = seed_spread_markdown(r)
    assert "| e_cls | 50.0 | 100.0 | 50.0 |" in md


@pytest.mark.parametrize("claim", ["nonsense"])
def test_unknown_claim(claim):
    r = _results({m: [np.ones(N, bool)] for m in ROLES}, dict.fromkeys(ROLES, 0.8))
    with pytest.raises(ValueError, match="unknown claim"):
        claim_markdown(r, claim)
