"""Training a registered model by its recipe: deterministic by seed, best checkpoint on validation."""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from robustbench_wbc.data.splits import SPLITS, SplitData
from robustbench_wbc.device import model_device
from robustbench_wbc.metrics import correct, segmentation_scores
from robustbench_wbc.models.zoo import ModelEntry, Recipe

logger = logging.getLogger(__name__)

ROBUST_VAL_IMAGES = 100
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
    dev = model_device(model)
    sums: dict[str, float] = {}
    for x, y, m in data.batches(batch_size):
        x, y, m = x.to(dev), y.to(dev), None if m is None else m.to(dev)
        out = model(x)
        if "logits" in out:
            sums["accuracy"] = sums.get("accuracy", 0.0) + correct(out["logits"], y).float().sum().item()
        if "mask" in out and m is not None:
            for k, v in segmentation_scores(out["mask"], m.long()).items():
                sums[k] = sums.get(k, 0.0) + v.sum().item()
    return {k: v / len(data) for k, v in sums.items()}


def robust_accuracy(model: torch.nn.Module, data: SplitData, eps: float, steps: int = 5,
                    batch_size: int = 128) -> float:
    """Gives accuracy on ``data`` under torchattacks' PGD-L∞ (``steps`` steps, random start) on the class head."""
    import torchattacks

    from robustbench_wbc.models.networks import HeadView

    model.eval()
    attack = torchattacks.PGD(HeadView(model, "logits"), eps=eps, alpha=eps / 4, steps=steps, random_start=True)
    hits = 0
    dev = model_device(model)
    for x, y, _ in data.batches(batch_size):
        x, y = x.to(dev), y.to(dev)
        adv = attack(x, y)
        with torch.no_grad():
            hits += int(correct(model(adv)["logits"], y).sum())
    return hits / len(data)


def selection_score(metrics: dict[str, float]) -> float:
    """The validation score that picks the best step: the mean of accuracy, mean Dice and (for
    adversarial training, against robust overfitting: Rice et al. 2020) robust accuracy, of those measured."""
    parts = []
    if "accuracy" in metrics:
        parts.append(metrics["accuracy"])
    if "nucleus_dice" in metrics:
        parts.append((metrics["nucleus_dice"] + metrics["cytoplasm_dice"]) / 2)
    if "robust_accuracy" in metrics:
        parts.append(metrics["robust_accuracy"])
    return sum(parts) / len(parts)


def training_loss(r: Recipe, out: dict[str, torch.Tensor], labels: torch.Tensor, masks: torch.Tensor | None
                  ) -> torch.Tensor:
    """The recipe's loss: CE(class) where it uses labels, + λ·CE(pixels) where it uses masks."""
    loss = torch.zeros(())
    if r.use_labels:
        loss = loss + F.cross_entropy(out["logits"], labels)
    if r.use_masks:
        loss = loss + r.seg_weight * F.cross_entropy(out["mask"], masks.long())
    return loss


def fgsm_rs(model: torch.nn.Module, x: torch.Tensor, loss_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor],
            eps: float, g: torch.Generator) -> torch.Tensor:
    """FGSM with a random start (Wong, Rice & Kolter 2020): a uniform start in the L∞ ball, then one
    signed-gradient step of 1.25·eps on ``loss_fn``, projected back to the ball and to [0, 1]."""
    delta = ((torch.rand(x.shape, generator=g) * 2 - 1) * eps).to(x.device).requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(model((x + delta).clamp(0, 1))), delta)
    delta = (delta.detach() + 1.25 * eps * grad.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0, 1)


def training_data_card(r: Recipe) -> dict:
    """What identifies a recipe's training data: its split, the digest of its data card (generator
    version and every parameter), the number of images, and sha256s of its pixels and of its labels
    and masks (the pixels' can differ between torch thread counts; the rest cannot)."""
    split = SPLITS.get(r.train_split)
    data = split.load(r.train_images, r.image_size)
    return {"split": r.train_split, "card": split.synth.key(r.image_size) if split.synth else "",
            "images": len(data), "sha256": data.content_hash(),
            "labels_sha256": data.content_hash(pixels=False)}


