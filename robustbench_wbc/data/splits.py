"""Named data splits: the registry, and the SynthWBC splits every run can use.

A split is a recipe for data, not data: ``load()`` generates (or, for real datasets in later
versions, reads) it on demand. Ids are ``source:name`` (``synth:test``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from robustbench_wbc.data.synth import CLASSES, LAB_B, SOURCE_LAB, Domain, generate
from robustbench_wbc.registry import Registry

SPLITS: Registry[SplitDef] = Registry("split", list_command="splits list")


@dataclass
class SplitData:
    """Loaded data of one split: images in [0,1] (N×3×H×W), labels, masks (or ``None``), meta."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None
    meta: list[dict] = field(default_factory=list)
    classes: tuple[str, ...] = CLASSES

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, n: int | None) -> SplitData:
        """Gives the first ``n`` samples (every prefix of a SynthWBC split is class-balanced)."""
        if n is None or n >= len(self):
            return self
        return SplitData(self.name, self.images[:n], self.labels[:n],
                         None if self.masks is None else self.masks[:n], self.meta[:n], self.classes)

    def batches(self, batch_size: int):
        """Yields ``(images, labels, masks or None)`` batches in order."""
        for i in range(0, len(self), batch_size):
            sl = slice(i, i + batch_size)
            yield self.images[sl], self.labels[sl], None if self.masks is None else self.masks[sl]

    def content_hash(self) -> str:
        """Gives a sha256 of the pixels, labels and masks: what a model card records."""
        h = hashlib.sha256()
        for t in (self.images, self.labels, self.masks):
            if t is not None:
                h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class SplitDef:
    """A registered split: how to make it, and what it is for."""

    name: str
    loader: Callable[[int | None, int], SplitData]
    role: str  # "train", "val", "test" (in distribution) or "ood"
    domain: str
    default_n: int
    description: str

    def load(self, n: int | None = None, image_size: int = 64) -> SplitData:
        """Gives the first ``n`` samples (default: the split's size) at ``image_size`` pixels."""
        n = self.default_n if n is None else n
        if n < 1:
            raise ValueError(f"split {self.name!r}: n must be ≥ 1, got {n}")
        return self.loader(n, image_size)


def _synth_loader(name: str, seed: int, domain: Domain) -> Callable[[int | None, int], SplitData]:
    def load(n: int, image_size: int) -> SplitData:
        images, labels, masks, meta = generate(seed, n, image_size, domain)
        return SplitData(name, torch.from_numpy(images), torch.from_numpy(labels),
                         torch.from_numpy(masks), meta)
    return load


def register_synth_split(name: str, seed: int, role: str, domain: Domain, default_n: int,
                         description: str) -> SplitDef:
    """Registers a SynthWBC split ``synth:<name>`` generated from ``seed`` under ``domain``."""
    full = f"synth:{name}"
    return SPLITS.add(full, SplitDef(full, _synth_loader(full, seed, domain), role, domain.name,
                                     default_n, description))


# Seeds are fixed per split so that the splits never share a cell. The OOD test split reuses the
# in-distribution test seed on purpose: the same cells under another lab, so a drop in accuracy
# is caused by the shift alone (a paired comparison), not by other cells.
TRAIN_SEED, VAL_SEED, TEST_SEED = 1000, 2000, 3000
register_synth_split("train", TRAIN_SEED, "train", SOURCE_LAB, 1450,
                     "training pool, source lab; the first 1/14.5 of it is the subset with masks")
register_synth_split("val", VAL_SEED, "val", SOURCE_LAB, 250, "validation, source lab")
register_synth_split("test", TEST_SEED, "test", SOURCE_LAB, 500, "in-distribution test, source lab")
register_synth_split("ood-lab-b", TEST_SEED, "ood", LAB_B, 500,
                     "the test cells under another stain protocol and microscope-camera (lab B)")

DEFAULT_EVAL_SPLITS = ("synth:test", "synth:ood-lab-b")

