"""The ``real-finetune`` recipe: how much do a few real cells close the sim-to-real gap?

A zoo model, trained on SynthWBC only, is fine-tuned on ``shots`` real images of a dataset with
masks and scored on real images it never saw: k-fold cross-validation over the whole set
(stratified by class), so every image is scored exactly once per (model, shots) and never by a
model that trained on it. Each family uses what its recipe uses: a classifier the class labels,
a U-Net the masks, a multitask model both; ``shots = 0`` is the zoo model as it is, scored on the
same folds. Whether multitask needs fewer real labels than the others to get there is then read
off the same table.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from robustbench_wbc.atomic import atomic_write_parquet
from robustbench_wbc.data.splits import SplitData
from robustbench_wbc.metrics import balanced_accuracy, correct, segmentation_scores
from robustbench_wbc.models.hub import load_model
from robustbench_wbc.models.train import fit
from robustbench_wbc.models.zoo import MODELS, Recipe

logger = logging.getLogger(__name__)

# Fine-tuning: a tenth of the zoo's learning rate, a fixed number of steps (there is no real
# validation set to stop on: every real image is either trained on or scored), batch 16.
FINETUNE = Recipe("real-finetune", 0, use_labels=True, use_masks=True, steps=150, batch_size=16, lr=2e-4,
                  val_every=50)


@dataclass(frozen=True)
class Fold:
    """One fold: the positions scored, and the pool its training shots are drawn from."""

    k: int
    test: np.ndarray
    pool: np.ndarray


def stratified_folds(labels: np.ndarray, folds: int, seed: int = 0) -> list[Fold]:
    """Splits positions into ``folds`` folds, each class dealt round-robin after a seeded shuffle."""
    if folds < 2:
        raise ValueError(f"need at least 2 folds, got {folds}")
    if len(labels) < folds:
        raise ValueError(f"{len(labels)} images cannot make {folds} folds")
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), dtype=int)
    offset = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        fold_of[idx] = (np.arange(len(idx)) + offset) % folds
        offset += len(idx)
    every = np.arange(len(labels))
    return [Fold(k, every[fold_of == k], every[fold_of != k]) for k in range(folds)]


def draw_shots(pool: np.ndarray, labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Draws ``shots`` positions from ``pool``, stratified by class (round-robin over shuffled classes)."""
    if shots > len(pool):
        raise ValueError(f"{shots} shots but only {len(pool)} images outside the scored fold")
    rng = np.random.default_rng(seed)
    by_class = [list(rng.permutation(pool[labels[pool] == c])) for c in np.unique(labels[pool])]
    out: list[int] = []
    while len(out) < shots:
        for queue in by_class:
            if queue and len(out) < shots:
                out.append(queue.pop())
    return np.array(sorted(out), dtype=int)


def _take(data: SplitData, idx: np.ndarray) -> SplitData:
    t = torch.as_tensor(idx, dtype=torch.long)
    return SplitData(data.name, data.images[t], data.labels[t], None if data.masks is None else data.masks[t],
                     [data.meta[i] for i in idx], data.classes)


@torch.no_grad()
def score(model: torch.nn.Module, data: SplitData) -> dict[str, float]:
    """Gives accuracy, balanced accuracy and mean nucleus / cytoplasm Dice, for the heads the model has."""
    model.eval()
    out = model(data.images)
    metrics: dict[str, float] = {}
    if "logits" in out:
        hits = correct(out["logits"], data.labels)
        metrics["accuracy"] = hits.float().mean().item()
        metrics["balanced_accuracy"] = balanced_accuracy(hits, data.labels)
    if "mask" in out and data.masks is not None:
        for k, v in segmentation_scores(out["mask"], data.masks.long()).items():
            if k.endswith("_dice"):
                metrics[k] = v.mean().item()
    return metrics


