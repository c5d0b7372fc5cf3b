"""The three families, composed from one encoder: classifier, U-Net and multitask.

Encoder → decoder → heads, in the manner of segmentation_models_pytorch (``base/model.py``): any
timm backbone with ``features_only=True`` is the encoder, so the classifier, the U-Net and the
multitask network share the same encoder code and differ only in their heads. Unlike smp, every
model returns the same type: a dict keyed by head (``"logits"`` N×K, ``"mask"`` N×3×H×W logits).
Inputs are images in [0, 1]; normalisation is the model's first layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

FAMILIES: tuple[str, ...] = ("classifier", "unet", "multitask")
HEADS: dict[str, tuple[str, ...]] = {
    "classifier": ("logits",),
    "unet": ("mask",),
    "multitask": ("logits", "mask"),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """Maps [0, 1] images to the encoder's input statistics: the model's first layer."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class TimmEncoder(nn.Module):
    """A timm backbone giving its feature pyramid (strides 2 … 32; for a ViT, maps of its token grid).

    Args:
        name: a timm model name (``resnet10t``).
        **kwargs: passed to ``timm.create_model`` (widths, norm layer, …). Never pretrained:
            nothing is downloaded.
    """

    def __init__(self, name: str, **kwargs) -> None:
        super().__init__()
        import timm  # imported here, not when the suite starts: it pulls in torchvision and huggingface_hub

        self.body = timm.create_model(name, pretrained=False, features_only=True, **kwargs)
        self.channels: list[int] = self.body.feature_info.channels()
        self.reductions: list[int] = self.body.feature_info.reduction()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.body(x)


def group_norm(channels: int, **kwargs) -> nn.GroupNorm:
    """GroupNorm with 4 groups (1 where the channels don't divide): a norm layer with no batch statistics."""
    return nn.GroupNorm(4 if channels % 4 == 0 else 1, channels, **kwargs)


NORM_LAYERS = {"batchnorm": nn.BatchNorm2d, "groupnorm": group_norm}


def _conv_norm_relu(cin: int, cout: int, norm: str) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), NORM_LAYERS[norm](cout),
                         nn.ReLU(inplace=True))


class UNetDecoder(nn.Module):
    """A U-Net decoder: upsample, concatenate the skip at that stride, two 3×3 convs.

    Blocks beyond the skips upsample ×2 without one, as smp's U-Net does past its shallowest
    skip: that is how one decoder serves a ViT, whose features all have the patch's stride
    (a progressive-upsampling decoder on the token grid, as SETR-PUP).

    Args:
        encoder_channels: channels of the encoder's features, shallow to deep.
        decoder_channels: channels after each decoder block, deep to shallow; at least one per skip.
        norm: ``batchnorm`` or ``groupnorm``.
    """

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int], norm: str = "batchnorm") -> None:
        super().__init__()
        skips = list(encoder_channels[:-1])[::-1]  # deep → shallow
        if len(decoder_channels) < len(skips):
            raise ValueError(f"need at least {len(skips)} decoder channels (one per skip), got {len(decoder_channels)}")
        cin = encoder_channels[-1]
        blocks = []
        for i, cout in enumerate(decoder_channels):
            skip = skips[i] if i < len(skips) else 0
            blocks.append(nn.Sequential(_conv_norm_relu(cin + skip, cout, norm), _conv_norm_relu(cout, cout, norm)))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = cin

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        skips = features[-2::-1]
        for i, block in enumerate(self.blocks):
            if i < len(skips):
                x = F.interpolate(x, size=skips[i].shape[-2:], mode="nearest")
                x = torch.cat([x, skips[i]], dim=1)
            else:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = block(x)
        return x


class WBCNet(nn.Module):
    """One encoder with a classification head, a segmentation decoder + head, or both.

    Args:
        family: ``classifier``, ``unet`` or ``multitask``.
        encoder: the timm model name of the encoder.
        num_classes: number of cell classes (5).
        seg_classes: number of mask classes (3: background, cytoplasm, nucleus).
        decoder_channels: channels of the U-Net decoder blocks, deep to shallow.
        encoder_kwargs: passed to timm (widths, ...).
        norm: the normalisation layer of the decoder, and of the encoder where ``encoder_norm``:
            ``batchnorm`` or ``groupnorm``.
        encoder_norm: give ``norm`` to the encoder too (ResNets); ``False`` keeps the encoder's own
            (the LayerNorm of ConvNeXt and ViT).
    """

    def __init__(self, family: str, encoder: str, num_classes: int = 5, seg_classes: int = 3,
                 decoder_channels: Sequence[int] = (64, 32, 16, 16),
                 encoder_kwargs: dict | None = None, norm: str = "batchnorm", encoder_norm: bool = True) -> None:
        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
        self.family = family
        self.heads = HEADS[family]
        self.normalize = Normalize()
        if norm not in NORM_LAYERS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {sorted(NORM_LAYERS)}")
        kwargs = dict(encoder_kwargs or {})
        if encoder_norm:
            kwargs["norm_layer"] = NORM_LAYERS[norm]
        self.encoder = TimmEncoder(encoder, **kwargs)
        self.classifier: nn.Module | None = None
        self.decoder: UNetDecoder | None = None
        self.segmentation_head: nn.Module | None = None
        if "logits" in self.heads:
            self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                            nn.Linear(self.encoder.channels[-1], num_classes))
        if "mask" in self.heads:
            self.decoder = UNetDecoder(self.encoder.channels, decoder_channels, norm)
            self.segmentation_head = nn.Conv2d(self.decoder.out_channels, seg_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.encoder(self.normalize(x))
        out: dict[str, torch.Tensor] = {}
        if self.classifier is not None:
            out["logits"] = self.classifier(features[-1])
        if self.decoder is not None:
            seg = self.segmentation_head(self.decoder(features))
            out["mask"] = F.interpolate(seg, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out


class HeadView(nn.Module):
    """Exposes one head of a dict-returning model as a plain tensor-returning module.

    torchattacks and ART expect ``model(x) -> Tensor``; this is the thin wrapper they need. It
    takes the wrapped model's mode: torchattacks restores the mode it found after each attack, and
    a fresh module's default (train) would leave the model's BatchNorm in training mode. The head
    comes back contiguous: some libraries ``.view()`` it, and a channels-last network (the suite's
    crafting copy, ``attacks/fusion.py``) gives a channels-last mask.
    """

    def __init__(self, model: nn.Module, head: str) -> None:
        super().__init__()
        self.model, self.head = model, head
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[self.head].contiguous()
