"""The suite's own attack engine: one base class for gradient attacks on any head.

An engine attack sees the whole model (a dict of heads) and climbs one of three objectives:

* ``cls`` — the cross-entropy of the class logits;
* ``seg`` — a per-pixel loss of the mask logits: plain cross-entropy, or SegPGD's (Gu et al.,
  ECCV 2022, arXiv 2207.12391), which moves weight from the pixels already wrong to those still
  right as the iterations go, so the attack does not spend its budget on pixels it has won;
* ``joint`` — both heads at once. A plain sum of the two losses is dominated by whichever head has
  the larger gradient (Zhang et al., arXiv 2305.12066), so each head's input gradient is scaled to
  unit L2 norm per image before they are added: both heads steer every step equally.

Evaluation semantics follow AutoAttack's: against ``cls`` an image leaves the attack the moment it
is misclassified, and that first adversarial is what is returned (it is never undone by a later
step); images still robust are attacked to the last step and return their last iterate (as
torchattacks' PGD does), which the caller's verdict pass scores: the loop spends no forward pass on it.
Against ``seg`` and ``joint`` every image runs every step and the most damaging iterate is kept
(lowest mean Dice; for ``joint``, a misclassification first, then the lowest Dice).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from robustbench_wbc.metrics import MASK_CLASSES, dice_per_image, mask_pred

SEG_LOSSES = ("ce", "segpgd")
# Against ``cls``, score first (forward only) the images whose damage trend predicts that they are
# misclassified at this iterate, and spare those that are a backward pass (Attack._exits_now). Which
# passes run changes, not the iterates; False turns it off (the benchmarks measure both).
PREDICT_EXITS = True


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gives ``max_{j≠y} z_j − z_y`` per image: positive exactly when the image is misclassified.

    Correct for negative logits too: the other classes are masked with −inf, not zeroed (zeroing
    is the bug of torchattacks' CW margin, issue #184).
    """
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), -math.inf)
    return others.amax(1) - true


def seg_loss(mask_logits: torch.Tensor, masks: torch.Tensor, kind: str = "ce", progress: float = 0.0) -> torch.Tensor:
    """Gives the per-image segmentation loss to maximise: pixel cross-entropy, or SegPGD's.

    SegPGD: ``((1 − λ) Σ_correct CE + λ Σ_wrong CE) / HW`` with ``λ = progress / 2`` rising from
    0 to ½ over the attack (Gu et al. 2022, eq. 6–7).
    """
    ce = F.cross_entropy(mask_logits, masks, reduction="none")  # N×H×W
    if kind == "ce":
        return ce.flatten(1).mean(1)
    if kind != "segpgd":
        raise ValueError(f"seg_loss must be one of {SEG_LOSSES}, got {kind!r}")
    lam = progress / 2
    right = (mask_pred(mask_logits) == masks).float()
    return (((1 - lam) * right + lam * (1 - right)) * ce).flatten(1).mean(1)


