"""The model registry, the training recipes, and the default zoo.

``@register_model`` is the single source of truth (as timm's ``register_model``): the decorated
builder's name is the model id, and its arguments say the family, encoder, recipe and seed.
The top-level ``models/`` cards are written from here (``wbc-robust models cards``), never by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from robustbench_wbc.models.networks import WBCNet
from robustbench_wbc.registry import Registry


@dataclass(frozen=True)
class Recipe:
    """A named training protocol.

    The training budget (``steps`` × ``batch_size``) is the same across families of one size,
    so a family that sees fewer images sees them more often, not less compute.
    """

    name: str
    train_images: int  # images taken from the start of ``train_split``
    use_labels: bool  # trains the classification head
    use_masks: bool  # trains the segmentation head
    steps: int
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seg_weight: float = 1.0  # λ: loss = CE(class) + λ·CE(pixels)
    val_images: int = 250
    val_every: int = 50
    patience: int = 4  # evaluations without improvement before stopping early
    image_size: int = 64
    train_split: str = "synth:train"  # ``synth:train-confounded`` for the confounded track


# The mission's protocol: Raabin-WBC has 16,633 double-labelled cells, of which 1,145 have masks
# (a subset 14.5× smaller). SynthWBC keeps that ratio: 1,450 training images, the first 100 masked.
FULL_TRAIN_IMAGES = 1450
MASKED_SUBSET = round(FULL_TRAIN_IMAGES / 14.5)

RECIPES: dict[str, Recipe] = {
    "full": Recipe("full", FULL_TRAIN_IMAGES, use_labels=True, use_masks=False, steps=400),
    "masked-small": Recipe("masked-small", MASKED_SUBSET, use_labels=True, use_masks=True, steps=400),
    # the control: the classifier on the masked subset, so "multitask is better" can be told apart
    # from "it saw different data"
    "cls-small": Recipe("cls-small", MASKED_SUBSET, use_labels=True, use_masks=False, steps=400),
    # the confounded track: the same, on the same cells with each class stained in its own batch
    "full-confounded": Recipe("full-confounded", FULL_TRAIN_IMAGES, use_labels=True, use_masks=False, steps=400,
                              train_split="synth:train-confounded"),
    "masked-small-confounded": Recipe("masked-small-confounded", MASKED_SUBSET, use_labels=True, use_masks=True,
                                      steps=400, train_split="synth:train-confounded"),
    # tiny twins for tests: 32 px, a few steps; same code path
    "tiny-full": Recipe("tiny-full", 60, use_labels=True, use_masks=False, steps=12, batch_size=16,
                        val_images=20, val_every=6, image_size=32),
    "tiny-masked-small": Recipe("tiny-masked-small", 20, use_labels=True, use_masks=True, steps=12,
                                batch_size=16, val_images=20, val_every=6, image_size=32),
}


def recipe_for(name: str, family: str) -> Recipe:
    """Gives the recipe ``name`` as it applies to ``family`` (a U-Net has no labels to use)."""
    r = RECIPES[name]
    if family == "unet":
        return Recipe(**{**r.__dict__, "use_labels": False})
    if family == "classifier":
        return Recipe(**{**r.__dict__, "use_masks": False})
    return r


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder and the facts that go on its card."""

    id: str
    builder: Callable[[], WBCNet]
    family: str
    encoder: str
    recipe: str
    seed: int
    tiny: bool
    description: str
    track: str = "clean"  # "clean" or "confounded" (trained where stain batch predicts the class)

    @property
    def recipe_spec(self) -> Recipe:
        return recipe_for(self.recipe, self.family)


def split_seed(model_id: str) -> tuple[str, int | None]:
    """Splits ``id@SEED`` into ``(id, SEED)``; a plain id gives ``(id, None)``."""
    base, sep, seed = model_id.rpartition("@")
    return (base, int(seed)) if sep and seed.isdigit() else (model_id, None)


def base_id(model_id: str) -> str:
    """Gives the registered id of a (possibly seeded, ``id@SEED``) model id."""
    return split_seed(model_id)[0]


class ModelRegistry(Registry[ModelEntry]):
    """The model registry, where ``id@SEED`` names the same model trained from another seed."""

    def get(self, name: str) -> ModelEntry:
        base, seed = split_seed(name)
        if seed is None:
            return super().get(name)
        return replace(super().get(base), id=f"{base}@{seed}", seed=seed)


def with_seeds(model_ids: list[str], seeds: list[int]) -> list[str]:
    """Gives every model at every seed: its own id at its registered seed, ``id@SEED`` otherwise."""
    out = []
    for mid in model_ids:
        base = base_id(mid)
        own = MODELS.get(base).seed
        out += [base if s == own else f"{base}@{s}" for s in seeds]
    return list(dict.fromkeys(out))


MODELS: ModelRegistry = ModelRegistry("model", group="robustbench_wbc.models", list_command="models list")


TRACKS = ("clean", "confounded")


