"""The model registry, the training recipes, and the default zoo.

``@register_model`` is the single source of truth (as timm's ``register_model``): the decorated
builder's name is the model id, and its arguments say the family, encoder, recipe and seed.
The top-level ``models/`` cards are written from here (``wbc-robust models cards``), never by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from robustbench_wbc.models.networks import WBCNet
from robustbench_wbc.paths import PROFILE_ENV, profile_name
from robustbench_wbc.registry import Registry

ADV_TRAINING = ("", "fgsm-rs")


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
    adv_train: str = ""  # "fgsm-rs": adversarial training (Wong, Rice & Kolter 2020), else none
    adv_eps: float = 0.0  # its L∞ budget

    def __post_init__(self) -> None:
        if self.adv_train not in ADV_TRAINING:
            raise ValueError(f"recipe {self.name!r}: unknown adv_train {self.adv_train!r}; expected one of {ADV_TRAINING}")
        if bool(self.adv_train) != (self.adv_eps > 0):
            raise ValueError(f"recipe {self.name!r}: adv_eps must be > 0 exactly when adv_train is set")


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
    # adversarial training at a small budget: against a standard-trained model every attack reaches
    # 0 %, and a comparison of families then says nothing. FGSM with a random start, step 1.25·eps
    # (Wong, Rice & Kolter 2020, "Fast is better than free"); the multitask model's perturbation
    # climbs its whole training loss, classification + λ·segmentation (Mao et al. 2020).
    "full-at": Recipe("full-at", FULL_TRAIN_IMAGES, use_labels=True, use_masks=False, steps=400,
                      adv_train="fgsm-rs", adv_eps=2 / 255),
    "cls-small-at": Recipe("cls-small-at", MASKED_SUBSET, use_labels=True, use_masks=False, steps=400,
                           adv_train="fgsm-rs", adv_eps=2 / 255),
    "masked-small-at": Recipe("masked-small-at", MASKED_SUBSET, use_labels=True, use_masks=True, steps=400,
                              adv_train="fgsm-rs", adv_eps=2 / 255),
    # tiny twins for tests: 32 px, a few steps; same code path
    "tiny-full": Recipe("tiny-full", 60, use_labels=True, use_masks=False, steps=12, batch_size=16,
                        val_images=20, val_every=6, image_size=32),
    "tiny-masked-small": Recipe("tiny-masked-small", 20, use_labels=True, use_masks=True, steps=12,
                                batch_size=16, val_images=20, val_every=6, image_size=32),
    "tiny-masked-small-at": Recipe("tiny-masked-small-at", 20, use_labels=True, use_masks=True, steps=12,
                                   batch_size=16, val_images=20, val_every=6, image_size=32,
                                   adv_train="fgsm-rs", adv_eps=2 / 255),
}

# the seg-loss weight sweep (the ablation track): λ in loss = CE(class) + λ·CE(pixels); λ = 1 is
# ``masked-small`` itself
SEG_WEIGHTS = (0.1, 0.3, 3.0, 10.0)
for _lam in SEG_WEIGHTS:
    RECIPES[f"masked-small-lam{_lam:g}"] = replace(RECIPES["masked-small"], name=f"masked-small-lam{_lam:g}",
                                                  seg_weight=_lam)


def adversarially_trained(recipe: str) -> bool | None:
    """Says whether the recipe named ``recipe`` (as a result table records it, ``full+paper``
    included) trains adversarially; ``None`` for a name this version does not know."""
    r = RECIPES.get(str(recipe).split("+", 1)[0])
    return None if r is None else bool(r.adv_train)


@dataclass(frozen=True)
class Profile:
    """How big the zoo's training is: ``default`` fits 2 CPU cores in minutes; ``paper`` is larger.

    A profile scales every (non-tiny) recipe alike, so the families still see the same budget and
    the 14.5× ratio of the masked subset holds. A model trained under another profile is cached
    apart and its recipe name says so (``full+paper``).
    """

    name: str
    images: int = 1  # × training images (and the masked subset)
    steps: int = 1  # × optimisation steps (and the validation interval)
    image_size: int | None = None  # None keeps the recipe's
    val_images: int | None = None


PROFILES = {
    "default": Profile("default"),
    # 14,500 labelled / 1,000 masked images at 128 px, 1,600 steps: about an hour for the clean zoo on 2 cores
    "paper": Profile("paper", images=10, steps=4, image_size=128, val_images=500),
}


def active_profile() -> Profile:
    """Gives the profile named by ``$WBC_ROBUST_PROFILE`` (``default`` when unset)."""
    name = profile_name()
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r} in ${PROFILE_ENV}; expected one of {sorted(PROFILES)}")
    return PROFILES[name]


def recipe_for(name: str, family: str, profile: Profile | None = None) -> Recipe:
    """Gives the recipe ``name`` as it applies to ``family`` (a U-Net has no labels to use) under
    ``profile`` (default: the active one; tiny recipes are never scaled)."""
    r = RECIPES[name]
    if family == "unet":
        r = replace(r, use_labels=False)
    elif family == "classifier":
        r = replace(r, use_masks=False)
    p = profile or active_profile()
    if p.name != "default" and not name.startswith("tiny-"):
        r = replace(r, name=f"{r.name}+{p.name}", train_images=r.train_images * p.images, steps=r.steps * p.steps,
                    val_every=r.val_every * p.steps, image_size=p.image_size or r.image_size,
                    val_images=p.val_images or r.val_images)
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


# clean: the default zoo; confounded: trained where stain batch predicts the class; ablation: the
# multitask model's seg-loss weight sweep
TRACKS = ("clean", "confounded", "ablation")


def register_model(*, family: str, encoder: str, recipe: str, seed: int = 0, tiny: bool = False,
                   track: str = "clean", name: str | None = None):
    """Registers the decorated builder as a model whose id is ``name``, else the function's name.

    The builder takes no arguments and returns an untrained :class:`WBCNet` (or any module that
    takes [0,1] images and returns a dict keyed by head).
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; expected one of {sorted(RECIPES)}")
    if track not in TRACKS:
        raise ValueError(f"unknown track {track!r}; expected one of {TRACKS}")

    def deco(fn: Callable[[], WBCNet]) -> Callable[[], WBCNet]:
        doc = (fn.__doc__ or "").strip().splitlines()
        model_id = name or fn.__name__
        MODELS.add(model_id, ModelEntry(model_id, fn, family, encoder, recipe, seed, tiny, doc[0] if doc else "", track))
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


