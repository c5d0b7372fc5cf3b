"""Common corruptions of blood-smear images at five severities.

The set follows MedMNIST-C's blood set (Di Salvo et al., "MedMNIST-C: Comprehensive benchmark
and improved classifier robustness by simulating realistic image corruptions", arXiv 2406.17536,
2024), itself in the manner of ImageNet-C (Hendrycks & Dietterich, ICLR 2019, arXiv 1903.12261):
digital (``jpeg_compression``, ``pixelate``), blur (``defocus_blur``, ``motion_blur``), colour
(``brightness_up/down``, ``contrast_up/down``, ``saturate``), noise (``gaussian_noise``) and two
microscopy artefacts (``stain_deposit``, ``bubble``). The colour and pixelate scales are
MedMNIST-C's blood values; the blur, JPEG, noise and artefact scales are set here for 64-px
SynthWBC cells (MedMNIST-C corrupts 224-px images, and draws its artefacts from templates).
Each corruption's docstring gives its parameter per severity.

Images are float32 N×3×H×W in [0, 1]; every corruption gives the same shape and dtype back, in
[0, 1]. Lengths are given in pixels of a 64-px image (SynthWBC's 25.6 µm field at 0.4 µm/px) and
scaled to the image's size, so a severity is the same physical effect at 32, 64 or 128 px. Two
corruptions are tied to the pixel grid instead: ``jpeg_compression`` (JPEG's 8×8 blocks) and
``gaussian_noise`` (sensor noise is per pixel); ``pixelate`` keeps a fraction of the image's own
resolution, as in MedMNIST-C (a fixed physical block would leave a 32-px image untouched at
severities 1-2).

Randomness (noise, deposit and bubble positions, motion angle) comes from a generator seeded with
``(seed, index, corruption)``, one per image, so an image's corruption depends neither on the
batch it is in nor on its neighbours. Each severity draws the same things and uses more of them
(severity 5's bubbles include severity 4's), so severities are nested.

>>> x = torch.full((2, 3, 32, 32), 0.5)
>>> y = corrupt(x, "gaussian_noise", severity=3, seed=0)
>>> y.shape, y.dtype
(torch.Size([2, 3, 32, 32]), torch.float32)
>>> torch.equal(y, corrupt(x, "gaussian_noise", severity=3, seed=0))
True
"""

from __future__ import annotations

import difflib
import io
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from robustbench_wbc.registry import UnknownNameError

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
REFERENCE_SIZE = 64  # lengths below are in pixels of a 64-px image

CorruptionFn = Callable[[torch.Tensor, float, list[np.random.Generator]], torch.Tensor]


@dataclass(frozen=True)
class Corruption:
    """A registered corruption: its function and what each severity means.

    ``fn(images, value, rngs)`` gets a float32 N×3×H×W batch, the parameter value of one severity
    and one generator per image; ``corrupt`` clamps its result to [0, 1].
    """

    name: str
    fn: CorruptionFn
    description: str
    params: tuple[float, float, float, float, float]  # the parameter at severities 1..5
    param: str  # what ``params`` are, with their unit
    stochastic: bool  # whether the result depends on the seed and the image's index

    def value(self, severity: int) -> float:
        """Gives the parameter at ``severity`` (1..5)."""
        return self.params[_check_severity(severity) - 1]

    def describe(self) -> str:
        """Gives one line for listings: name, description, the parameter per severity."""
        values = ", ".join(f"{v:g}" for v in self.params)
        return f"{self.name}: {self.description} [{self.param}: {values}]"


CORRUPTIONS: dict[str, Corruption] = {}


def register_corruption(*, params: Sequence[float], param: str, stochastic: bool = False):
    """Registers the decorated function as a corruption whose id is the function's name.

    Args:
        params: the parameter at severities 1..5 (five numbers, the severity scale).
        param: what the numbers are, with their unit (shown in listings).
        stochastic: whether the function draws from its per-image generators.
    """
    values = tuple(params)
    if len(values) != len(SEVERITIES) or not all(isinstance(v, (int, float)) for v in values):
        raise ValueError(f"params must be {len(SEVERITIES)} numbers, one per severity, got {params!r}")

    def deco(fn: CorruptionFn) -> CorruptionFn:
        if fn.__name__ in CORRUPTIONS:
            raise ValueError(f"corruption {fn.__name__!r} is already registered")
        doc = (fn.__doc__ or "").strip().splitlines()
        CORRUPTIONS[fn.__name__] = Corruption(fn.__name__, fn, doc[0] if doc else "", values, param, stochastic)
        return fn

    return deco


