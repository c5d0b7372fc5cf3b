"""SynthWBC: a procedural generator of stained white-blood-cell images with exact masks.

Each image is one white cell near the centre of a small field of a peripheral-blood smear, drawn
from morphology (sizes in µm, nucleus shapes, granules) and rendered through a stain model in
optical-density space (Beer-Lambert, as in Ruifrok & Johnston, Anal. Quant. Cytol. Histol. 2001)
and a camera model (illuminant, colour response, gamma, blur, resolution, noise). The mask says
what each pixel *is* (0 background, 1 cytoplasm, 2 nucleus), not how it looks: under a basophil's
granules the nucleus is still labelled nucleus. The facts behind each choice are on the dataset
card, ``DATASET_CARD.md`` beside this file.

Everything is deterministic by ``(seed, index)``: image ``i`` of a split is the same whatever the
number of images asked for, and the same cell can be rendered under several domains. The engine is
vectorised over batches: random draws come in fixed chunks of ``CHUNK`` images (one torch generator
per chunk, drawn in a fixed order and shape whatever the classes), so a chunk renders as a handful
of tensor operations on ``B×H×W`` arrays rather than a Python loop per cell.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

CLASSES: tuple[str, ...] = ("neutrophil", "eosinophil", "basophil", "lymphocyte", "monocyte")
FIELD_UM = 25.6  # field of view in µm; 64 px → 0.4 µm/px, so a 20 µm monocyte still fits
GENERATOR_VERSION = "synthwbc-4"
CHUNK = 256  # images per random-draw chunk; part of the generator version

# Stain absorbance vectors (optical density per unit concentration, R G B). Romanowsky stains
# colour by three dyes: methylene blue (RNA, basophilic cytoplasm: sky blue, absorbs red),
# the azure B-eosin complex that makes chromatin purple (absorbs green, then red), and eosin
# (haemoglobin, eosinophil granules: pink to orange-red, absorbs green and blue).
STAIN_MB, STAIN_PURPLE, STAIN_EOSIN = 0, 1, 2


@dataclass(frozen=True)
class Stain:
    """A staining protocol: one absorbance vector and one strength per dye."""

    vectors: tuple[tuple[float, float, float], ...] = (
        (0.80, 0.42, 0.10),  # methylene blue
        (0.50, 0.90, 0.22),  # azure B-eosin (purple chromatin)
        (0.04, 0.78, 0.40),  # eosin
    )
    strength: tuple[float, float, float] = (1.0, 1.0, 1.0)
    background_od: tuple[float, float, float] = (0.02, 0.04, 0.06)  # plasma, slightly yellow


@dataclass(frozen=True)
class Camera:
    """A microscope + camera: illuminant, colour response, tone curve, optics and sensor."""

    illuminant: tuple[float, float, float] = (0.96, 0.96, 0.96)
    colour_matrix: tuple[tuple[float, float, float], ...] = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    gamma: float = 1.0
    blur_px: float = 0.5  # optical blur, Gaussian sigma in output pixels
    resolution: float = 1.0  # sensor sampling relative to the output grid (< 1: coarser)
    noise: float = 0.01  # sensor noise, std in [0, 1] units
    jpeg_quality: int = 0  # JPEG compression on saving (0: none, lossless)


@dataclass(frozen=True)
class Domain:
    """A lab: a stain protocol seen through a microscope and camera."""

    name: str
    stain: Stain = field(default_factory=Stain)
    camera: Camera = field(default_factory=Camera)
    description: str = ""
    # How the stain varies between images: "fixed" (one protocol), "per-class" (each class stained
    # in its own batch: the acquisition confound), "random" (a random stain per image: colour
    # carries no class information).
    stain_mode: str = "fixed"


SOURCE_LAB = Domain("source", description="the lab the models are trained in")
# Another lab: weaker, bluer azure and stronger eosin (a different Romanowsky variant, e.g. a
# rapid stain), a warmer lamp, a camera with channel cross-talk and a flatter tone curve, a lower
# NA objective (more blur), a coarser sensor and more noise. Raabin-WBC's Test-B differs from its
# Train in exactly these factors: another microscope and camera, with the stain varying by smear.
LAB_B = Domain(
    "lab-b",
    stain=Stain(
        vectors=((0.72, 0.48, 0.12), (0.58, 0.86, 0.16), (0.06, 0.70, 0.48)),
        strength=(1.15, 0.78, 1.35),
        background_od=(0.01, 0.06, 0.14),
    ),
    camera=Camera(
        illuminant=(1.0, 0.93, 0.80),
        colour_matrix=((0.86, 0.12, 0.02), (0.06, 0.84, 0.10), (0.02, 0.14, 0.84)),
        gamma=0.85,
        blur_px=1.0,
        resolution=0.7,
        noise=0.025,
        jpeg_quality=75,
    ),
    description="another stain protocol and another microscope-camera pair",
)
STAIN_B = Domain("stain-b", stain=LAB_B.stain, description="lab B's stain protocol, the source microscope and camera")
CAMERA_B = Domain("camera-b", camera=LAB_B.camera, description="the source stain, lab B's microscope and camera")
CONFOUNDED = Domain("confounded", stain_mode="per-class",
                    description="the source lab, each class stained in its own batch (±25 % dye strength)")
STAIN_RANDOM = Domain("stain-random", stain_mode="random",
                      description="a random stain per image: dye colours and strengths drawn at random")
DOMAINS: dict[str, Domain] = {d.name: d for d in (SOURCE_LAB, STAIN_B, CAMERA_B, LAB_B, CONFOUNDED, STAIN_RANDOM)}


@dataclass(frozen=True)
class ClassMorphology:
    """Per-class ranges (µm, fractions) from which each cell is drawn."""

    diameter_um: tuple[float, float]
    nucleus: str  # "lobed", "round", "kidney"
    lobes: tuple[int, ...] = (1,)
    lobe_p: tuple[float, ...] = (1.0,)
    cytoplasm: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (MB, purple, eosin) concentration
    granules: str = "none"  # "fine", "large-eosin", "large-dark", "none"


MORPHOLOGY: dict[str, ClassMorphology] = {
    "neutrophil": ClassMorphology((10.0, 15.0), "lobed", (2, 3, 4, 5), (0.2, 0.45, 0.28, 0.07),
                                  cytoplasm=(0.02, 0.05, 0.16), granules="fine"),
    "eosinophil": ClassMorphology((10.0, 15.0), "lobed", (2, 3), (0.85, 0.15),
                                  cytoplasm=(0.03, 0.03, 0.14), granules="large-eosin"),
    "basophil": ClassMorphology((11.0, 14.0), "lobed", (2,), (1.0,),
                                cytoplasm=(0.08, 0.08, 0.06), granules="large-dark"),
    "lymphocyte": ClassMorphology((6.0, 15.0), "round", cytoplasm=(0.34, 0.02, 0.0)),
    # textbook 12-20 µm (Bain 2015); on the real smears of Zheng et al. 2018 monocytes measure
    # 1.04× the neutrophil's diameter (median; 10.6-14.3 µm at the neutrophil-anchored pixel size)
    "monocyte": ClassMorphology((11.0, 15.5), "kidney", cytoplasm=(0.20, 0.06, 0.07)),
}


_CLS = {name: k for k, name in enumerate(CLASSES)}


def _key(*parts: object) -> int:
    """A 63-bit seed from any parts (stable across runs and machines)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _blur(x: torch.Tensor, sigma: float, mode: str = "circular") -> torch.Tensor:
    """Gaussian blur of ``B×C×H×W`` (or ``B×H×W``) at ``sigma`` pixels, by FFT.

    ``mode`` says what lies beyond the border (``circular``, ``replicate``, ``constant``): the
    image is padded by 3σ that way first, so only ``circular`` wraps around.
    """
    if sigma <= 0:
        return x
    squeeze = x.ndim == 3
    if squeeze:
        x = x[:, None]
    r = 0 if mode == "circular" else max(1, math.ceil(3 * sigma))
    y = F.pad(x, (r, r, r, r), mode=mode) if r else x
    h, w = y.shape[-2:]
    fy, fx = torch.fft.fftfreq(h), torch.fft.rfftfreq(w)
    transfer = torch.exp(-2 * (math.pi * sigma) ** 2 * (fy[:, None] ** 2 + fx[None, :] ** 2))
    y = torch.fft.irfft2(torch.fft.rfft2(y) * transfer, s=(h, w))
    if r:
        y = y[..., r:-r, r:-r]
    return y[:, 0] if squeeze else y


