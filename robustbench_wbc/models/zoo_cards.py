"""The zoo's reviewed cards: one YAML per registered model in the top-level ``models/`` folder.

A card has two parts. What the registry and the builder decide (family, encoder, recipe, seed,
training data and its hash, input size and normalisation, parameters, FLOPs) is derived here and
checked against the committed file by the tests. What training measured (time, validation metrics,
the checkpoint's sha256) is copied from the trained checkpoint's card when there is one, with the
versions and date that produced it; it is ``null`` for a model not trained where the cards were written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from robustbench_wbc.data.synth import GENERATOR_VERSION
from robustbench_wbc.models.card import CardError, ModelCard, read_mapping
from robustbench_wbc.models.networks import FAMILIES
from robustbench_wbc.models.train import training_data_card
from robustbench_wbc.models.zoo import MODELS, TRACKS, list_models

HEADER = "# Written from the model registry by `wbc-robust models cards --out models`; do not edit.\n"
NORM_NAMES = {"BatchNorm2d": "batchnorm", "GroupNorm": "groupnorm", "LayerNorm": "layernorm",
              "LayerNorm2d": "layernorm"}


@dataclass(frozen=True)
class ZooCard:
    """What a zoo model is (``static``) and, once trained, what training measured (``trained``)."""

    id: str
    family: str
    encoder: str
    description: str
    track: str
    seed: int
    recipe: dict
    data: dict  # split, generator, images, the data card's digest, sha256 of the labels and masks
    input_size: int
    input_normalization: dict  # mean and std, applied by the model's first layer
    norm_layers: list[str]
    params: int
    flops_per_image: int  # torch's FlopCounterMode: 2 per multiply-add, at input_size
    trained: dict | None = None  # train_time_s, train_steps, val_metrics, weights_sha256, versions

    def validate(self) -> ZooCard:
        if self.family not in FAMILIES:
            raise CardError(f"zoo card {self.id!r}: family {self.family!r} not in {FAMILIES}")
        if self.track not in TRACKS:
            raise CardError(f"zoo card {self.id!r}: track {self.track!r} not in {TRACKS}")
        for name in ("seed", "input_size", "params", "flops_per_image"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise CardError(f"zoo card {self.id!r}: {name} must be a non-negative integer, got {v!r}")
        if self.trained is not None:
            sha = self.trained.get("weights_sha256")
            if not (isinstance(sha, str) and len(sha) == 64):
                raise CardError(f"zoo card {self.id!r}: trained.weights_sha256 must be a sha256 hex digest")
        return self

    def static(self) -> dict:
        """The part the registry decides (everything but ``trained``)."""
        d = asdict(self)
        d.pop("trained")
        return d

    def to_yaml(self) -> str:
        return HEADER + yaml.safe_dump(asdict(self), sort_keys=False, allow_unicode=True)

    @classmethod
    def read(cls, path: Path) -> ZooCard:
        """Reads and validates a YAML zoo card."""
        d = read_mapping(path, "zoo card", yaml.safe_load, yaml.YAMLError)
        known = {f.name for f in fields(cls)}
        if set(d) - known:
            raise CardError(f"zoo card {path} has unknown fields {sorted(set(d) - known)}")
        try:
            return cls(**d).validate()
        except TypeError as exc:
            raise CardError(f"zoo card {path} is incomplete: {exc}") from exc


def flops_per_image(model: torch.nn.Module, size: int) -> int:
    """Counts the FLOPs of one forward pass on one ``size``×``size`` image (2 per multiply-add)."""
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return int(counter.get_total_flops())


def norm_layers(model: torch.nn.Module) -> list[str]:
    """Names the kinds of normalisation layer in ``model`` (``batchnorm``, ``groupnorm``, ``layernorm``)."""
    return sorted({NORM_NAMES[type(m).__name__] for m in model.modules() if type(m).__name__ in NORM_NAMES})


def zoo_card(model_id: str, trained: ModelCard | None = None) -> ZooCard:
    """Derives ``model_id``'s card from the registry; ``trained`` (a checkpoint's card) adds what training measured."""
    e = MODELS.get(model_id)
    r = e.recipe_spec
    model = e.builder()
    found = training_data_card(r)
    # the pixels' sha256 is left out: it may differ between torch thread counts (see content_hash)
    data = {"split": found["split"], "generator": GENERATOR_VERSION, "images": found["images"],
            "card": found["card"], "labels_sha256": found["labels_sha256"]}
    measured = None
    if trained is not None:
        measured = {"train_time_s": trained.train_time_s, "train_steps": trained.train_steps,
                    "val_metrics": dict(trained.val_metrics), "weights_sha256": trained.weights_sha256,
                    "trained_on_this_data": all(trained.data.get(k) == data[k] for k in ("card", "labels_sha256")),
                    "versions": dict(trained.versions)}
    normalize = getattr(model, "normalize", None)
    return ZooCard(
        id=e.id, family=e.family, encoder=e.encoder, description=e.description, track=e.track, seed=e.seed,
        recipe=asdict(r), data=data, input_size=r.image_size,
        input_normalization={k: [round(v, 6) for v in getattr(normalize, k).flatten().tolist()] for k in ("mean", "std")}
        if normalize is not None else {},
        norm_layers=norm_layers(model), params=sum(p.numel() for p in model.parameters()),
        flops_per_image=flops_per_image(model, r.image_size), trained=measured,
    ).validate()


def zoo_ids() -> list[str]:
    """The models that have a card: every registered model but the tiny test ones, on every track."""
    return list_models()
