"""Benchmarking a model that is not in the zoo: any ``torch.nn.Module`` taking [0, 1] images.

As RobustBench's ``benchmark``: hand over a module, get the tidy table. The model's family is
read from what it returns on a probe batch, a card is written for it, and its cells go through
the same ``plan`` → ``evaluate_cell`` → :class:`ResultStore` path as ``run`` — so its numbers,
threat-model checks and rows are those of the zoo's models.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from robustbench_wbc.bench.runner import LocalExecutor, execute, plan
from robustbench_wbc.bench.store import ResultStore
from robustbench_wbc.data.splits import DEFAULT_EVAL_SPLITS
from robustbench_wbc.data.synth import CLASSES
from robustbench_wbc.models.card import ModelCard
from robustbench_wbc.models.hub import versions
from robustbench_wbc.models.networks import HEADS
from robustbench_wbc.models.zoo import MODELS, split_seed

logger = logging.getLogger(__name__)

SEG_CLASSES = 3  # background, cytoplasm, nucleus
PROBE_BATCH = 2
EXPECTED = (f"a logits tensor of shape (N, {len(CLASSES)}), or a dict with 'logits' (N, {len(CLASSES)}) "
            f"and/or 'mask' (N, {SEG_CLASSES}, H, W)")


class HeadDict(nn.Module):
    """Gives a model's outputs as the dict of heads the bench expects: the reverse of ``HeadView``.

    A tensor becomes ``{"logits": tensor}``; a dict keeps only ``heads`` (extra outputs, such as
    features, are dropped). The wrapped model is a submodule, so ``eval()`` reaches it.
    """

    def __init__(self, model: nn.Module, heads: Sequence[str] = ("logits",)) -> None:
        super().__init__()
        self.model, self.heads = model, tuple(heads)
        self.tensor_out: bool | None = None  # whether the model returns a bare tensor, seen on the first call
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(x)
        if self.tensor_out is None:  # a plain bool afterwards, so that torch.fx can trace this (attacks/fusion.py)
            self.tensor_out = isinstance(out, torch.Tensor)
        if self.tensor_out:
            return {"logits": out}
        return {k: out[k] for k in self.heads}


def _describe(out: object) -> str:
    if isinstance(out, torch.Tensor):
        return f"a {out.dtype} tensor of shape {tuple(out.shape)}"
    if isinstance(out, Mapping):
        parts = [f"{k!r}: {_describe(v)}" for k, v in out.items()]
        return "a dict {" + ", ".join(parts) + "}"
    return f"a {type(out).__name__}"


def _check_head(head: str, v: object, n: int, size: int, out: object) -> None:
    got = f"the model returned {_describe(out)}; expected {EXPECTED}"
    if not isinstance(v, torch.Tensor) or not v.dtype.is_floating_point:
        raise TypeError(f"head {head!r} must be a float tensor: {got}")
    if head == "logits":
        if v.ndim != 2 or v.shape[0] != n:
            raise ValueError(f"'logits' must have shape (N, {len(CLASSES)}) for N={n} images: {got}")
        if v.shape[1] != len(CLASSES):
            raise ValueError(f"'logits' has {v.shape[1]} classes, expected {len(CLASSES)} "
                             f"(one per class of robustbench_wbc.data.CLASSES: {', '.join(CLASSES)}): {got}")
    elif v.ndim != 4 or tuple(v.shape) != (n, SEG_CLASSES, size, size):
        raise ValueError(f"'mask' must have shape ({n}, {SEG_CLASSES}, {size}, {size}): per-pixel logits of "
                         f"background, cytoplasm and nucleus at the input's size; {got}")
    if not torch.isfinite(v).all():
        raise ValueError(f"head {head!r} returned non-finite values on a probe batch of [0, 1] images")


def infer_family(model: nn.Module, image_size: int = 64) -> str:
    """Gives the family (``classifier``, ``unet``, ``multitask``) from what ``model`` returns.

    The model is run, in eval mode and without gradients, on a probe batch of random [0, 1]
    images (N×3×``image_size``×``image_size``); its outputs are checked as the bench will score
    them. Raises :class:`TypeError` or :class:`ValueError` naming what came back and what is
    expected. The caller sets (and restores) the model's mode.
    """
    gen = torch.Generator().manual_seed(0)
    probe = torch.rand(PROBE_BATCH, 3, image_size, image_size, generator=gen)
    try:
        with torch.no_grad():
            out = model(probe)
    except Exception as exc:
        raise TypeError(f"the model failed on a probe batch of [0, 1] images of shape {tuple(probe.shape)} "
                        f"(float32, CPU): {type(exc).__name__}: {exc}") from exc
    if isinstance(out, torch.Tensor):
        _check_head("logits", out, PROBE_BATCH, image_size, out)
        return "classifier"
    if not isinstance(out, Mapping):
        raise TypeError(f"the model returned {_describe(out)}; expected {EXPECTED}")
    heads = tuple(h for h in ("logits", "mask") if h in out)
    if not heads:
        raise ValueError(f"the model returned {_describe(out)}, with neither 'logits' nor 'mask'; expected {EXPECTED}")
    extra = sorted(str(k) for k in out if k not in heads)
    if extra:
        logger.warning("the model's outputs %s are not scored (only 'logits' and 'mask' are)", extra)
    for h in heads:
        _check_head(h, out[h], PROBE_BATCH, image_size, out)
    return next(f for f, h in HEADS.items() if h == heads)


def state_dict_sha256(model: nn.Module) -> str:
    """Gives a sha256 of the model's state dict: every entry's name, dtype, shape and bytes, in order.

    Deterministic for the same weights; any change to a parameter or buffer changes it (and so
    the ids of the model's cells: stale results are never reused).
    """
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:  # a module's extra state
            h.update(repr(v).encode())
    return h.hexdigest()


def custom_card(model: nn.Module, name: str, family: str, image_size: int,
                normalization: dict[str, list[float]] | None = None) -> ModelCard:
    """Gives the (validated) card of an external model: recipe and encoder ``custom``, no training facts."""
    return ModelCard(
        id=name, family=family, encoder="custom", recipe="custom", seed=0, image_size=image_size,
        classes=tuple(CLASSES), normalization=dict(normalization or {}), labelled_images=0, masked_images=0,
        data={"split": "external"}, params=sum(p.numel() for p in model.parameters()),
        weights_sha256=state_dict_sha256(model), versions=versions(),
    ).validate()


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Puts every submodule in eval mode, and restores each one's own mode afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _names(value: str | Sequence[str], what: str) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    items = [s.strip() for s in items if s.strip()]
    if not items:
        raise ValueError(f"no {what} given")
    return items


def _check_model(model: object, name: object, image_size: object) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"benchmark() takes a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if split_seed(name)[1] is not None:
        raise ValueError(f"name {name!r} ends in @SEED, which names a zoo model trained from another seed; "
                         f"choose another name")
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 8:
        raise ValueError(f"image_size must be an integer ≥ 8, got {image_size!r}")
    devices = {t.device.type for t in [*model.parameters(), *model.buffers()]}
    if devices - {"cpu"}:
        raise ValueError(f"the bench runs on the CPU, but the model has tensors on {sorted(devices)}; "
                         f"pass model.cpu()")


def benchmark(model: nn.Module, *, name: str = "custom", splits: str | Sequence[str] = DEFAULT_EVAL_SPLITS,
              attacks: str | Sequence[str] = ("pgd",), eps: float | Sequence[float] | None = None,
              n_images: int | None = 256, image_size: int = 64, seed: int = 0, out: str | Path | None = None,
              normalization: dict[str, list[float]] | None = None) -> pd.DataFrame:
    """Benchmarks any module that takes [0, 1] images, as ``run`` benchmarks the zoo; gives the tidy table.

    The model takes N×3×``image_size``×``image_size`` images in [0, 1] (normalisation is its own
    business) and returns either a logits tensor (N×5, the classes of ``CLASSES``) or a dict with
    ``"logits"`` (N×5) and/or ``"mask"`` (N×3×H×W logits of background, cytoplasm, nucleus). What it
    returns on a probe batch says its family: logits only → classifier, mask only → U-Net, both →
    multitask; anything else raises :class:`TypeError` or :class:`ValueError` saying what came back.

    Every cell (clean, then each attack × eps × head) is evaluated as in ``run``: each adversarial
    example is checked against the threat model, a failing cell is stored with status ``failed``
    or ``invalid`` instead of raising. The model is evaluated in eval mode; its own mode (and each
    submodule's) is restored afterwards.

    Example::

        import torch
        from torch import nn
        import robustbench_wbc as rw

        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(8, 5))
        table = rw.benchmark(net, name="my_cnn", splits=["synth:test"], attacks=["fgsm"],
                             eps=[2 / 255], n_images=16, image_size=32)
        print(table.pivot_table(index=["split", "attack", "eps"], columns="metric", values="value"))

    Args:
        model: the module to evaluate (on the CPU).
        name: the model's name in the table (``model`` column) and on its card.
        splits: split ids (see ``wbc-robust splits list``), a list or a comma-separated string.
        attacks: attack ids (see ``wbc-robust attacks list``).
        eps: the budgets; ``None`` gives each attack's default budgets.
        n_images: images per split (at most the split's size); ``None`` for the whole split.
        image_size: the side of the images the model is given.
        seed: the attacks' seed.
        out: a result store directory to write into (cells already done there are reused, as
            in ``run``); ``None`` uses a temporary directory, removed afterwards.
        normalization: recorded on the card, e.g. ``{"mean": [...], "std": [...]}``; not applied.

    Returns:
        The tidy rows (one per cell × metric, the columns of ``run``) of this model's cells.
    """
    _check_model(model, name, image_size)
    split_ids, attack_ids = _names(splits, "split"), _names(attacks, "attack")
    eps_list = None if eps is None else ([float(eps)] if isinstance(eps, (int, float)) else [float(e) for e in eps])
    if name in MODELS:
        logger.warning("%r is also a zoo model's id: the rows of this model carry the same name", name)
    with _eval_mode(model):
        family = infer_family(model, image_size)
        card = custom_card(model, name, family, image_size, normalization)
        wrapped = HeadDict(model, HEADS[family]).eval()
        cells = plan([name], split_ids, attack_ids, eps_list, n_images, seed, {name: card})
        if not cells:
            raise ValueError(f"nothing to evaluate: a {family} is scored on masks, and none of {split_ids} has them")
        with (nullcontext(out) if out is not None else tempfile.TemporaryDirectory(prefix="wbc-bench-")) as root:
            store = ResultStore(root)
            executor = LocalExecutor()
            executor.ctx.models[name] = (wrapped, card)
            summary = execute(store, cells, executor)
            table = store.table()
    if summary.failed:
        logger.warning("%d of %d cells did not finish ok; see the status and reason columns", len(summary.failed),
                       summary.planned - summary.skipped)
    ids = {c.id for c in cells}
    return table[table["cell_id"].isin(ids)].reset_index(drop=True)