def mean_dice(mask_logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Gives the mean of nucleus and cytoplasm Dice per image."""
    pred = mask_pred(mask_logits)
    return torch.stack([dice_per_image(pred, masks, c) for c in MASK_CLASSES.values()]).mean(0)


def _unit(g: torch.Tensor) -> torch.Tensor:
    return g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.ndim - 1)))


# float64 work on a batch of images (the exact L∞ bounds, the threat-model check) is done this many values
# at a time: the float64 copies then stay in the CPU's cache, about twice as fast on 2 cores as whole-batch
SLICE_VALUES = 1 << 18


def image_slices(x: torch.Tensor) -> list[slice]:
    """Gives slices of ``x``'s images (its first dimension) of about :data:`SLICE_VALUES` values each."""
    step = max(1, SLICE_VALUES // max(1, x[0].numel())) if x.ndim and len(x) else 1
    return [slice(i, i + step) for i in range(0, len(x), step)]


def linf_bounds(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Gives bounds ``[lo, hi]`` in ``x``'s dtype of the L∞ ball ∩ [0, 1] that hold in exact arithmetic.

    ``x ± eps`` is computed in float64 and rounded to ``x``'s dtype inward: where rounding to nearest
    put a bound outside the ball, it is moved one float (of the bound's own magnitude) toward ``x``.
    Rounding ``x ± eps`` in float32 directly is not enough: eps itself rounds with an error of the
    order of x's float spacing, which can be many floats of a bound near 0 (x ≈ eps). Computed in
    :func:`image_slices`.
    """
    slices = image_slices(x) if x.ndim else []
    if len(slices) <= 1:
        return _linf_bounds(x, eps)
    lo, hi = torch.empty_like(x), torch.empty_like(x)
    for s in slices:
        lo[s], hi[s] = _linf_bounds(x[s], eps)
    return lo, hi


def _linf_bounds(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    xd = x.double()
    lo64, hi64 = xd - eps, xd + eps
    lo, hi = lo64.to(x.dtype), hi64.to(x.dtype)
    lo = torch.where(lo.double() < lo64, torch.nextafter(lo, x), lo)
    hi = torch.where(hi.double() > hi64, torch.nextafter(hi, x), hi)
    return lo.clamp_min(0), hi.clamp_max(1)


def project(x_adv: torch.Tensor, x: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Gives ``x_adv`` moved into the ``norm`` ball of radius eps around ``x`` and into [0, 1].

    L∞ uses the exact bounds of :func:`linf_bounds`; L2 scales δ by ``min(1, eps(1 − 1e-6)/‖δ‖)``
    (the margin absorbs float32 rounding of the norm) and then clamps to [0, 1], which only
    shortens δ. Also the projection of a minimal-norm attack's result (CW) onto the budget.
    """
    if norm == "linf":
        lo, hi = linf_bounds(x, eps)
        return torch.clamp(x_adv, lo, hi)  # lo ≤ hi: the projection onto the bounds
    delta = x_adv - x
    size = delta.flatten(1).norm(dim=1).view(-1, *([1] * (x.ndim - 1)))
    scale = torch.clamp(eps * (1 - 1e-6) / size.clamp_min(1e-12), max=1.0)
    return (x + delta * scale).clamp(0, 1)


def _compact(rows: dict[str, torch.Tensor | None], keep: torch.Tensor) -> None:
    """Keeps the rows ``keep`` of every tensor in ``rows``, in place of the dict's values."""
    for k, v in rows.items():
        if v is not None:
            rows[k] = v[keep]


class Attack:
    """Base class of the suite's own attacks.

    Subclasses implement :meth:`perturb` (usually by calling :meth:`iterate` with a step rule);
    the base gives the objective's loss and input gradient, the early exit, and exact
    projections. Images are in [0, 1], NCHW float; labels are class indices; masks N×H×W with
    0 background, 1 cytoplasm, 2 nucleus. Called by :class:`~robustbench_wbc.attacks.base.BuiltAttack`,
    which freezes the weights, puts the model in eval mode, and checks the output.

    Args:
        model: returns a dict with ``logits`` and/or ``mask``.
        eps: the budget in the class's ``norm``.
        target: ``cls``, ``seg`` or ``joint``.
        seg_loss: ``ce`` or ``segpgd`` (for ``seg`` and ``joint``).
    """

    norm = "linf"
    targets: tuple[str, ...] = ("cls", "seg", "joint")
    # True where perturb runs through :meth:`iterate`, which computes in pieces of ``batch_size``
    # images: such an attack may be handed several batches at once, and its passes then draw on all
    # the images still active, so they stay full as early exit removes images
    chunked = False
    batch_size: int | None = None  # the most images per forward/backward pass (None: all at once)
    _box: tuple | None = None  # (images, their version, their L∞ bounds): see linf_box

    def __init__(self, model: nn.Module, eps: float, target: str = "cls", seg_loss: str = "ce") -> None:
        if target not in self.targets:
            raise ValueError(f"{type(self).__name__} cannot target {target!r}; it supports {self.targets}")
        if seg_loss not in SEG_LOSSES:
            raise ValueError(f"seg_loss must be one of {SEG_LOSSES}, got {seg_loss!r}")
        self.model, self.eps, self.target, self.seg_loss = model, float(eps), target, seg_loss

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        return self.perturb(images, labels, masks)

    def perturb(self, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    # --- the objective --------------------------------------------------------------------------
    def gradient(self, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor | None, progress: float = 0.0,
                 need_grad: bool = True) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Gives the model's outputs at ``x`` (detached) and the objective's input gradient."""
        if not need_grad:
            with torch.no_grad():
                return self.model(x), None
        x = x.detach().requires_grad_(True)
        out = self.model(x)
        if self.target == "cls":
            grad = torch.autograd.grad(F.cross_entropy(out["logits"], y, reduction="sum"), x)[0]
        elif self.target == "seg":
            grad = torch.autograd.grad(seg_loss(out["mask"], m, self.seg_loss, progress).sum(), x)[0]
        else:
            g_cls = torch.autograd.grad(F.cross_entropy(out["logits"], y, reduction="sum"), x, retain_graph=True)[0]
            g_seg = torch.autograd.grad(seg_loss(out["mask"], m, self.seg_loss, progress).sum(), x)[0]
            grad = _unit(g_cls) + _unit(g_seg)
        return {k: v.detach() for k, v in out.items()}, grad

    def damage(self, out: dict[str, torch.Tensor], y: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        """Gives how much harm the outputs do, per image (larger is better for the attacker)."""
        if self.target == "cls":
            return margin(out["logits"], y)
        seg = 1 - mean_dice(out["mask"], m)
        if self.target == "seg":
            return seg
        return (out["logits"].argmax(1) != y).float() * 2 + seg  # a misclassification outranks any Dice

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor | None, progress: float = 0.0,
                 need_grad: bool = True) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """:meth:`gradient` in pieces of at most ``batch_size`` images, concatenated."""
        b = self.batch_size
        if not b or len(x) <= b:
            return self.gradient(x, y, m, progress, need_grad)
        parts = [self.gradient(x[i:i + b], y[i:i + b], None if m is None else m[i:i + b], progress, need_grad)
                 for i in range(0, len(x), b)]
        out = {k: torch.cat([o[k] for o, _ in parts]) for k in parts[0][0]}
        return out, torch.cat([g for _, g in parts]) if need_grad else None

    # --- the loop ---------------------------------------------------------------------------------
    def iterate(self, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor | None, start: torch.Tensor,
                steps: int, step) -> torch.Tensor:
        """Runs ``steps`` gradient steps from ``start``; gives each image's best iterate.

        ``step(x_adv, grad) -> x_adv`` moves the still-active images; the loop projects the result
        onto the ball and [0, 1] (the L∞ bounds computed once). The model sees the active images in
        pieces of at most ``batch_size`` (:meth:`evaluate`). Against ``cls``, an image is
        dropped once misclassified and its first adversarial kept; an image never misclassified
        keeps its last iterate, which is not scored here (the caller's fp32 verdict pass scores
        it: a forward pass per surviving image saved). Against ``seg`` and ``joint`` every iterate
        is scored and each image keeps its most damaging one.

        Against ``cls``, with :data:`PREDICT_EXITS`, an image whose damage trend over its last two
        iterates says it is misclassified now is first scored without a gradient (:meth:`_exits_now`):
        if it is, it leaves without the backward pass it would have paid for in the full pass.
        """
        n = len(x)
        best, best_score = x.clone(), torch.full((n,), -math.inf, device=x.device)  # best_score: seg, joint
        lo, hi = self.linf_box(x) if self.norm == "linf" else (None, None)
        # the images still attacked, compacted (rows leave only when images do): their index in the batch,
        # iterate, label, mask, and the clean image (L2) or the L∞ bounds
        act = {"i": torch.arange(n, device=x.device), "xa": start.detach().clone(), "y": y, "m": m,
               "x": x if lo is None else None, "lo": lo, "hi": hi}
        # each image's damage at its two latest iterates (cls, PREDICT_EXITS): its trend foretells an exit
        trend = torch.full((2, n), math.nan, device=x.device) if self.target == "cls" and PREDICT_EXITS else None
        for t in range(steps + 1):
            last, progress = t == steps, t / max(steps, 1)
            if trend is not None and not last and len(act["i"]):
                self._exits_now(act, trend, best, progress)
            i, xa = act["i"], act["xa"]
            if not len(i):
                break
            if last and self.target == "cls":
                best[i] = xa
                break
            out, grad = self.evaluate(xa, act["y"], act["m"], progress, need_grad=not last)
            score = self.damage(out, act["y"], act["m"]).float()
            if self.target == "cls":  # AutoAttack's early exit: a fooled image is done, this iterate its result
                if trend is not None:
                    trend[0, i], trend[1, i] = trend[1, i], score
                fooled = score > 0
                if fooled.any():
                    best[i[fooled]] = xa[fooled]
                    _compact(act, ~fooled)
                    grad = grad[~fooled]
            else:  # every iterate scored: each image keeps its most damaging
                better = score > best_score[i]
                best[i[better]] = xa[better]
                best_score[i[better]] = score[better]
            if last:
                break
            if len(act["i"]):
                moved = step(act["xa"], grad)
                # lo ≤ hi: one clamp is the projection onto the L∞ bounds
                act["xa"] = self.project(moved, act["x"]) if lo is None else torch.clamp(moved, act["lo"], act["hi"])
        self._box = None  # not kept past the attack: it holds the images
        return best

    def _exits_now(self, act: dict, trend: torch.Tensor, best: torch.Tensor, progress: float) -> None:
        """Scores, without a gradient, the active images whose damage extrapolated linearly from their
        last two iterates is positive (a misclassification predicted); those misclassified indeed are
        done, their iterate kept as the full pass would have kept it, and leave ``act``.

        The full pass spends a backward pass on an image it then finds misclassified; this probe
        spends a forward pass where the prediction is wrong."""
        i = act["i"]
        guess = 2 * trend[1, i] - trend[0, i]  # NaN (not two iterates yet) is never > 0
        picked = (guess > 0).nonzero().flatten()
        if not len(picked):
            return
        xa, y = act["xa"][picked], act["y"][picked]
        out, _ = self.evaluate(xa, y, None, progress, need_grad=False)
        score = self.damage(out, y, None).float()
        fooled = score > 0
        if fooled.any():
            best[i[picked[fooled]]] = xa[fooled]
            keep = torch.ones(len(i), dtype=torch.bool, device=i.device)
            keep[picked[fooled]] = False
            _compact(act, keep)

    # --- exact projections ------------------------------------------------------------------------
    def linf_box(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gives the bounds of the L∞ ball ∩ [0, 1] around ``x`` (see :func:`linf_bounds`), computed once
        for a batch of images: the random start and the loop that follows share them."""
        if self._box is None or self._box[0] is not x or self._box[1] != x._version:
            self._box = (x, x._version, linf_bounds(x, self.eps))
        return self._box[2]

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Gives ``x_adv`` moved into the ball of radius eps around ``x`` and into [0, 1] (:func:`project`)."""
        return project(x_adv, x, self.norm, self.eps)

    def random_start(self, x: torch.Tensor) -> torch.Tensor:
        """Gives a uniform draw in the L∞ ball, or a random direction at a uniform radius for L2."""
        # drawn in the logical (NCHW) order whatever x's memory layout, so that a seed gives the same
        # start for channels-last and contiguous images (and for fp32 and bf16 crafting)
        if self.norm == "linf":
            lo, hi = self.linf_box(x)
            noise = torch.empty(x.shape, dtype=x.dtype, device=x.device).uniform_(-self.eps, self.eps)
            return torch.clamp(x + noise, lo, hi)
        d = torch.randn(x.shape, dtype=x.dtype, device=x.device)
        r = torch.rand(len(x), 1, 1, 1, device=x.device) * self.eps
        return self.project(x + _unit(d) * r, x)
