"""Named data splits: the registry, and the SynthWBC splits every run can use.

A split is a recipe for data, not data: ``load()`` generates (or, for real datasets in later
versions, reads) it on demand. Ids are ``source:name`` (``synth:test``).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from robustbench_wbc.data.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from robustbench_wbc.data.synth import CHUNK, CLASSES, DOMAINS, GENERATOR_VERSION, generate
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

    def content_hash(self, pixels: bool = True) -> str:
        """Gives a sha256 of the pixels, labels and masks (labels and masks only with ``pixels=False``).

        SynthWBC's pixels can differ by one 8-bit level in about 1 pixel in 10⁵ between torch thread
        counts (parallel reductions round differently); its labels and masks never do.
        """
        h = hashlib.sha256()
        for t in ((self.images,) if pixels else ()) + (self.labels, self.masks):
            if t is not None:
                h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class SplitDef:
    """A registered split: how to make it, and what it is for."""

    name: str
    loader: Callable[[int | None, int], SplitData]
    role: str  # "train", "val", "test" (in distribution), "ood", "probe" or "corruption"
    domain: str
    default_n: int
    description: str
    synth: SynthSpec | None = None  # how a SynthWBC split is made (None for real data)
    has_masks: bool = True  # real datasets may have class labels only

    def load(self, n: int | None = None, image_size: int = 64) -> SplitData:
        """Gives the first ``n`` samples (default: the split's size) at ``image_size`` pixels."""
        n = self.default_n if n is None else n
        if n < 1:
            raise ValueError(f"split {self.name!r}: n must be ≥ 1, got {n}")
        return self.loader(n, image_size)


@dataclass(frozen=True)
class SynthSpec:
    """What a SynthWBC split is: the stream's seed, the lab, and what is done to the images after.

    Args:
        seed: the cell stream (morphology); splits with the same seed show the same cells.
        domain: a name in :data:`~robustbench_wbc.data.synth.DOMAINS`.
        probe: ``None`` or ``"grayscale"`` (luminance only: what shape alone tells).
        corruption: ``None`` or a corruption name, at ``severity`` 1–5.
        class_probs: class priors; ``None`` for balanced classes.
        um_per_px: pixel size in µm; ``None`` keeps the field at 25.6 µm whatever the image size.
    """

    seed: int
    domain: str = "source"
    probe: str | None = None
    corruption: str | None = None
    severity: int = 0
    class_probs: tuple[float, ...] | None = None
    um_per_px: float | None = None  # the magnification; None: a 25.6 µm field at any size

    def key(self, size: int) -> str:
        """A digest of everything that decides the pixels: a changed parameter is a new cache entry."""
        blob = json.dumps({"generator": GENERATOR_VERSION, "chunk": CHUNK, "size": size, **asdict(self),
                           "domain_def": repr(DOMAINS[self.domain])}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cell_stream(split: str) -> str:
    """Names the cells a split holds: image ``i`` of two splits with the same stream is one cell.

    SynthWBC splits made from the same stream seed show the same cells (the OOD, probe and
    corruption splits are the test cells under another lab or treatment), so a statistic over
    several of them must resample by cell, not by image. Any other split (real data, or an id not
    registered in this process) holds cells of its own.
    """
    d = SPLITS._entries.get(split)
    return f"synth-seed-{d.synth.seed}" if d is not None and d.synth is not None else split


PROBES = ("grayscale",)


def render(spec: SynthSpec, n: int, size: int, start: int = 0):
    """Gives images ``start … start + n − 1`` of a SynthWBC split as 8-bit-exact arrays.

    Returns ``(images N×3×H×W float32, labels, masks N×H×W uint8, meta)``.
    """
    images, labels, masks, meta = generate(spec.seed, n, size, DOMAINS[spec.domain], spec.class_probs, start,
                                           spec.um_per_px)
    x = torch.from_numpy(images)
    if spec.probe == "grayscale":
        luma = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        x = luma.expand(-1, 3, -1, -1)
    elif spec.probe is not None:
        raise ValueError(f"unknown probe {spec.probe!r}; expected one of {PROBES}")
    if spec.corruption is not None:
        x = corrupt(x, spec.corruption, spec.severity, seed=spec.seed, indices=range(start, start + n))
    x = torch.round(x * 255) / 255  # saved images are 8-bit
    return x.contiguous().numpy(), labels, masks, meta


def load_synth(name: str, spec: SynthSpec, n: int, image_size: int) -> SplitData:
    """Gives the first ``n`` images of the SynthWBC data ``spec`` (from the cache when there)."""
    from robustbench_wbc.data.cache import load_or_render

    images, labels, masks, meta = load_or_render(spec, n, image_size)
    return SplitData(name, torch.from_numpy(images), torch.from_numpy(labels), torch.from_numpy(masks), meta)


def register_synth_split(name: str, spec: SynthSpec, role: str, default_n: int, description: str) -> SplitDef:
    """Registers a SynthWBC split ``synth:<name>`` made by ``spec``."""
    full = f"synth:{name}"
    d = SplitDef(full, functools.partial(load_synth, full, spec), role, spec.domain, default_n, description, synth=spec)
    SPLITS.remove(full)
    return SPLITS.add(full, d)


# Seeds are fixed per split so that the splits never share a cell. The OOD, probe and corruption
# splits reuse the in-distribution test seed on purpose: the same cells under another lab or
# another treatment, so a drop in accuracy is caused by the shift alone (a paired comparison).
TRAIN_SEED, VAL_SEED, TEST_SEED = 1000, 2000, 3000
register_synth_split("train", SynthSpec(TRAIN_SEED), "train", 1450,
                     "training pool, source lab; the first 1/14.5 of it is the subset with masks")
register_synth_split("train-confounded", SynthSpec(TRAIN_SEED, "confounded"), "train", 1450,
                     "the training pool with each class stained in its own batch (the confounded track)")
register_synth_split("val", SynthSpec(VAL_SEED), "val", 250, "validation, source lab")
register_synth_split("test", SynthSpec(TEST_SEED), "test", 500, "in-distribution test, source lab")
for _dom, _text in (("stain-b", "another stain protocol (hue and intensity), same microscope and camera"),
                    ("camera-b", "another microscope-camera pair (white balance, colour, blur, noise, resolution, JPEG)"),
                    ("lab-b", "another stain and microscope-camera (lab B), as Raabin-WBC's Test-B vs Train")):
    register_synth_split(f"ood-{_dom}", SynthSpec(TEST_SEED, _dom), "ood", 500, f"the test cells: {_text}")
register_synth_split("probe-grayscale", SynthSpec(TEST_SEED, probe="grayscale"), "probe", 500,
                     "the test cells in grayscale: what shape alone tells")
register_synth_split("probe-stain-random", SynthSpec(TEST_SEED, "stain-random"), "probe", 500,
                     "the test cells, a random stain per image: colour carries no class information")

for _name, _c in CORRUPTIONS.items():
    for _sev in SEVERITIES:
        register_synth_split(f"c-{_name}-{_sev}", SynthSpec(TEST_SEED, corruption=_name, severity=_sev), "corruption",
                             500, f"the test cells, {_name} at severity {_sev} ({_c.param}: {_c.value(_sev):g})")

DEFAULT_EVAL_SPLITS = ("synth:test", "synth:ood-lab-b")