def get_corruption(name: str) -> Corruption:
    """Gives the corruption registered as ``name``, or raises :class:`UnknownNameError` (a KeyError)."""
    try:
        return CORRUPTIONS[name]
    except KeyError:
        # a shortened name ("jpeg", "brightness") is too unlike the whole one for difflib alone
        close = [n for n in CORRUPTIONS if str(name) and str(name) in n]
        close += [n for n in difflib.get_close_matches(str(name), list(CORRUPTIONS), n=3, cutoff=0.5) if n not in close]
        raise UnknownNameError("corruption", str(name), close, f"Known: {', '.join(CORRUPTIONS)}.") from None


def describe() -> str:
    """Gives every corruption's one-line description, in registration order."""
    return "\n".join(c.describe() for c in CORRUPTIONS.values())


def corrupt(
    images: torch.Tensor, name: str, severity: int, seed: int = 0, indices: Sequence[int] | None = None,
) -> torch.Tensor:
    """Gives ``images`` (float32 N×3×H×W in [0, 1]) corrupted by ``name`` at ``severity`` (1..5).

    Args:
        images: the clean batch; it is not modified.
        name: a key of :data:`CORRUPTIONS`.
        severity: 1 (mild) to 5 (severe).
        seed: the seed of the per-image randomness.
        indices: each image's global index (default ``0..N-1``): image ``i`` of a split is
            corrupted the same way whatever batch it comes in, given its index here.

    The result is the same tensor for the same arguments (on one device), with the same shape,
    dtype and device as ``images``, finite and in [0, 1].
    """
    entry = get_corruption(name)
    severity = _check_severity(severity)
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a N×3×H×W tensor, got {shape}")
    if images.dtype != torch.float32:
        raise ValueError(f"images must be float32 in [0, 1], got {images.dtype}; convert with .float()")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer ≥ 0, got {seed!r}")
    n = images.shape[0]
    index = list(range(n)) if indices is None else [int(i) for i in indices]
    if len(index) != n or any(i < 0 for i in index):
        raise ValueError(f"indices must give one index ≥ 0 per image ({n}), got {len(index)}: {index[:8]}")
    if n == 0:
        return images.clone()
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ValueError("images must be finite and in [0, 1]")
    key = zlib.crc32(entry.name.encode())
    rngs = [np.random.default_rng([int(seed), i, key]) for i in index]
    out = entry.fn(images, entry.params[severity - 1], rngs)
    return out.clamp(0.0, 1.0).to(images.dtype)


def _check_severity(severity: int) -> int:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")
    return int(severity)


# --- building blocks ---------------------------------------------------------------------------
def _px(images: torch.Tensor, length: float) -> float:
    """A length in pixels of a 64-px image → pixels of this image."""
    return length * min(images.shape[-2:]) / REFERENCE_SIZE


def _splat_kernel(points: np.ndarray) -> np.ndarray:
    """Gives the normalised kernel that spreads ``points`` (offsets x, y in px) bilinearly over the grid.

    A shape sampled densely and splatted this way is the shape convolved with a one-pixel tent:
    it blurs a little even when the shape is smaller than a pixel (a 32-px image at severity 1).
    """
    half = int(np.floor(np.abs(points).max())) + 1
    size = 2 * half + 1
    x, y = points[:, 0] + half, points[:, 1] + half
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    kernel = np.zeros((size, size))
    for dy, dx, wt in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(kernel, (y0 + dy, x0 + dx), wt)
    return kernel / kernel.sum()


def _disk_kernel(radius: float) -> np.ndarray:
    """A pillbox (the defocus PSF of a circular aperture) of ``radius`` px."""
    step = 1 / 16
    g = np.arange(-np.ceil(radius / step), np.ceil(radius / step) + 1) * step
    x, y = np.meshgrid(g, g)
    inside = x**2 + y**2 <= radius**2
    return _splat_kernel(np.stack([x[inside], y[inside]], axis=1))


