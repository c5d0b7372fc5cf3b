"""SynthWBC: a procedural generator of stained white-blood-cell images with exact masks.

Each image is one white cell near the centre of a small field of a peripheral-blood smear, drawn
from morphology (sizes in µm, nucleus shapes, granules) and rendered through a stain model in
optical-density space (Beer-Lambert, as in Ruifrok & Johnston, Anal. Quant. Cytol. Histol. 2001)
and a camera model (illuminant, colour response, gamma, blur, resolution, noise). The mask says
what each pixel *is* (0 background, 1 cytoplasm, 2 nucleus), not how it looks: under a basophil's
granules the nucleus is still labelled nucleus. The facts behind each choice are on the dataset
card, ``DATASET_CARD.md`` beside this file.

Everything is deterministic by ``(seed, index)``: image ``i`` of a split is the same whatever the
number of images asked for, and the same cell can be rendered under several domains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

CLASSES: tuple[str, ...] = ("neutrophil", "eosinophil", "basophil", "lymphocyte", "monocyte")
FIELD_UM = 25.6  # field of view in µm; 64 px → 0.4 µm/px, so a 20 µm monocyte still fits
GENERATOR_VERSION = "synthwbc-1"

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


@dataclass(frozen=True)
class Domain:
    """A lab: a stain protocol seen through a microscope and camera."""

    name: str
    stain: Stain = field(default_factory=Stain)
    camera: Camera = field(default_factory=Camera)
    description: str = ""


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
    ),
    description="another stain protocol and another microscope-camera pair",
)


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
    "monocyte": ClassMorphology((12.0, 20.0), "kidney", cytoplasm=(0.20, 0.06, 0.07)),
}


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gives zero-mean, unit-std noise smoothed at ``sigma`` pixels (a texture field)."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (n - n.mean()) / (n.std() + 1e-8)


def _ellipse(x, y, cx, cy, a, b, angle):
    c, s = np.cos(angle), np.sin(angle)
    u = (x - cx) * c + (y - cy) * s
    v = -(x - cx) * s + (y - cy) * c
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _capsule(x, y, p0, p1, width):
    """Pixels within ``width / 2`` of the segment p0–p1 (a chromatin filament)."""
    d = np.subtract(p1, p0)
    t = np.clip(((x - p0[0]) * d[0] + (y - p0[1]) * d[1]) / (d @ d + 1e-9), 0, 1)
    return np.hypot(x - p0[0] - t * d[0], y - p0[1] - t * d[1]) <= width / 2


def _granules(rng, shape, region, density, radius_px):
    """A granule concentration map: Poisson-placed dots of ``radius_px``, inside ``region``."""
    seeds = (rng.random(shape) < density) & region
    g = ndimage.gaussian_filter(seeds.astype(np.float64), max(radius_px, 0.3))
    peak = 1.0 / (2 * np.pi * max(radius_px, 0.3) ** 2)
    return np.clip(g / peak, 0, 1.6) * region


def _nucleus(cls: str, m: ClassMorphology, rng, x, y, R, cell_r_map):
    """The nucleus mask of one cell, in µm coordinates centred on the cell."""
    rot = rng.uniform(0, 2 * np.pi)
    if m.nucleus == "round":  # lymphocyte: round, dense, filling most of the cell
        frac = rng.uniform(0.74, 0.88) if R < 5.0 else rng.uniform(0.6, 0.76)
        a = frac * R
        off = rng.uniform(0, 0.45) * (R - a)
        cx, cy = off * np.cos(rot), off * np.sin(rot)
        nuc = _ellipse(x, y, cx, cy, a, a * rng.uniform(0.88, 1.0), rot)
        # a shallow indentation on one side is common
        if rng.random() < 0.4:
            nuc &= ~(np.hypot(x - cx - 1.05 * a * np.cos(rot), y - cy - 1.05 * a * np.sin(rot)) < 0.35 * a)
    elif m.nucleus == "kidney":  # monocyte: kidney to horseshoe, an ellipse with a bite
        a, b = rng.uniform(0.58, 0.68) * R, rng.uniform(0.42, 0.5) * R
        off = rng.uniform(0.0, 0.15) * R
        cx, cy = off * np.cos(rot + 2.0), off * np.sin(rot + 2.0)
        nuc = _ellipse(x, y, cx, cy, a, b, rot)
        bite_d = b * rng.uniform(0.75, 1.05)
        bx, by = cx - bite_d * np.sin(rot), cy + bite_d * np.cos(rot)
        nuc &= ~(np.hypot(x - bx, y - by) < rng.uniform(0.45, 0.62) * a)
    else:  # segmented nucleus: lobes along an arc, joined by filaments or broad bridges
        n = int(rng.choice(m.lobes, p=m.lobe_p))
        if cls == "neutrophil":
            la, lb, arc_r, width = 0.28 * R, 0.22 * R, 0.46 * R, 0.5
        elif cls == "eosinophil":  # usually two large lobes, spectacle-like
            la, lb, arc_r, width = 0.33 * R, 0.27 * R, 0.4 * R, 0.7
        else:  # basophil: bilobed / S-shaped, broad bridge
            la, lb, arc_r, width = 0.33 * R, 0.26 * R, 0.32 * R, 1.4
        span = rng.uniform(0.55, 0.85) * np.pi * (n - 1) / max(n - 1, 1) * (1.0 if n > 2 else 0.9)
        angles = rot + np.linspace(-span / 2, span / 2, n) if n > 1 else np.array([rot])
        if n == 2:
            angles = np.array([rot, rot + np.pi])  # two lobes face each other across the centre
        centres = [(arc_r * np.cos(t), arc_r * np.sin(t)) for t in angles]
        nuc = np.zeros_like(x, dtype=bool)
        for (cx, cy), t in zip(centres, angles):
            nuc |= _ellipse(x, y, cx, cy, la * rng.uniform(0.9, 1.1), lb * rng.uniform(0.9, 1.1),
                            t + np.pi / 2 + rng.normal(0, 0.3))
        for p0, p1 in zip(centres[:-1], centres[1:]):
            nuc |= _capsule(x, y, np.array(p0), np.array(p1), width)
    rho = np.hypot(x, y)
    return nuc & (rho <= cell_r_map - 0.6)  # the nucleus stays inside the membrane


def render_cell(
    seed: int, index: int, label: int, size: int = 64, domain: Domain = SOURCE_LAB
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Gives ``(image float32 HxWx3 in [0,1], mask uint8 HxW, meta)`` for one cell.

    The morphology draws come from ``(seed, index)`` only, so the same cell can be rendered
    under another domain; the camera's noise comes from ``(seed, index, domain)``.
    """
    cls = CLASSES[label]
    m = MORPHOLOGY[cls]
    rng = np.random.default_rng([seed, index, 0])
    um = FIELD_UM / size  # µm per pixel
    coords = (np.arange(size) - (size - 1) / 2) * um
    X, Y = np.meshgrid(coords, coords)

    # --- the white cell
    d_lo, d_hi = m.diameter_um
    if cls == "lymphocyte":  # mostly small lymphocytes, some large ones
        diameter = rng.uniform(6.5, 10.0) if rng.random() < 0.75 else rng.uniform(10.0, d_hi)
    else:
        diameter = rng.uniform(d_lo, d_hi)
    R = diameter / 2
    ccx, ccy = rng.normal(0, 0.8, size=2)
    x, y = X - ccx, Y - ccy
    theta = np.arctan2(y, x)
    wobble = 1 + sum(rng.normal(0, 0.035) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    cell_r_map = R * wobble
    cell = np.hypot(x, y) <= cell_r_map
    nucleus = _nucleus(cls, m, rng, x, y, R, cell_r_map) & cell
    cytoplasm = cell & ~nucleus

    conc = np.zeros((3, size, size))  # MB, purple, eosin
    # --- background: red cells (≈7.5 µm discs with central pallor), platelets
    for _ in range(rng.poisson(2.2)):
        r_rbc = rng.uniform(3.4, 4.1)
        ang, dist = rng.uniform(0, 2 * np.pi), rng.uniform(R * 0.7, FIELD_UM * 0.75)
        rx, ry = ccx + dist * np.cos(ang), ccy + dist * np.sin(ang)
        d = np.hypot(X - rx, Y - ry) / r_rbc
        disc = d <= 1
        pallor = 1 - 0.55 * np.exp(-(d / 0.45) ** 2)
        conc[STAIN_EOSIN] = np.maximum(conc[STAIN_EOSIN], disc * 0.32 * pallor * rng.uniform(0.85, 1.1))
    for _ in range(rng.poisson(0.5)):
        px, py = rng.uniform(-FIELD_UM / 2, FIELD_UM / 2, size=2)
        plate = _ellipse(X, Y, px, py, rng.uniform(0.8, 1.4), rng.uniform(0.6, 1.0), rng.uniform(0, np.pi))
        conc[STAIN_PURPLE] = np.maximum(conc[STAIN_PURPLE], plate * 0.55)
    conc[:, cell] = 0.0  # the white cell lies over whatever it touches

    # --- cytoplasm: ground colour with texture
    tex_fine = _smooth_noise(rng, (size, size), 0.6 / um)
    for s, c in enumerate(m.cytoplasm):
        conc[s][cytoplasm] = c * (1 + 0.12 * tex_fine[cytoplasm])
    if cls == "monocyte":  # vacuoles: clear round holes in the cytoplasm
        for _ in range(rng.poisson(1.5)):
            a = rng.uniform(0, 2 * np.pi)
            rr = rng.uniform(0.55, 0.9) * R
            vac = (np.hypot(x - rr * np.cos(a), y - rr * np.sin(a)) < rng.uniform(0.35, 0.8)) & cytoplasm
            conc[:, vac] *= 0.25

    # --- nucleus: chromatin texture (clumped in lymphocytes and neutrophils, lacy in monocytes)
    chrom_sigma, chrom_amp, chrom_base = {
        "lymphocyte": (0.5, 0.28, 1.15), "monocyte": (0.35, 0.32, 0.8),
    }.get(cls, (0.45, 0.25, 1.0))
    chrom = _smooth_noise(rng, (size, size), chrom_sigma / um)
    conc[STAIN_PURPLE][nucleus] = chrom_base * (1 + chrom_amp * chrom[nucleus])
    conc[STAIN_MB][nucleus] = 0.15

    # --- granules
    if m.granules == "fine":  # neutrophil: fine, barely resolved lilac dust
        g = _granules(rng, (size, size), cytoplasm, 0.25, 0.25 / um)
        conc[STAIN_PURPLE] += 0.12 * g
        conc[STAIN_EOSIN] += 0.1 * g
    elif m.granules == "large-eosin":  # eosinophil: packed, large orange-red granules
        g = _granules(rng, (size, size), cytoplasm, 0.22, 0.3 / um)
        conc[STAIN_EOSIN] += 0.95 * g
        conc[STAIN_MB] += 0.05 * g
    elif m.granules == "large-dark":  # basophil: large purple-black granules, over the nucleus too
        g = _granules(rng, (size, size), cell, 0.14, 0.3 / um)
        conc[STAIN_PURPLE] += 1.15 * g
        conc[STAIN_MB] += 0.35 * g

    image = _render(conc, domain, rng=np.random.default_rng([seed, index, _domain_key(domain)]))
    mask = np.where(nucleus, 2, np.where(cytoplasm, 1, 0)).astype(np.uint8)
    meta = {"class": cls, "diameter_um": float(diameter), "um_per_px": float(um),
            "nucleus_frac": float(nucleus.sum() / max(cell.sum(), 1))}
    return image, mask, meta


def _domain_key(domain: Domain) -> int:
    return int.from_bytes(domain.name.encode()[:7].ljust(7, b"\0"), "little")


def _render(conc: np.ndarray, domain: Domain, rng: np.random.Generator) -> np.ndarray:
    """Stain concentrations (3 dyes × H × W) → RGB through the domain's stain and camera."""
    st, cam = domain.stain, domain.camera
    vec = np.asarray(st.vectors) * np.asarray(st.strength)[:, None]  # dye × RGB
    od = np.einsum("shw,sc->hwc", conc, vec) + np.asarray(st.background_od)
    rgb = np.asarray(cam.illuminant) * np.exp(-od * np.log(10))
    rgb = rgb @ np.asarray(cam.colour_matrix).T
    rgb = np.clip(rgb, 0, 1) ** cam.gamma
    size = rgb.shape[0]
    if cam.resolution < 1.0:  # a coarser sensor: sample low, show at the output size
        low = max(4, int(round(size * cam.resolution)))
        rgb = ndimage.zoom(rgb, (low / size, low / size, 1), order=1)
        rgb = ndimage.zoom(rgb, (size / rgb.shape[0], size / rgb.shape[1], 1), order=1)
    if cam.blur_px > 0:
        rgb = ndimage.gaussian_filter(rgb, (cam.blur_px, cam.blur_px, 0))
    rgb = rgb + rng.normal(0, cam.noise, rgb.shape) * np.sqrt(np.clip(rgb, 0.05, 1))
    return np.clip(rgb, 0, 1).astype(np.float32)


def generate(
    seed: int, n: int, size: int = 64, domain: Domain = SOURCE_LAB,
    class_probs: tuple[float, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """Gives ``(images N×3×H×W float32, labels N int64, masks N×H×W uint8, meta)``.

    Labels are balanced (``index % 5``, so every prefix is balanced too) unless
    ``class_probs`` gives class priors, then drawn from ``(seed, index)``.
    """
    if not 8 <= size <= 256:
        raise ValueError(f"image size must be within 8..256 pixels, got {size}")
    images = np.empty((n, 3, size, size), np.float32)
    masks = np.empty((n, size, size), np.uint8)
    labels = np.empty(n, np.int64)
    meta = []
    for i in range(n):
        if class_probs is None:
            labels[i] = i % len(CLASSES)
        else:
            labels[i] = np.random.default_rng([seed, i, 1]).choice(len(CLASSES), p=class_probs)
        img, mk, md = render_cell(seed, i, int(labels[i]), size, domain)
        images[i] = img.transpose(2, 0, 1)
        masks[i] = mk
        meta.append(md | {"domain": domain.name, "index": i})
    return images, labels, masks, meta

