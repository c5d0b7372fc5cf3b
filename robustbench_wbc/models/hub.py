"""Trained models on disk: safetensors weights + a JSON card, trained on first use.

Nothing is downloaded and nothing is unpickled: weights are safetensors, checked against the
sha256 on the card before they are read. A checkpoint is written to a temporary directory and
moved into place, so a killed run never leaves half a checkpoint; a lock makes concurrent
processes train a model once.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from robustbench_wbc import paths
from robustbench_wbc._version import __version__
from robustbench_wbc.data.synth import CLASSES, GENERATOR_VERSION
from robustbench_wbc.models.card import CardError, ModelCard
from robustbench_wbc.models.networks import IMAGENET_MEAN, IMAGENET_STD
from robustbench_wbc.models.train import ProgressFn, train_model
from robustbench_wbc.models.zoo import MODELS, ModelEntry

logger = logging.getLogger(__name__)

WEIGHTS, CARD = "model.safetensors", "card.json"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, tampered with or does not fit its model."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict[str, str]:
    """Gives the versions that decide a number: this suite, torch, timm, torchattacks."""
    import timm
    import torchattacks

    return {"robustbench_wbc": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "torchattacks": torchattacks.__version__}


@contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def save_checkpoint(directory: Path, model: torch.nn.Module, card_fields: dict) -> ModelCard:
    """Writes weights and card atomically into ``directory``; gives the card written."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS))
        card = ModelCard(**card_fields, weights_sha256=sha256_file(tmp / WEIGHTS)).validate()
        (tmp / CARD).write_text(card.to_json())
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return card


def read_card(model_id: str) -> ModelCard | None:
    """Gives the card of a trained model in the cache, or ``None`` if it is not trained yet."""
    path = paths.checkpoint_dir(model_id) / CARD
    if not path.exists():
        return None
    try:
        return ModelCard.read(path)
    except CardError as exc:
        raise CheckpointError(f"{exc}. {_fix(model_id)}") from exc


def _fix(model_id: str) -> str:
    return (f"Delete {paths.checkpoint_dir(model_id)} to retrain it, "
            f"or run `wbc-robust models train {model_id} --force`.")


def load_checkpoint(directory: Path, entry: ModelEntry) -> tuple[torch.nn.Module, ModelCard]:
    """Builds ``entry``'s model and loads the checked weights from ``directory``."""
    directory = Path(directory)
    fix = _fix(entry.id)
    try:
        card = ModelCard.read(directory / CARD)
    except CardError as exc:
        raise CheckpointError(f"{exc}. {fix}") from exc
    if card.id != entry.id or card.family != entry.family:
        raise CheckpointError(f"{directory}: card is for {card.id!r} ({card.family}), "
                              f"not {entry.id!r} ({entry.family}). {fix}")
    weights = directory / WEIGHTS
    if not weights.exists():
        raise CheckpointError(f"{weights} is missing. {fix}")
    digest = sha256_file(weights)
    if digest != card.weights_sha256:
        raise CheckpointError(f"{weights} does not match its card's sha256 (corrupt or tampered). {fix}")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights} cannot be read as safetensors: {exc}. {fix}") from exc
    model = entry.builder()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights} does not fit {entry.id!r}: {exc}. {fix}") from exc
    model.eval()
    return model, card


def train_and_save(entry: ModelEntry, progress: ProgressFn | None = None, device: torch.device | str = "cpu"
                   ) -> ModelCard:
    """Trains ``entry`` by its recipe (on ``device``) and stores it in the cache; gives its card."""
    model, val_metrics, facts = train_model(entry, progress, device)
    fields = dict(
        id=entry.id, family=entry.family, encoder=entry.encoder, recipe=entry.recipe_spec.name,
        seed=entry.seed, classes=CLASSES,
        normalization={"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        params=sum(p.numel() for p in model.parameters()),
        val_metrics={k: round(v, 6) for k, v in val_metrics.items()},
        versions=versions(), **facts,
    )
    fields["data"] = {**fields["data"], "generator": GENERATOR_VERSION}
    return save_checkpoint(paths.checkpoint_dir(entry.id), model, fields)


def load_model(model_id: str, train: bool = True, force: bool = False,
               progress: ProgressFn | None = None, device: torch.device | str = "cpu"
               ) -> tuple[torch.nn.Module, ModelCard]:
    """Gives ``(model in eval mode, card)`` for a registered model, training it on first use.

    Args:
        model_id: a registered id (``wbc-robust models list``).
        train: train the model if it is not in the cache (else raise :class:`CheckpointError`).
        force: retrain even if a checkpoint exists.
        progress: called as ``progress(step, total, val_metrics)`` during training.
        device: where to train it (the model comes back on the CPU, as loaded from the cache).
    """
    entry = MODELS.get(model_id)
    directory = paths.checkpoint_dir(model_id)
    with _lock(directory.parent / f".{model_id}.lock"):
        if force or not (directory / CARD).exists():
            if not train:
                raise CheckpointError(f"{model_id!r} is not trained yet (no {directory / CARD}). "
                                      f"Run `wbc-robust models train {model_id}`.")
            logger.info("training %s (recipe %s)", model_id, entry.recipe)
            train_and_save(entry, progress, device)
        return load_checkpoint(directory, entry)