def register_model(*, family: str, encoder: str, recipe: str, seed: int = 0, tiny: bool = False,
                   track: str = "clean"):
    """Registers the decorated builder as a model whose id is the function's name.

    The builder takes no arguments and returns an untrained :class:`WBCNet` (or any module that
    takes [0,1] images and returns a dict keyed by head).
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; expected one of {sorted(RECIPES)}")
    if track not in TRACKS:
        raise ValueError(f"unknown track {track!r}; expected one of {TRACKS}")

    def deco(fn: Callable[[], WBCNet]) -> Callable[[], WBCNet]:
        doc = (fn.__doc__ or "").strip().splitlines()
        MODELS.add(fn.__name__, ModelEntry(fn.__name__, fn, family, encoder, recipe, seed, tiny,
                                           doc[0] if doc else "", track))
        return fn

    return deco


def list_models(filter: str = "", include_tiny: bool = False, track: str | None = None) -> list[str]:
    """Gives the registered model ids matching ``filter``; tiny test models only when asked.

    ``track`` keeps the models of one track (``clean`` or ``confounded``); ``None`` keeps all.
    """
    return MODELS.list(filter, where=lambda e: (include_tiny or not e.tiny) and track in (None, e.track))


# ---------------------------------------------------------------------------------------------
# Encoders. ResNet-10-T (timm ``resnet10t``: one BasicBlock per stage, deep-tiered stem, average
# down-sampling) at widths 16-128: 0.3 M parameters, sized for 2 CPU cores at 64 px.
RESNET10T_W16 = {"channels": (16, 32, 64, 128), "stem_width": 16}
RESNET10T_W8 = {"channels": (8, 16, 32, 64), "stem_width": 8}
DECODER_W16 = (64, 32, 16, 16)
DECODER_W8 = (32, 16, 8, 8)


def _resnet10t_w16(family: str, norm: str = "batchnorm") -> WBCNet:
    return WBCNet(family, "resnet10t", decoder_channels=DECODER_W16, encoder_kwargs=RESNET10T_W16, norm=norm)


def _resnet10t_w8(family: str) -> WBCNet:
    return WBCNet(family, "resnet10t", decoder_channels=DECODER_W8, encoder_kwargs=RESNET10T_W8)


# --- the default zoo: one model per family on the same encoder ----------------------------------
@register_model(family="classifier", encoder="resnet10t-w16", recipe="full")
def resnet10t_cls() -> WBCNet:
    """Classifier only, trained on the full labelled set (1,450 images, no masks)."""
    return _resnet10t_w16("classifier")


@register_model(family="unet", encoder="resnet10t-w16", recipe="masked-small")
def resnet10t_unet() -> WBCNet:
    """U-Net, segmentation only, trained on the masked subset (100 images)."""
    return _resnet10t_w16("unet")


@register_model(family="multitask", encoder="resnet10t-w16", recipe="masked-small")
def resnet10t_multitask() -> WBCNet:
    """Classification + nucleus/cytoplasm segmentation, trained on the masked subset (100 images)."""
    return _resnet10t_w16("multitask")


@register_model(family="classifier", encoder="resnet10t-w16", recipe="cls-small")
def resnet10t_cls_small() -> WBCNet:
    """Classifier only, on the masked subset's images (100) without their masks: the data control."""
    return _resnet10t_w16("classifier")


# --- the same three families with GroupNorm: normalisation layers are known to drive microscope
# shift (on Raabin-WBC Test-B a ResNet-50 keeps 35 %, its GroupNorm twin 78 %; wbc-benchmark)
@register_model(family="classifier", encoder="resnet10t-w16-gn", recipe="full")
def resnet10t_gn_cls() -> WBCNet:
    """Classifier only, GroupNorm everywhere, on the full labelled set."""
    return _resnet10t_w16("classifier", "groupnorm")


@register_model(family="unet", encoder="resnet10t-w16-gn", recipe="masked-small")
def resnet10t_gn_unet() -> WBCNet:
    """U-Net, GroupNorm everywhere, on the masked subset."""
    return _resnet10t_w16("unet", "groupnorm")


@register_model(family="multitask", encoder="resnet10t-w16-gn", recipe="masked-small")
def resnet10t_gn_multitask() -> WBCNet:
    """Multitask, GroupNorm everywhere, on the masked subset."""
    return _resnet10t_w16("multitask", "groupnorm")


# --- the confounded track: trained where each class was stained in its own batch -------------------
@register_model(family="classifier", encoder="resnet10t-w16", recipe="full-confounded", track="confounded")
def resnet10t_cls_confounded() -> WBCNet:
    """Classifier only, full labelled set, each class stained in its own batch (confounded track)."""
    return _resnet10t_w16("classifier")


@register_model(family="multitask", encoder="resnet10t-w16", recipe="masked-small-confounded", track="confounded")
def resnet10t_multitask_confounded() -> WBCNet:
    """Multitask on the masked subset, each class stained in its own batch (confounded track)."""
    return _resnet10t_w16("multitask")


# --- tiny twins, for tests ------------------------------------------------------------------------
@register_model(family="classifier", encoder="resnet10t-w8", recipe="tiny-full", tiny=True)
def tiny_cls() -> WBCNet:
    """Tiny classifier for tests (32 px, a few steps)."""
    return _resnet10t_w8("classifier")


@register_model(family="unet", encoder="resnet10t-w8", recipe="tiny-masked-small", tiny=True)
def tiny_unet() -> WBCNet:
    """Tiny U-Net for tests (32 px, a few steps)."""
    return _resnet10t_w8("unet")


@register_model(family="multitask", encoder="resnet10t-w8", recipe="tiny-masked-small", tiny=True)
def tiny_multitask() -> WBCNet:
    """Tiny multitask model for tests (32 px, a few steps)."""
    return _resnet10t_w8("multitask")