def fit(model: torch.nn.Module, train: SplitData, r: Recipe, g: torch.Generator, val: SplitData | None = None,
        name: str = "", progress: ProgressFn | None = None, device: torch.device | str = "cpu"
        ) -> tuple[dict[str, float], int]:
    """Trains ``model`` on ``train`` by ``r`` (its loss, optimiser, schedule and steps); gives
    ``(validation metrics of the kept step, that step)`` and leaves the model in eval mode.

    With ``val``, the model is evaluated every ``val_every`` steps, the best state is kept and
    training stops after ``patience`` evaluations without improvement; without, it trains all
    ``steps`` and keeps the last state. With ``adv_train`` each batch is replaced by its FGSM-RS
    perturbation, and validation adds robust accuracy under PGD-5 at the training eps. The model
    moves to ``device`` and each batch with it (the data and the generator ``g`` stay on the CPU).
    """
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r.lr, total_steps=r.steps, pct_start=0.15)
    best_score, best_state, best_metrics, best_step, stale = -1.0, None, {}, r.steps, 0
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
            x, m = _augment(train.images[idx], None if train.masks is None else train.masks[idx], g)
            x, m = x.to(device), None if m is None else m.to(device)
            loss_fn = functools.partial(training_loss, r, labels=train.labels[idx].to(device), masks=m)
            model.train()
            if r.adv_train == "fgsm-rs":
                x = fgsm_rs(model, x, loss_fn, r.adv_eps, g)
            loss = loss_fn(model(x))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if val is not None and (step % r.val_every == 0 or step == r.steps):
                metrics = evaluate(model, val)
                if r.adv_train:  # on the first ROBUST_VAL_IMAGES (class-balanced): PGD costs 6 passes an image
                    metrics["robust_accuracy"] = robust_accuracy(model, val.subset(ROBUST_VAL_IMAGES), r.adv_eps)
                score = selection_score(metrics)
                if score > best_score:
                    best_score, best_metrics, best_step, stale = score, metrics, step, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    stale += 1
                logger.info("%s step %d loss %.3f val %s", name, step, loss.item(), metrics)
                if progress:
                    progress(step, r.steps, metrics)
                if stale >= r.patience:
                    logger.info("%s: early stop at step %d (best %d)", name, step, best_step)
                    step = r.steps
                    break
            elif val is None and progress and (step % r.val_every == 0 or step == r.steps):
                progress(step, r.steps, {"loss": loss.item()})
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return best_metrics, best_step


def train_model(entry: ModelEntry, progress: ProgressFn | None = None, device: torch.device | str = "cpu"
                ) -> tuple[torch.nn.Module, dict[str, float], dict]:
    """Trains ``entry`` by its recipe; gives ``(model in eval mode, val metrics, facts for the card)``.

    Early stopping: the model is evaluated on ``synth:val`` every ``val_every`` steps and the
    best state is kept; training ends after ``patience`` evaluations without improvement. With
    ``adv_train`` each batch is replaced by its FGSM-RS perturbation, and validation adds robust
    accuracy under PGD-5 at the training eps.
    """
    r: Recipe = entry.recipe_spec
    torch.manual_seed(entry.seed)
    g = torch.Generator().manual_seed(entry.seed)
    model = entry.builder()
    train = SPLITS.get(r.train_split).load(r.train_images, r.image_size)
    val = SPLITS.get("synth:val").load(r.val_images, r.image_size)
    t0 = time.perf_counter()
    best_metrics, best_step = fit(model, train, r, g, val, entry.id, progress, device)
    model.cpu()
    facts = {
        "train_time_s": round(time.perf_counter() - t0, 2),
        "train_steps": best_step,
        "labelled_images": r.train_images if r.use_labels else 0,
        "masked_images": r.train_images if r.use_masks else 0,
        "data": training_data_card(r),
        "image_size": r.image_size,
    }
    return model, best_metrics, facts