def _standardise(x: torch.Tensor) -> torch.Tensor:
    m = x.mean((-2, -1), keepdim=True)
    s = x.std((-2, -1), keepdim=True)
    return (x - m) / (s + 1e-8)


def _ellipse(x, y, cx, cy, a, b, angle):
    """Pixels inside ellipses; every argument after ``x, y`` is per image (``B×1×1``)."""
    c, s = torch.cos(angle), torch.sin(angle)
    dx, dy = x - cx, y - cy
    u = dx * c + dy * s
    v = dy * c - dx * s
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _capsule(x, y, x0, y0, x1, y1, width):
    """Pixels within ``width / 2`` of the segments (x0, y0)–(x1, y1) (chromatin filaments)."""
    dx, dy = x1 - x0, y1 - y0
    t = (((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy + 1e-9)).clamp(0, 1)
    return torch.hypot(x - x0 - t * dx, y - y0 - t * dy) <= width / 2


def _poisson(u: torch.Tensor, lam: float, kmax: int) -> torch.Tensor:
    """Poisson counts (truncated at ``kmax``) from uniforms, by the inverse CDF."""
    k = torch.arange(kmax + 1, dtype=torch.float64)
    pmf = torch.exp(-lam + k * math.log(lam) - torch.lgamma(k + 1))
    cdf = torch.cumsum(pmf, 0).to(torch.float32)
    return torch.searchsorted(cdf, u.contiguous()).clamp(max=kmax)


def _col(v) -> torch.Tensor:
    return torch.as_tensor(v, dtype=torch.float32).view(-1, 1, 1)


N_UNIFORM, N_NORMAL = 96, 24


@dataclass
class _Draws:
    """The random numbers of some images: per-image parameters and white-noise fields."""

    u: torch.Tensor  # B × N_UNIFORM uniforms
    n: torch.Tensor  # B × N_NORMAL normals
    tex: torch.Tensor  # B × H × W uniforms: cytoplasm texture (blurred, then standardised)
    chrom: torch.Tensor  # B × H × W uniforms: chromatin
    gran: torch.Tensor  # B × H × W uniforms: granule seeds


def _draw_chunk(seed: int, chunk: int, size: int) -> _Draws:
    g = torch.Generator().manual_seed(_key("synthwbc", seed, chunk, size))
    u = torch.rand(CHUNK, N_UNIFORM, generator=g)
    n = torch.randn(CHUNK, N_NORMAL, generator=g)
    tex = torch.rand(CHUNK, size, size, generator=g)
    chrom = torch.rand(CHUNK, size, size, generator=g)
    gran = torch.rand(CHUNK, size, size, generator=g)
    return _Draws(u, n, tex, chrom, gran)


def _nucleus_lobed(x, y, R, labels, u, n):
    """Segmented nuclei: 2–5 lobes along an arc joined by filaments (neutrophil), two large
    spectacle lobes (eosinophil), two lobes with a broad bridge, bilobed / S-shaped (basophil)."""
    B = len(labels)
    neu = labels == _CLS["neutrophil"]
    eos = labels == _CLS["eosinophil"]
    # Lobe sizes give the nucleus-to-cell area ratios measured on real smears (Zheng et al. 2018,
    # median [10-90 %]: neutrophil 0.33 [0.28-0.40], eosinophil 0.31 [0.26-0.39], the one basophil 0.46).
    la = torch.where(neu, 0.30, torch.where(eos, 0.40, 0.40)) * R
    lb = torch.where(neu, 0.32, torch.where(eos, 0.36, 0.34)) * R
    arc = torch.where(neu, 0.50, torch.where(eos, 0.40, 0.32)) * R
    # Neighbouring lobes sit a chord of ~1.1 lobe widths apart, so that a thin filament, not
    # a merged band, joins them: segmented, not band, forms (a band nucleus is another cell stage).
    chord = torch.where(neu, 0.66, 0.62) * R
    width = torch.where(neu, 0.5, torch.where(eos, 0.7, 1.4))
    n_lobes = torch.full((B,), 2, dtype=torch.long)
    for cls in ("neutrophil", "eosinophil", "basophil"):
        m = MORPHOLOGY[cls]
        cdf = torch.cumsum(torch.tensor(m.lobe_p, dtype=torch.float32), 0)
        pick = torch.tensor(m.lobes)[torch.searchsorted(cdf, u[:, 20].contiguous()).clamp(max=len(m.lobes) - 1)]
        n_lobes = torch.where(labels == _CLS[cls], pick, n_lobes)
    rot = 2 * math.pi * u[:, 21]
    step = 2 * torch.asin((chord / (2 * arc)).clamp(max=1.0)) * (0.9 + 0.2 * u[:, 22])
    span = step * (n_lobes - 1)
    j = torch.arange(5, dtype=torch.float32)
    frac = j / (n_lobes[:, None] - 1).clamp(min=1) - 0.5  # B × 5, −½ … ½ over the active lobes
    angles = rot[:, None] + span[:, None] * frac
    angles = torch.where(n_lobes[:, None] == 2, rot[:, None] + math.pi * j, angles)
    active = j[None] < n_lobes[:, None]
    cx, cy = arc[:, None] * torch.cos(angles), arc[:, None] * torch.sin(angles)
    nuc = torch.zeros_like(x, dtype=torch.bool).expand(B, -1, -1).clone()
    for k in range(5):
        on = _col(active[:, k].float()) > 0
        lobe = _ellipse(x, y, _col(cx[:, k]), _col(cy[:, k]), _col(la * (0.9 + 0.2 * u[:, 23 + k])),
                        _col(lb * (0.9 + 0.2 * u[:, 28 + k])), _col(angles[:, k] + math.pi / 2 + 0.3 * n[:, 10 + k]))
        nuc |= lobe & on
        if k < 4:
            on2 = _col(active[:, k + 1].float()) > 0
            nuc |= _capsule(x, y, _col(cx[:, k]), _col(cy[:, k]), _col(cx[:, k + 1]), _col(cy[:, k + 1]),
                            _col(width)) & on2
    return nuc


def _nucleus_round(x, y, R, u):
    """Lymphocytes: round, dense, filling most of the cell; a shallow notch in 40 %."""
    small = R < 5.0
    frac = torch.where(small, 0.74 + 0.14 * u[:, 40], 0.6 + 0.16 * u[:, 40])
    a = frac * R
    rot = 2 * math.pi * u[:, 41]
    off = 0.45 * u[:, 42] * (R - a)
    cx, cy = off * torch.cos(rot), off * torch.sin(rot)
    nuc = _ellipse(x, y, _col(cx), _col(cy), _col(a), _col(a * (0.88 + 0.12 * u[:, 43])), _col(rot))
    notch = torch.hypot(x - _col(cx + 1.05 * a * torch.cos(rot)), y - _col(cy + 1.05 * a * torch.sin(rot))) < _col(0.35 * a)
    return nuc & ~(notch & (_col(u[:, 44]) < 0.4))


def _nucleus_kidney(x, y, R, u):
    """Monocytes: kidney-shaped, an ellipse with a shallow bite out of one side.

    Sized to the real smears of Zheng et al. 2018: nucleus-to-cell area 0.52 [0.45-0.57] and a
    nearly convex outline (solidity 0.96 [0.90-0.98]), so the bite is shallow.
    """
    a, b = (0.74 + 0.08 * u[:, 50]) * R, (0.60 + 0.08 * u[:, 51]) * R
    rot = 2 * math.pi * u[:, 52]
    off = 0.10 * u[:, 53] * R
    cx, cy = off * torch.cos(rot + 2.0), off * torch.sin(rot + 2.0)
    nuc = _ellipse(x, y, _col(cx), _col(cy), _col(a), _col(b), _col(rot))
    bite_d = b * (0.95 + 0.2 * u[:, 54])
    bx, by = cx - bite_d * torch.sin(rot), cy + bite_d * torch.cos(rot)
    return nuc & ~(torch.hypot(x - _col(bx), y - _col(by)) < _col((0.30 + 0.10 * u[:, 55]) * a))


def _morphology(d: _Draws, labels: torch.Tensor, size: int, um: float):
    """Shapes and stain concentrations of a batch: ``(conc B×3×H×W, nucleus, cytoplasm, diam)``."""
    B = len(labels)
    field_um = size * um  # the field of view in µm
    coords = (torch.arange(size, dtype=torch.float32) - (size - 1) / 2) * um
    Y, X = torch.meshgrid(coords, coords, indexing="ij")
    u, n = d.u, d.n

    lo = torch.tensor([MORPHOLOGY[c].diameter_um[0] for c in CLASSES])[labels]
    hi = torch.tensor([MORPHOLOGY[c].diameter_um[1] for c in CLASSES])[labels]
    lym = labels == _CLS["lymphocyte"]
    small_lym = lym & (u[:, 1] < 0.75)  # mostly small lymphocytes, some large ones
    lo = torch.where(lym, torch.where(small_lym, 7.5, 10.0), lo)  # small 7-10 µm (Bain); 0.76× the
    hi = torch.where(small_lym, 10.5, hi)  # neutrophil's diameter on real smears (Zheng et al. 2018)
    diameter = lo + (hi - lo) * u[:, 0]
    R = diameter / 2
    ccx, ccy = 0.8 * n[:, 0], 0.8 * n[:, 1]
    x, y = X - _col(ccx), Y - _col(ccy)
    rho = torch.hypot(x, y)
    theta = torch.atan2(y, x)
    wobble = 1 + sum(0.035 * _col(n[:, 2 + i]) * torch.cos(k * theta + 2 * math.pi * _col(u[:, 2 + i]))
                     for i, k in enumerate((2, 3, 5)))
    cell_r = _col(R) * wobble
    cell = rho <= cell_r

    nucleus = torch.zeros(B, size, size, dtype=torch.bool)
    kinds = {"lobed": [_CLS[c] for c in ("neutrophil", "eosinophil", "basophil")],
             "round": [_CLS["lymphocyte"]], "kidney": [_CLS["monocyte"]]}
    for kind, classes in kinds.items():
        idx = torch.nonzero(torch.isin(labels, torch.tensor(classes))).flatten()
        if len(idx) == 0:
            continue
        xs, ys, Rs, us = x[idx], y[idx], R[idx], u[idx]
        if kind == "lobed":
            nucleus[idx] = _nucleus_lobed(xs, ys, Rs, labels[idx], us, n[idx])
        elif kind == "round":
            nucleus[idx] = _nucleus_round(xs, ys, Rs, us)
        else:
            nucleus[idx] = _nucleus_kidney(xs, ys, Rs, us)
    nucleus &= cell & (rho <= cell_r - 0.6)  # the nucleus stays inside the membrane
    cytoplasm = cell & ~nucleus

    conc = torch.zeros(B, 3, size, size)
    # background: red cells (≈7.5 µm discs, central pallor) anywhere from touching the cell outwards
    # (each object is drawn only on the images that have it: elementwise, so the same bits)
    n_rbc = _poisson(u[:, 60], 2.2, 6)
    for k in range(6):
        i = torch.nonzero(n_rbc > k).flatten()
        if len(i) == 0:
            break
        r_rbc = 3.4 + 0.7 * u[i, 61 + k]
        ang = 2 * math.pi * u[i, 67 + k]
        dist = 0.7 * R[i] + (field_um * 0.75 - 0.7 * R[i]) * u[i, 73 + k]
        rx, ry = ccx[i] + dist * torch.cos(ang), ccy[i] + dist * torch.sin(ang)
        dd = torch.hypot(X - _col(rx), Y - _col(ry)) / _col(r_rbc)
        pallor = 1 - 0.55 * (1 - (dd / 0.6) ** 2).clamp(min=0) ** 2  # a smooth dip at the centre
        val = (dd <= 1) * 0.32 * pallor * _col(0.85 + 0.25 * u[i, 79 + k])
        conc[i, STAIN_EOSIN] = torch.maximum(conc[i, STAIN_EOSIN], val)
    n_plt = _poisson(u[:, 85], 0.5, 2)
    for k in range(2):
        i = torch.nonzero(n_plt > k).flatten()
        px, py = field_um * (u[i, 86 + 2 * k] - 0.5), field_um * (u[i, 87 + 2 * k] - 0.5)
        plate = _ellipse(X, Y, _col(px), _col(py), _col(0.8 + 0.6 * u[i, 90 + k]), _col(0.6 + 0.4 * u[i, 92 + k]),
                         _col(math.pi * u[i, 94 + k]))
        conc[i, STAIN_PURPLE] = torch.maximum(conc[i, STAIN_PURPLE], plate * 0.55)
    conc = conc * ~cell[:, None]  # the white cell lies over whatever it touches

    # cytoplasm: ground colour with texture
    cyto_c = torch.tensor([MORPHOLOGY[c].cytoplasm for c in CLASSES])[labels]  # B × 3
    # its mottling: ±40 % of the dye (sd), as the optical density of real cytoplasm varies by 35-50 % of
    # its mean within a cell (Zheng et al. 2018 smears, measured by benchmarks/calibrate_synth.py)
    tex = _standardise(_blur(d.tex, 0.6 / um))
    conc = torch.where(cytoplasm[:, None], cyto_c[:, :, None, None] * (1 + 0.4 * tex[:, None]).clamp(min=0), conc)
    # monocyte vacuoles: clear round holes in the cytoplasm
    mono = labels == _CLS["monocyte"]
    n_vac = _poisson(u[:, 56], 1.5, 4) * mono
    for k in range(4):
        i = torch.nonzero(n_vac > k).flatten()
        a = 2 * math.pi * n[i, 16 + k].sigmoid()
        rr = (0.55 + 0.35 * u[i, 57 + (k % 3)]) * R[i]
        rad = 0.35 + 0.45 * n[i, 20 + k % 4].sigmoid()
        vac = (torch.hypot(x[i] - _col(rr * torch.cos(a)), y[i] - _col(rr * torch.sin(a))) < _col(rad)) & cytoplasm[i]
        conc[i] = torch.where(vac[:, None], conc[i] * 0.25, conc[i])

    # nucleus: chromatin texture (clumped in lymphocytes and neutrophils, lacy in monocytes)
    sig = torch.full((B,), 0.45)
    amp = torch.full((B,), 0.25)
    base = torch.full((B,), 1.0)
    sig[lym], amp[lym], base[lym] = 0.5, 0.28, 1.15
    sig[mono], amp[mono], base[mono] = 0.35, 0.32, 0.8
    chrom = torch.empty_like(d.chrom)
    for s in sig.unique().tolist():
        sel = sig == s
        chrom[sel] = _standardise(_blur(d.chrom[sel], s / um))
    purple = _col(base) * (1 + _col(amp) * chrom)
    conc[:, STAIN_PURPLE] = torch.where(nucleus, purple, conc[:, STAIN_PURPLE])
    conc[:, STAIN_MB] = torch.where(nucleus, 0.15, conc[:, STAIN_MB])

    # granules: Poisson-placed dots blurred to their size
    for cls, region, density, radius_um, weights in (
        ("neutrophil", cytoplasm, 0.25, 0.25, (0.0, 0.12, 0.10)),  # fine lilac dust
        ("eosinophil", cytoplasm, 0.22, 0.30, (0.05, 0.0, 0.95)),  # packed orange-red granules
        ("basophil", cell, 0.14, 0.30, (0.35, 1.15, 0.0)),  # purple-black, over the nucleus too
    ):
        sel = labels == _CLS[cls]
        if not sel.any():
            continue
        reg = region[sel]
        seeds = ((d.gran[sel] < density) & reg).float()
        sigma = max(radius_um / um, 0.3)
        g = (_blur(seeds, sigma, mode="constant") * (2 * math.pi * sigma ** 2)).clamp(0, 1.6) * reg
        conc[sel] = conc[sel] + torch.tensor(weights).view(1, 3, 1, 1) * g[:, None]
    return conc, nucleus, cytoplasm, diameter


def _stains(domain: Domain, labels: torch.Tensor, seed: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image dye absorbance (B × dye × RGB, strength folded in) and background OD (B × 3)."""
    st = domain.stain
    B = len(labels)
    vec = (torch.tensor(st.vectors, dtype=torch.float32) * torch.tensor(st.strength).view(3, 1)).expand(B, 3, 3)
    bg = torch.tensor(st.background_od, dtype=torch.float32).expand(B, 3)
    if domain.stain_mode == "per-class":
        # Batch k's dye strengths: 1 + 0.25·cos(2πk/5 + phase of the dye), a fixed, documented table.
        k = labels.float()[:, None]
        phase = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3])[None]
        vec = vec * (1 + 0.25 * torch.cos(2 * math.pi * k / len(CLASSES) + phase))[:, :, None]
    elif domain.stain_mode == "random":
        g = torch.Generator().manual_seed(_key("stain", seed, chunk))
        rand_vec = 0.05 + 0.9 * torch.rand(CHUNK, 3, 3, generator=g)[:B]
        strength = 0.6 + 0.8 * torch.rand(CHUNK, 3, generator=g)[:B]
        vec = rand_vec * strength[:, :, None]
        bg = 0.12 * torch.rand(CHUNK, 3, generator=g)[:B]
    elif domain.stain_mode != "fixed":
        raise ValueError(f"domain {domain.name!r}: unknown stain_mode {domain.stain_mode!r}")
    return vec, bg


def _jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Saves and reloads each image as JPEG at ``quality`` (images B × 3 × H × W in [0, 1])."""
    import io

    from PIL import Image

    out = torch.empty_like(images)
    arr = (images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    for i, a in enumerate(arr):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        out[i] = torch.from_numpy(np.array(Image.open(buf).convert("RGB"))).permute(2, 0, 1).float() / 255
    return out


def _render(conc: torch.Tensor, domain: Domain, noise: torch.Tensor, vec: torch.Tensor, bg: torch.Tensor
            ) -> torch.Tensor:
    """Stain concentrations (B × 3 dyes × H × W) → RGB through the stains and the camera."""
    cam = domain.camera
    od = torch.einsum("bshw,bsc->bchw", conc, vec) + bg[:, :, None, None]
    rgb = torch.tensor(cam.illuminant).view(1, 3, 1, 1) * torch.exp(-od * math.log(10))
    rgb = torch.einsum("bchw,dc->bdhw", rgb, torch.tensor(cam.colour_matrix, dtype=torch.float32))
    rgb = rgb.clamp(0, 1) ** cam.gamma
    size = rgb.shape[-1]
    if cam.resolution < 1.0:  # a coarser sensor: sample low, show at the output size
        low = max(4, int(round(size * cam.resolution)))
        rgb = F.interpolate(rgb, size=(low, low), mode="bilinear", align_corners=False, antialias=True)
        rgb = F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False)
    rgb = _blur(rgb, cam.blur_px, mode="replicate")
    rgb = (rgb + cam.noise * noise * rgb.clamp(0.05, 1).sqrt()).clamp(0, 1)
    if cam.jpeg_quality:
        rgb = _jpeg(rgb, cam.jpeg_quality)
    return rgb


def _domain_noise(seed: int, chunk: int, size: int, domain: Domain) -> torch.Tensor:
    g = torch.Generator().manual_seed(_key("camera", seed, chunk, size, domain.name))
    return torch.randn(CHUNK, 3, size, size, generator=g)



def _labels(seed: int, n: int, class_probs: tuple[float, ...] | None) -> np.ndarray:
    if class_probs is None:  # balanced: every prefix of a split is balanced too
        return np.arange(n, dtype=np.int64) % len(CLASSES)
    p = np.asarray(class_probs, dtype=np.float64)
    if p.shape != (len(CLASSES),) or (p < 0).any() or not np.isclose(p.sum(), 1.0):
        raise ValueError(f"class_probs must be {len(CLASSES)} non-negative numbers summing to 1")
    u = np.random.default_rng([seed, 1]).random(n)  # a prefix of the same stream for any n
    return np.searchsorted(np.cumsum(p), u, side="right").clip(max=len(CLASSES) - 1).astype(np.int64)


def _render_chunk(seed: int, chunk: int, labels: np.ndarray, size: int, domain: Domain, um: float):
    """Renders all ``CHUNK`` images of one chunk: ``(images, masks, diameters, nucleus fractions)``.

    Always whole chunks, so an image is computed in the same batch whatever was asked for: FFTs and
    reductions then round the same way, and image ``i`` is byte-identical across calls. Images are
    quantised to 8 bits, as a camera's are.
    """
    lab = torch.as_tensor(labels)
    conc, nucleus, cytoplasm, diameter = _morphology(_draw_chunk(seed, chunk, size), lab, size, um)
    vec, bg = _stains(domain, lab, seed, chunk)
    images = _render(conc, domain, _domain_noise(seed, chunk, size, domain), vec, bg)
    images = torch.round(images * 255) / 255
    masks = nucleus.to(torch.uint8) * 2 + cytoplasm.to(torch.uint8)
    nfrac = nucleus.flatten(1).sum(1) / (nucleus | cytoplasm).flatten(1).sum(1).clamp(min=1)
    return images, masks, diameter, nfrac


def pixel_size(size: int, um_per_px: float | None = None) -> float:
    """Gives µm per pixel: ``um_per_px`` if given (a magnification), else the 25.6 µm field over ``size``."""
    if um_per_px is None:
        return FIELD_UM / size
    if not 0.05 <= um_per_px <= 2.0:
        raise ValueError(f"um_per_px must be within 0.05..2 µm per pixel, got {um_per_px}")
    return float(um_per_px)


def render_cell(seed: int, index: int, label: int, size: int = 64, domain: Domain = SOURCE_LAB,
                class_probs: tuple[float, ...] | None = None, um_per_px: float | None = None
                ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Gives ``(image float32 H×W×3 in [0,1], mask uint8 H×W, meta)`` for one cell.

    The same as image ``index`` of :func:`generate` when ``label`` is its label; the morphology
    draws come from ``(seed, index)`` only, so the same cell can be rendered under another domain.
    """
    c, row = divmod(index, CHUNK)
    labels = _labels(seed, (c + 1) * CHUNK, class_probs)[c * CHUNK:]
    labels[row] = label
    um = pixel_size(size, um_per_px)
    images, masks, diam, nfrac = _render_chunk(seed, c, labels, size, domain, um)
    meta = {"class": CLASSES[label], "diameter_um": float(diam[row]), "um_per_px": um,
            "nucleus_frac": float(nfrac[row])}
    return images[row].permute(1, 2, 0).numpy(), masks[row].numpy(), meta


def generate(
    seed: int, n: int, size: int = 64, domain: Domain = SOURCE_LAB,
    class_probs: tuple[float, ...] | None = None, start: int = 0, um_per_px: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """Gives ``(images N×3×H×W float32, labels N int64, masks N×H×W uint8, meta)``.

    Images ``start … start + n − 1`` of the stream ``seed``: generating a large set in batches
    (``start`` = 0, B, 2B, …) gives the same images as one call. Labels are balanced
    (``index % 5``) unless ``class_probs`` gives class priors. ``um_per_px`` sets the pixel size
    (the magnification; default: a 25.6 µm field whatever ``size``): every length in µm scales by it.
    """
    if not 8 <= size <= 256:
        raise ValueError(f"image size must be within 8..256 pixels, got {size}")
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be ≥ 0, got n={n}, start={start}")
    stop = start + n
    all_labels = _labels(seed, -(-stop // CHUNK) * CHUNK, class_probs)
    labels = all_labels[start:stop]
    indices = np.arange(start, stop)
    um = pixel_size(size, um_per_px)
    # torch buffers: copy_ into them is several times faster than numpy slice assignment here
    images = torch.empty(n, 3, size, size)
    masks = torch.empty(n, size, size, dtype=torch.uint8)
    diam, nfrac = torch.empty(n), torch.empty(n)
    for c in range(start // CHUNK, -(-stop // CHUNK)):
        lo, hi = max(start, c * CHUNK), min(stop, (c + 1) * CHUNK)
        im, mk, dm, nf = _render_chunk(seed, c, all_labels[c * CHUNK:(c + 1) * CHUNK], size, domain, um)
        rows, out = slice(lo - c * CHUNK, hi - c * CHUNK), slice(lo - start, hi - start)
        images[out].copy_(im[rows])
        masks[out].copy_(mk[rows])
        diam[out].copy_(dm[rows])
        nfrac[out].copy_(nf[rows])
    meta = [{"class": CLASSES[lab], "diameter_um": float(dm), "um_per_px": um, "nucleus_frac": float(nf),
             "domain": domain.name, "index": int(i)}
            for i, lab, dm, nf in zip(indices, labels.tolist(), diam.tolist(), nfrac.tolist())]
    return images.numpy(), labels, masks.numpy(), meta
