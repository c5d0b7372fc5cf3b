"""Model cards: typed, validated descriptions of a trained model (what, how, on what, how well)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from robustbench_wbc.models.networks import FAMILIES


class CardError(ValueError):
    """A model card that is missing, unreadable or inconsistent."""


def read_mapping(path: Path, what: str, loads: Callable[[str], object], errors: type[Exception]) -> dict:
    """Reads ``path`` with ``loads`` (JSON, YAML) into a dict; anything else is a :class:`CardError` naming it."""
    try:
        d = loads(Path(path).read_text())
    except (OSError, errors) as exc:
        raise CardError(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(d, dict):
        raise CardError(f"{what} {path} is not a mapping")
    return d


@dataclass(frozen=True)
class ModelCard:
    """What a checkpoint is. Numbers stay numbers; ``validate`` runs on load."""

    id: str
    family: str
    encoder: str
    recipe: str
    seed: int
    image_size: int
    classes: tuple[str, ...]
    normalization: dict[str, list[float]]
    labelled_images: int  # training images whose class label was used
    masked_images: int  # training images whose mask was used
    data: dict  # split, generator version, data card digest, images, sha256 of pixels and of labels+masks
    params: int
    weights_sha256: str
    val_metrics: dict[str, float] = field(default_factory=dict)
    train_steps: int = 0
    train_time_s: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)

    def validate(self) -> ModelCard:
        """Checks types and values; gives the card back or raises :class:`CardError`."""
        if self.family not in FAMILIES:
            raise CardError(f"card {self.id!r}: family {self.family!r} not in {FAMILIES}")
        for name in ("seed", "image_size", "labelled_images", "masked_images", "params", "train_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise CardError(f"card {self.id!r}: {name} must be a non-negative integer, got {v!r}")
        if not (isinstance(self.weights_sha256, str) and len(self.weights_sha256) == 64):
            raise CardError(f"card {self.id!r}: weights_sha256 must be a sha256 hex digest")
        for k, v in self.val_metrics.items():
            if not isinstance(v, (int, float)):
                raise CardError(f"card {self.id!r}: val metric {k!r} must be a number, got {v!r}")
        return self

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> ModelCard:
        known = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.name not in d]
        unknown = sorted(set(d) - known)
        if unknown:
            raise CardError(f"card has unknown fields {unknown}")
        try:
            card = cls(**{**d, "classes": tuple(d["classes"])})
        except (KeyError, TypeError) as exc:
            raise CardError(f"card is incomplete ({exc}); missing fields: {missing}") from exc
        return card.validate()

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        """Reads and validates a JSON card."""
        d = read_mapping(path, "model card", json.loads, json.JSONDecodeError)
        try:
            return cls.from_dict(d)
        except CardError as exc:
            raise CardError(f"{path}: {exc}") from exc