def cross_validate(model_ids: Sequence[str], data: SplitData, shots: Sequence[int], folds: int = 5, seed: int = 0,
                   recipe: Recipe = FINETUNE, on_fit: Callable[[str, int, int], None] | None = None,
                   store: Path | None = None) -> pd.DataFrame:
    """Fine-tunes each model on ``shots`` real images per fold and scores the held-out fold.

    Args:
        model_ids: zoo models (trained on first use).
        data: a real split with masks, loaded at the models' input size.
        shots: numbers of real training images; 0 scores the zoo model as it is.
        folds: k of the k-fold cross-validation.
        seed: the folds', the shots' and the fine-tuning's randomness.
        recipe: the fine-tuning recipe (its labels and masks are used as the family's own recipe says).
        on_fit: called as ``on_fit(model_id, shots, fold)`` before each fit.
        store: a directory where each (model, shots, fold) is committed atomically as it finishes,
            keyed by the model's weights, the data, the folds and the recipe; a re-run reuses them.

    Returns a tidy table: ``model, family, shots, fold, n_test, metric, value``.
    """
    if data.masks is None:
        raise ValueError(f"{data.name}: real-finetune needs masks (the U-Net and multitask models train on them)")
    labels = data.labels.numpy()
    rows = []
    for mid in model_ids:
        entry = MODELS.get(mid)
        base, card = load_model(mid)
        if card.image_size != data.images.shape[-1]:
            raise ValueError(f"{mid} takes {card.image_size} px images; load {data.name} at that size")
        r = replace(recipe, use_labels=entry.recipe_spec.use_labels, use_masks=entry.recipe_spec.use_masks)
        state = {k: v.clone() for k, v in base.state_dict().items()}
        for fold in stratified_folds(labels, folds, seed):
            test = _take(data, fold.test)
            for n_shots in shots:
                key = hashlib.sha256(repr((card.weights_sha256, data.content_hash(pixels=False), len(data), folds,
                                           seed, n_shots, fold.k, r)).encode()).hexdigest()[:16]
                path = None if store is None else Path(store) / f"{mid}__{n_shots}__{fold.k}__{key}.parquet"
                if path is not None and path.exists():
                    rows.append(pd.read_parquet(path))
                    continue
                if on_fit:
                    on_fit(mid, n_shots, fold.k)
                model = entry.builder()
                model.load_state_dict(state)
                if n_shots > 0:
                    train = _take(data, draw_shots(fold.pool, labels, n_shots, seed + 1000 * fold.k + n_shots))
                    torch.manual_seed(seed)
                    fit(model, train, r, torch.Generator().manual_seed(seed), name=mid)
                done = pd.DataFrame([{"model": mid, "family": entry.family, "shots": n_shots, "fold": fold.k,
                                      "n_test": len(test), "metric": metric, "value": value}
                                     for metric, value in score(model, test).items()])
                if path is not None:
                    atomic_write_parquet(done, path)
                rows.append(done)
                logger.info("%s shots=%d fold=%d done", mid, n_shots, fold.k)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def summary(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Gives mean and sd over folds of ``metric``: a row per model, a column per number of shots."""
    sel = table[table["metric"] == metric]
    g = sel.groupby(["model", "shots"])["value"]
    return pd.DataFrame({"mean": g.mean(), "sd": g.std(ddof=1)}).unstack("shots")


def summary_markdown(table: pd.DataFrame, metric: str) -> str:
    """Renders :func:`summary` as markdown: ``mean ± sd`` over folds, in %."""
    s = summary(table, metric)
    if s.empty:
        return f"_No {metric} in these results._\n"
    shots = list(s["mean"].columns)
    lines = ["| model | " + " | ".join(f"{n} real" for n in shots) + " |", "|---|" + "---|" * len(shots)]
    for model in s.index:
        cells = []
        for n in shots:
            m, sd = s.loc[model, ("mean", n)], s.loc[model, ("sd", n)]
            cells.append("–" if np.isnan(m) else f"{100 * m:.1f} ± {100 * sd:.1f}" if not np.isnan(sd) else f"{100 * m:.1f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