# ConvNeXt (Liu et al. 2022; timm ``convnext_atto`` at widths 16-128, one block per stage, two in the
# third): the modern CNN, LayerNorm and 7×7 depthwise convs. Its features start at stride 4, so the
# decoder's last block upsamples without a skip, ending at stride 2 as the ResNet's does. Its decoder
# takes GroupNorm: like the encoder, no batch statistics anywhere.
CONVNEXT_W16 = {"dims": (16, 32, 64, 128), "depths": (1, 1, 2, 1)}


def _convnext_w16(family: str) -> WBCNet:
    return WBCNet(family, "convnext_atto", decoder_channels=DECODER_W16, encoder_kwargs=CONVNEXT_W16,
                  norm="groupnorm", encoder_norm=False)


# A small ViT (Dosovitskiy et al. 2021): 8×8 patches (an 8×8 token grid at 64 px), width 80, 4 blocks,
# 2 heads: 0.33 M parameters, as the ResNet encoder. Its decoder reads the token grid of blocks 2 and
# 4 (timm reshapes them to maps) and upsamples ×2 three times (SETR-PUP, Zheng et al. 2021), ending
# at stride 2 as the others; GroupNorm as the ConvNeXt's. The classifier pools the last block's tokens.
VIT_P8 = {"img_size": 64, "patch_size": 8, "embed_dim": 80, "depth": 4, "num_heads": 2, "out_indices": (1, 3)}
DECODER_VIT = (64, 32, 16)


def _vit_p8(family: str) -> WBCNet:
    return WBCNet(family, "vit_tiny_patch16_224", decoder_channels=DECODER_VIT, encoder_kwargs=VIT_P8,
                  norm="groupnorm", encoder_norm=False)


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


# --- a modern CNN and a small ViT, in every family ------------------------------------------------
@register_model(family="classifier", encoder="convnext-w16", recipe="full")
def convnext_cls() -> WBCNet:
    """ConvNeXt classifier on the full labelled set."""
    return _convnext_w16("classifier")


