"""Training a registered model by its recipe: deterministic by seed, best checkpoint on validation."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from robustbench_wbc.data.splits import SPLITS, SplitData
from robustbench_wbc.metrics import correct, segmentation_scores
from robustbench_wbc.models.zoo import ModelEntry, Recipe

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, dict[str, float]], None]


def _augment(x: torch.Tensor, m: torch.Tensor | None, g: torch.Generator):
    """Random quarter turns and flips: a cell on a slide has no up or left."""
    k = int(torch.randint(0, 4, (1,), generator=g))
    flip = bool(torch.randint(0, 2, (1,), generator=g))
    x = torch.rot90(x, k, dims=(-2, -1))
    m = None if m is None else torch.rot90(m, k, dims=(-2, -1))
    if flip:
        x = x.flip(-1)
        m = None if m is None else m.flip(-1)
    return x, m


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: SplitData, batch_size: int = 128) -> dict[str, float]:
    """Gives mean accuracy and Dice on ``data`` for the heads the model has."""
    model.eval()
    sums: dict[str, float] = {}
    for x, y, m in data.batches(batch_size):
        out = model(x)
        if "logits" in out:
            sums["accuracy"] = sums.get("accuracy", 0.0) + correct(out["logits"], y).float().sum().item()
        if "mask" in out and m is not None:
            for k, v in segmentation_scores(out["mask"], m.long()).items():
                sums[k] = sums.get(k, 0.0) + v.sum().item()
    return {k: v / len(data) for k, v in sums.items()}


def selection_score(metrics: dict[str, float]) -> float:
    """The validation score that picks the best step: accuracy, mean Dice, or their mean."""
    parts = []
    if "accuracy" in metrics:
        parts.append(metrics["accuracy"])
    if "nucleus_dice" in metrics:
        parts.append((metrics["nucleus_dice"] + metrics["cytoplasm_dice"]) / 2)
    return sum(parts) / len(parts)


def train_model(entry: ModelEntry, progress: ProgressFn | None = None
                ) -> tuple[torch.nn.Module, dict[str, float], dict]:
    """Trains ``entry`` by its recipe; gives ``(model in eval mode, val metrics, facts for the card)``.

    Early stopping: the model is evaluated on ``synth:val`` every ``val_every`` steps and the
    best state is kept; training ends after ``patience`` evaluations without improvement.
    """
    r: Recipe = entry.recipe_spec
    torch.manual_seed(entry.seed)
    g = torch.Generator().manual_seed(entry.seed)
    model = entry.builder()
    train = SPLITS.get(r.train_split).load(r.train_images, r.image_size)
    val = SPLITS.get("synth:val").load(r.val_images, r.image_size)
    opt = torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r.lr, total_steps=r.steps, pct_start=0.15)

    best_score, best_state, best_metrics, best_step, stale = -1.0, None, {}, 0, 0
    t0 = time.perf_counter()
    step = 0
    n = len(train)
    while step < r.steps:
        order = torch.randperm(n, generator=g)
        for i in range(0, n, r.batch_size):
            if step >= r.steps:
                break
            idx = order[i:i + r.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            x, m = _augment(train.images[idx], train.masks[idx], g)
            model.train()
            out = model(x)
            loss = torch.zeros(())
            if r.use_labels:
                loss = loss + F.cross_entropy(out["logits"], train.labels[idx])
            if r.use_masks:
                loss = loss + r.seg_weight * F.cross_entropy(out["mask"], m.long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % r.val_every == 0 or step == r.steps:
                metrics = evaluate(model, val)
                score = selection_score(metrics)
                if score > best_score:
                    best_score, best_metrics, best_step, stale = score, metrics, step, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    stale += 1
                logger.info("%s step %d loss %.3f val %s", entry.id, step, loss.item(), metrics)
                if progress:
                    progress(step, r.steps, metrics)
                if stale >= r.patience:
                    logger.info("%s: early stop at step %d (best %d)", entry.id, step, best_step)
                    step = r.steps
                    break
    model.load_state_dict(best_state)
    model.eval()
    facts = {
        "train_time_s": round(time.perf_counter() - t0, 2),
        "train_steps": best_step,
        "labelled_images": r.train_images if r.use_labels else 0,
        "masked_images": r.train_images if r.use_masks else 0,
        "data": {"split": r.train_split, "sha256": train.content_hash()},
        "image_size": r.image_size,
    }
    return model, best_metrics, facts