def _line_kernel(length: float, angle: float, half: int) -> np.ndarray:
    """A centred line of ``length`` px at ``angle`` (a uniform motion PSF), padded to (2·half+1)²."""
    t = np.linspace(-length / 2, length / 2, max(2, int(np.ceil(length * 16))) + 1)
    k = _splat_kernel(np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1))
    pad = half - k.shape[0] // 2
    return np.pad(k, pad)


def _gaussian_kernel(sigma: float) -> np.ndarray:
    half = max(1, int(np.ceil(3 * sigma)))
    g = np.exp(-0.5 * (np.arange(-half, half + 1) / max(sigma, 1e-3)) ** 2)
    g /= g.sum()
    return np.outer(g, g)


def _filter(images: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """Convolves every channel with ``kernel`` (kh×kw, shared, or N×kh×kw, one per image); edges replicated."""
    n, c, h, w = images.shape
    k = torch.as_tensor(kernel, dtype=images.dtype, device=images.device)
    ph, pw = k.shape[-2] // 2, k.shape[-1] // 2
    # every image-channel as a channel of one image: a depthwise convolution, which on CPU runs
    # several times faster than a batch of 3-channel ones, and lets each image have its own kernel
    weight = k.expand(n * c, *k.shape[-2:]) if k.dim() == 2 else k.repeat_interleave(c, dim=0)
    x = F.pad(images.reshape(1, n * c, h, w), (pw, pw, ph, ph), mode="replicate")
    return F.conv2d(x, weight.unsqueeze(1), groups=n * c).reshape(n, c, h, w)


def _pixel_grid(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates (y: H×1, x: 1×W) in pixels."""
    h, w = images.shape[-2:]
    ys = torch.arange(h, dtype=images.dtype, device=images.device)[:, None]
    xs = torch.arange(w, dtype=images.dtype, device=images.device)[None, :]
    return ys, xs


def _value(images: torch.Tensor) -> torch.Tensor:
    """HSV value (the largest channel), N×1×H×W."""
    return images.amax(dim=1, keepdim=True)


def _scale_value(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Multiplies HSV value by ``factor``, capped at 1, keeping hue and saturation."""
    v = _value(images)
    return images * ((v * factor).clamp(max=1.0) / v.clamp_min(1e-12))


def _scale_contrast(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Scales every channel's distance to the image's mean luma (ITU-R 601) by ``factor``."""
    luma = torch.tensor((0.299, 0.587, 0.114), dtype=images.dtype, device=images.device)
    # one reduction per image: the mean must not depend on the batch the image is in
    mean = torch.stack([(img * luma[:, None, None]).sum(0).mean() for img in images])[:, None, None, None]
    return mean + factor * (images - mean)


def _draw(rngs: list[np.random.Generator], fn: Callable[[np.random.Generator], np.ndarray]) -> np.ndarray:
    """Stacks one draw per image."""
    return np.stack([fn(r) for r in rngs])


# --- blur --------------------------------------------------------------------------------------
@register_corruption(params=(0.75, 1.0, 1.5, 2.0, 2.5), param="disk radius, px at 64 px")
def defocus_blur(images: torch.Tensor, radius: float, rngs: list[np.random.Generator]) -> torch.Tensor:
    """Defocus: a pillbox blur, the PSF of an out-of-focus circular aperture.

    Disk radius in px at 64 px: 0.75, 1, 1.5, 2, 2.5 (scaled with the image size).
    """
    return _filter(images, _disk_kernel(_px(images, radius)))


@register_corruption(params=(1.5, 2.0, 3.0, 4.0, 5.0), param="streak length, px at 64 px", stochastic=True)
def motion_blur(images: torch.Tensor, length: float, rngs: list[np.random.Generator]) -> torch.Tensor:
    """Motion: a straight streak at a random angle per image (stage or camera moving during exposure).

    Streak length in px at 64 px: 1.5, 2, 3, 4, 5; angle uniform in [0, π) per image.
    """
    angles = _draw(rngs, lambda r: r.uniform(0, np.pi))
    length = _px(images, length)
    half = int(np.floor(length / 2)) + 1
    return _filter(images, np.stack([_line_kernel(length, a, half) for a in angles]))


# --- digital -----------------------------------------------------------------------------------
@register_corruption(params=(80, 60, 40, 25, 12), param="JPEG quality")
def jpeg_compression(images: torch.Tensor, quality: float, rngs: list[np.random.Generator]) -> torch.Tensor:
    """JPEG: encoded and decoded by PIL (4:2:0 chroma subsampling), as a lossy archive or a camera would.

    Quality: 80, 60, 40, 25, 12. JPEG works on 8×8-pixel blocks, so this one is tied to the pixel
    grid, not to the field of view; the qualities are higher than MedMNIST-C's (50 … 7 at
    224 px) because a block is a larger part of a 64-px image.
    """
    arrays = (images.detach().permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    out = np.empty_like(arrays)
    for i, arr in enumerate(arrays):  # PIL encodes one image at a time
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality), subsampling="4:2:0")
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(images.device, images.dtype) / 255


@register_corruption(params=(0.6, 0.5, 0.4, 0.3, 0.25), param="resolution kept, fraction of the image size")
def pixelate(images: torch.Tensor, fraction: float, rngs: list[np.random.Generator]) -> torch.Tensor:
    """Pixelation: box-averaged to a coarser grid and shown back with square blocks.

    Resolution kept (fraction of the image size): 0.6, 0.5, 0.4, 0.3, 0.25, as MedMNIST-C's
    blood set; a 64-px image becomes 38, 32, 26, 19, 16 blocks across.
    """
    h, w = images.shape[-2:]
    down_h, down_w = _box_matrix(h, max(1, round(h * fraction))), _box_matrix(w, max(1, round(w * fraction)))
    low = down_h.to(images) @ images @ down_w.to(images).T
    # each pixel shows the block its centre falls in: the block it was averaged over
    return low[..., down_h.argmax(0), :][..., down_w.argmax(0)]


def _box_matrix(size: int, blocks: int) -> torch.Tensor:
    """Gives the blocks×size matrix that averages ``size`` pixels into ``blocks`` equal spans.

    A span that is not a whole number of pixels takes the fraction of each pixel it covers, so
    every block is an exact area average (PIL's BOX filter), never a 1-px sliver.
    """
    edges = np.arange(blocks + 1) * size / blocks
    left, right = np.arange(size), np.arange(size) + 1
    overlap = np.clip(np.minimum(edges[1:, None], right) - np.maximum(edges[:-1, None], left), 0, None)
    return torch.from_numpy(overlap / overlap.sum(1, keepdims=True))


# --- colour ------------------------------------------------------------------------------------
@register_corruption(params=(1.1, 1.2, 1.3, 1.35, 1.4), param="HSV value factor")
def brightness_up(images: torch.Tensor, factor: float, rngs: list[np.random.Generator]) -> torch.Tensor:
    """Brightness up: HSV value multiplied (a brighter lamp, a longer exposure), hue and saturation kept.

    Value factor: 1.1, 1.2, 1.3, 1.35, 1.4 (MedMNIST-C's blood set); a pixel stops at value 1.
    """
    return _scale_value(images, factor)


@register_corruption(params=(0.9, 0.8, 0.7, 0.6, 0.5), param="HSV value factor")
def brightness_down(images: torch.Tensor, factor: float, rngs: list[np.random.Generator]) -> torch.Tensor:
    """Brightness down: HSV value multiplied (a dimmer lamp, a shorter exposure), hue and saturation kept.

    Value factor: 0.9, 0.8, 0.7, 0.6, 0.5 (MedMNIST-C's blood set).
    """
    return _scale_value(images, factor)


@register_corruption(params=(1.1, 1.15, 1.2, 1.25, 1.3), param="contrast factor")
def contrast_up(images: torch.Tensor, factor: float, rngs: list[np.random.Generator]) -> torch.Tensor:
    """Contrast up: every channel's distance to the image's mean luma multiplied, as PIL's ImageEnhance.

    Contrast factor: 1.1, 1.15, 1.2, 1.25, 1.3 (MedMNIST-C's blood set).
    """
    return _scale_contrast(images, factor)


@register_corruption(params=(0.9, 0.8, 0.7, 0.6, 0.5), param="contrast factor")
def contrast_down(images: torch.Tensor, factor: float, rngs: list[np.random.Generator]) -> torch.Tensor:
    """Contrast down: every channel's distance to the image's mean luma shrunk (a washed-out image).

    Contrast factor: 0.9, 0.8, 0.7, 0.6, 0.5 (MedMNIST-C's blood set).
    """
    return _scale_contrast(images, factor)


@register_corruption(params=(0.05, 0.10, 0.15, 0.17, 0.20), param="HSV saturation added")
def saturate(images: torch.Tensor, added: float, rngs: list[np.random.Generator]) -> torch.Tensor:
    """Over-saturation: HSV saturation raised (an over-stained smear, a vivid camera profile), hue and value kept.

    Saturation added: 0.05, 0.10, 0.15, 0.17, 0.20 (MedMNIST-C's blood set), capped at 1. Grey
    pixels (no hue) stay grey.
    """
    v = _value(images)
    spread = v - images.amin(dim=1, keepdim=True)
    s_new = (spread / v.clamp_min(1e-12) + added).clamp(max=1.0)
    # where each channel sits between the largest (0) and the smallest (1): the hue, kept
    position = torch.where(spread > 0, (v - images) / spread.clamp_min(1e-12), torch.zeros_like(images))
    return v * (1 - s_new * position)


# --- microscopy artefacts ----------------------------------------------------------------------
# Romanowsky precipitate is methylene blue / azure dye: blue-black to dark purple, so it absorbs
# red and green most (optical density per unit, R G B).
DEPOSIT_OD = (0.80, 0.85, 0.45)
DEPOSIT_COUNTS = (2, 4, 6, 9, 14)
GRANULES_PER_DEPOSIT = 8


@register_corruption(params=DEPOSIT_COUNTS, param="deposits", stochastic=True)
def stain_deposit(images: torch.Tensor, count: float, rngs: list[np.random.Generator]) -> torch.Tensor:
    """Stain precipitate: dark blue-purple granular deposits over cells and background.

    Deposits: 2, 4, 6, 9, 14 per image. A deposit is a cluster of 8 granules within 1–3 px (at
    64 px) of its centre, each a Gaussian dot of σ 0.35–0.8 px and peak optical density 0.3–0.9
    (total capped at 2.5); it darkens the pixels it covers by Beer-Lambert, ``I · 10^(−OD·a)``
    with the dye's absorbance ``a``, so the precipitate stays dark over light and dark pixels alike.
    """
    n, _, h, w = images.shape
    pool, g = max(DEPOSIT_COUNTS), GRANULES_PER_DEPOSIT

    def draw(r: np.random.Generator) -> np.ndarray:  # x, y (fractions), dx, dy, σ (px at 64 px), OD
        centre = r.uniform(0.05, 0.95, (pool, 1, 2))
        spread = r.uniform(1.0, 3.0, (pool, 1, 1)) * np.sqrt(r.uniform(0, 1, (pool, g, 1)))
        angle = r.uniform(0, 2 * np.pi, (pool, g, 1))
        offset = spread * np.concatenate([np.cos(angle), np.sin(angle)], axis=-1)
        sigma, peak = r.uniform(0.35, 0.8, (pool, g, 1)), r.uniform(0.3, 0.9, (pool, g, 1))
        return np.concatenate([np.broadcast_to(centre, (pool, g, 2)), offset, sigma, peak], axis=-1)

    d = torch.as_tensor(_draw(rngs, draw)[:, : int(count)].reshape(n, -1, 6), dtype=torch.float64)
    x = d[..., 0] * w - 0.5 + _px(images, 1) * d[..., 2]  # granule centres in pixels
    y = d[..., 1] * h - 0.5 + _px(images, 1) * d[..., 3]
    sigma, peak = _px(images, 1) * d[..., 4], d[..., 5]
    # each granule's optical density averaged over every pixel (exact for a Gaussian, so a granule
    # smaller than a pixel keeps its mass); the 2-D dot is separable, one outer product per granule
    gx = _pixel_mass(torch.arange(w, dtype=torch.float64), x, sigma)  # N×K×W
    gy = _pixel_mass(torch.arange(h, dtype=torch.float64), y, sigma)  # N×K×H
    mass = peak * 2 * np.pi * sigma**2
    od = torch.einsum("nkh,nkw->nhw", mass[..., None] * gy, gx).clamp(max=2.5)
    absorbance = torch.tensor(DEPOSIT_OD, dtype=torch.float64)[None, :, None, None]
    transmission = torch.pow(10.0, -od[:, None] * absorbance).to(images.device, images.dtype)
    return images * transmission


def _pixel_mass(pixels: torch.Tensor, centre: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The share of a unit 1-D Gaussian (``centre``, ``sigma``: N×K) that falls in each pixel: N×K×P."""
    z = (pixels - centre[..., None]) / (np.sqrt(2) * sigma[..., None])
    step = 0.5 / (np.sqrt(2) * sigma[..., None])
    return 0.5 * (torch.special.erf(z + step) - torch.special.erf(z - step))


BUBBLE_COUNTS = (1, 2, 3, 4, 6)
BUBBLE_RADIUS = (3.0, 8.0)  # px at 64 px
BUBBLE_BRIGHTER = 0.2  # the interior's blend toward white
BUBBLE_RIM_DARK = 0.55  # the rim's darkening at its centre line


@register_corruption(params=BUBBLE_COUNTS, param="bubbles", stochastic=True)
def bubble(images: torch.Tensor, count: float, rngs: list[np.random.Generator]) -> torch.Tensor:
    """Air bubbles under the coverslip: dark-rimmed circles, brighter and out of focus inside.

    Bubbles: 1, 2, 3, 4, 6 per image, radius 3–8 px at 64 px, anywhere in the field (a bubble
    may be cut by the edge). The rim, where light is refracted out of the objective, is a dark
    ring (Gaussian σ 0.4 + 0.08·radius px), down to 45 % of the light at its centre; the
    interior is out of the focal plane (Gaussian blur, σ 1 px) and 20 % brighter toward white.
    """
    pool = max(BUBBLE_COUNTS)
    d = torch.as_tensor(_draw(rngs, lambda r: np.concatenate(
        [r.uniform(0, 1, (pool, 2)), r.uniform(*BUBBLE_RADIUS, (pool, 1))], axis=1)), dtype=images.dtype)
    d = d.to(images.device)
    n, _, h, w = images.shape
    ys, xs = _pixel_grid(images)
    inside = torch.zeros(n, 1, h, w, dtype=images.dtype, device=images.device)
    rim = torch.zeros_like(inside)
    for k in range(int(count)):  # a loop over bubbles, each over the whole batch
        cx, cy = (d[:, k, 0] * w - 0.5)[:, None, None, None], (d[:, k, 1] * h - 0.5)[:, None, None, None]
        radius = _px(images, 1) * d[:, k, 2][:, None, None, None]
        half_width = _px(images, 1) * (0.4 + 0.08 * d[:, k, 2])[:, None, None, None]
        dist = torch.sqrt((xs - cx) ** 2 + (ys - cy) ** 2)
        inside = torch.maximum(inside, (radius - dist + 0.5).clamp(0, 1))  # anti-aliased disk
        rim = torch.maximum(rim, torch.exp(-0.5 * ((dist - radius) / half_width) ** 2))
    interior = _filter(images, _gaussian_kernel(_px(images, 1.0))) * (1 - BUBBLE_BRIGHTER) + BUBBLE_BRIGHTER
    return (images * (1 - inside) + interior * inside) * (1 - BUBBLE_RIM_DARK * rim)


# --- noise -------------------------------------------------------------------------------------
@register_corruption(params=(0.02, 0.04, 0.06, 0.08, 0.10), param="noise std", stochastic=True)
def gaussian_noise(images: torch.Tensor, std: float, rngs: list[np.random.Generator]) -> torch.Tensor:
    """Sensor noise: additive Gaussian noise, independent per pixel and channel.

    Std (in [0, 1] units): 0.02, 0.04, 0.06, 0.08, 0.10. Per pixel, not scaled with image size.
    """
    noise = _draw(rngs, lambda r: r.standard_normal(images.shape[1:], dtype=np.float32))
    return images + std * torch.from_numpy(noise).to(images.device)