@register_model(family="unet", encoder="convnext-w16", recipe="masked-small")
def convnext_unet() -> WBCNet:
    """ConvNeXt U-Net on the masked subset."""
    return _convnext_w16("unet")


@register_model(family="multitask", encoder="convnext-w16", recipe="masked-small")
def convnext_multitask() -> WBCNet:
    """ConvNeXt multitask model on the masked subset."""
    return _convnext_w16("multitask")


@register_model(family="classifier", encoder="vit-p8-w80", recipe="full")
def vit_cls() -> WBCNet:
    """Small ViT classifier on the full labelled set."""
    return _vit_p8("classifier")


@register_model(family="unet", encoder="vit-p8-w80", recipe="masked-small")
def vit_unet() -> WBCNet:
    """Small ViT with a token-grid decoder (segmentation only), on the masked subset."""
    return _vit_p8("unet")


@register_model(family="multitask", encoder="vit-p8-w80", recipe="masked-small")
def vit_multitask() -> WBCNet:
    """Small ViT, classification + token-grid segmentation decoder, on the masked subset."""
    return _vit_p8("multitask")


# --- adversarially trained (FGSM-RS at 2/255): the classifier, its data control, the multitask model
@register_model(family="classifier", encoder="resnet10t-w16", recipe="full-at")
def resnet10t_cls_at() -> WBCNet:
    """Classifier, adversarially trained (FGSM-RS, 2/255) on the full labelled set."""
    return _resnet10t_w16("classifier")


@register_model(family="classifier", encoder="resnet10t-w16", recipe="cls-small-at")
def resnet10t_cls_small_at() -> WBCNet:
    """Classifier, adversarially trained (FGSM-RS, 2/255) on the masked subset's 100 images: the data control."""
    return _resnet10t_w16("classifier")


@register_model(family="multitask", encoder="resnet10t-w16", recipe="masked-small-at")
def resnet10t_multitask_at() -> WBCNet:
    """Multitask, adversarially trained (FGSM-RS, 2/255, on the joint loss) on the masked subset."""
    return _resnet10t_w16("multitask")


# --- the ablation track: the multitask model's seg-loss weight λ --------------------------------------
def _seg_weight_variant(lam: float) -> None:
    def builder() -> WBCNet:
        return _resnet10t_w16("multitask")

    builder.__doc__ = f"Multitask on the masked subset with seg-loss weight λ = {lam:g} (the reference is λ = 1)."
    register_model(family="multitask", encoder="resnet10t-w16", recipe=f"masked-small-lam{lam:g}",
                   track="ablation", name=f"resnet10t_multitask_lam{lam:g}")(builder)


for _lam in SEG_WEIGHTS:
    _seg_weight_variant(_lam)


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


@register_model(family="multitask", encoder="resnet10t-w8", recipe="tiny-masked-small-at", tiny=True)
def tiny_multitask_at() -> WBCNet:
    """Tiny adversarially trained multitask model for tests (32 px, a few steps)."""
    return _resnet10t_w8("multitask")


@register_model(family="multitask", encoder="convnext-w8", recipe="tiny-masked-small", tiny=True)
def tiny_convnext_multitask() -> WBCNet:
    """Tiny ConvNeXt multitask model for tests (32 px, a few steps)."""
    return WBCNet("multitask", "convnext_atto", decoder_channels=DECODER_W8,
                  encoder_kwargs={"dims": (8, 16, 32, 64), "depths": (1, 1, 1, 1)}, norm="groupnorm", encoder_norm=False)


@register_model(family="multitask", encoder="vit-p8-w32", recipe="tiny-masked-small", tiny=True)
def tiny_vit_multitask() -> WBCNet:
    """Tiny ViT multitask model for tests (32 px, a few steps)."""
    return WBCNet("multitask", "vit_tiny_patch16_224", decoder_channels=(16, 8, 8), norm="groupnorm", encoder_norm=False,
                  encoder_kwargs={**VIT_P8, "img_size": 32, "embed_dim": 32, "depth": 2, "num_heads": 2, "out_indices": (0, 1)})
