"""Per-sample metrics shared by training (validation) and the bench.

Every function returns one value per image, so that aggregates, intervals and paired
comparisons can be computed later from the same numbers.
"""

from __future__ import annotations

import torch

MASK_CLASSES = {"cytoplasm": 1, "nucleus": 2}


def correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gives a bool per image: is the top-1 class the label."""
    return logits.argmax(dim=1) == labels


def balanced_accuracy(hits: torch.Tensor, labels: torch.Tensor) -> float:
    """Gives the mean over the classes present of each class's accuracy (recall): on a set whose
    classes are not balanced (real smears are mostly neutrophils), what plain accuracy hides.

    >>> balanced_accuracy(torch.tensor([True, True, True, False]), torch.tensor([0, 0, 0, 1]))
    0.5
    """
    classes = labels.unique()
    return float(torch.stack([hits[labels == c].double().mean() for c in classes]).mean()) if len(classes) else float("nan")


def mask_pred(mask_logits: torch.Tensor) -> torch.Tensor:
    """Gives the class of each pixel (N×C×H×W logits → N×H×W), the first of tied maxima as ``argmax``.

    ``max(1).indices`` rather than ``argmax(1)``: on the CPU, argmax over the channel dimension of a
    contiguous NCHW tensor is ~10× slower, and attacks on the masks take it at every step.
    """
    return mask_logits.max(1).indices


def dice_per_image(pred: torch.Tensor, target: torch.Tensor, cls: int) -> torch.Tensor:
    """Gives the Dice of class ``cls`` per image (N×H×W integer masks); 1 where both are empty."""
    p = (pred == cls).flatten(1)
    t = (target == cls).flatten(1)
    inter = (p & t).sum(1).float()
    total = p.sum(1).float() + t.sum(1).float()
    return torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))


def iou_per_image(pred: torch.Tensor, target: torch.Tensor, cls: int) -> torch.Tensor:
    """Gives the IoU (Jaccard) of class ``cls`` per image; 1 where both are empty."""
    p = (pred == cls).flatten(1)
    t = (target == cls).flatten(1)
    inter = (p & t).sum(1).float()
    union = (p | t).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def segmentation_scores(mask_logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gives ``{nucleus_dice, cytoplasm_dice, nucleus_iou, cytoplasm_iou}`` per image."""
    pred = mask_pred(mask_logits)
    out = {}
    for name, cls in MASK_CLASSES.items():
        out[f"{name}_dice"] = dice_per_image(pred, masks, cls)
        out[f"{name}_iou"] = iou_per_image(pred, masks, cls)
    return out
