"""Corruptions: the contract of every corruption × severity, severity order, sizes, directions, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustbench_wbc.data.corruptions import (
    CORRUPTIONS,
    DEPOSIT_OD,
    SEVERITIES,
    Corruption,
    corrupt,
    describe,
    get_corruption,
)
from robustbench_wbc.data.synth import generate
from robustbench_wbc.registry import UnknownNameError

SEED = 3000
NAMES = list(CORRUPTIONS)
CASES = [(name, s) for name in NAMES for s in SEVERITIES]
# corruptions whose lengths are scaled with the image size (pixelate keeps a fraction of the
# image's own resolution; JPEG blocks and per-pixel noise are tied to the pixel grid)
PHYSICAL = ("defocus_blur", "motion_blur", "stain_deposit", "bubble")


@pytest.fixture(scope="module")
def cells() -> torch.Tensor:
    """8 SynthWBC images at 64 px (all five classes)."""
    images, labels, masks, meta = generate(SEED, 8, 64)
    return torch.from_numpy(images)


@pytest.fixture(scope="module")
def corrupted(cells) -> dict[tuple[str, int], torch.Tensor]:
    """Every corruption × severity of ``cells``, computed once."""
    return {(name, s): corrupt(cells, name, s) for name, s in CASES}


def _mad(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per image."""
    return (a - b).abs().flatten(1).mean(1)


def _high_freq(x: torch.Tensor) -> torch.Tensor:
    """Energy left after a 3×3 box blur, per image: fine detail and noise."""
    low = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    return ((x - low) ** 2).flatten(1).mean(1)


# --- the registry ------------------------------------------------------------------------------
def test_registry_holds_the_benchmark_set():
    assert NAMES == [
        "defocus_blur", "motion_blur", "jpeg_compression", "pixelate", "brightness_up", "brightness_down",
        "contrast_up", "contrast_down", "saturate", "stain_deposit", "bubble", "gaussian_noise",
    ]
    for name, entry in CORRUPTIONS.items():
        assert isinstance(entry, Corruption) and entry.name == name and get_corruption(name) is entry
        assert entry.description and entry.param
        assert len(entry.params) == 5 and all(isinstance(v, (int, float)) for v in entry.params)
        # a severity scale: strictly one way from 1 to 5
        steps = [b - a for a, b in zip(entry.params, entry.params[1:])]
        assert all(d > 0 for d in steps) or all(d < 0 for d in steps), (name, entry.params)
        assert entry.value(1) == entry.params[0] and entry.value(5) == entry.params[4]


def test_stochastic_flag_is_true():
    """A corruption declared stochastic varies with the seed and the index; the others do not."""
    x = torch.from_numpy(generate(SEED, 1, 32)[0])
    for name, entry in CORRUPTIONS.items():
        base = corrupt(x, name, 3, seed=0)
        other_seed = corrupt(x, name, 3, seed=1)
        other_index = corrupt(x, name, 3, seed=0, indices=[7])
        assert torch.equal(base, other_seed) != entry.stochastic, name
        assert torch.equal(base, other_index) != entry.stochastic, name


def test_describe_lists_every_corruption_with_its_scale():
    lines = describe().splitlines()
    assert len(lines) == len(CORRUPTIONS)
    for line, entry in zip(lines, CORRUPTIONS.values()):
        assert line.startswith(f"{entry.name}: {entry.description}")
        assert ", ".join(f"{v:g}" for v in entry.params) in line


# --- every corruption × severity ---------------------------------------------------------------
@pytest.mark.parametrize("name,severity", CASES)
def test_output_contract(cells, corrupted, name, severity):
    before = cells.clone()
    out = corrupted[name, severity]
    assert out.shape == cells.shape and out.dtype == torch.float32 and out.device == cells.device
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(cells, before)  # the input is left alone
    assert (_mad(out, cells) > 1e-3).all()  # every image changes, visibly


@pytest.mark.parametrize("name,severity", CASES)
def test_deterministic(cells, corrupted, name, severity):
    again = corrupt(cells.clone(), name, severity)
    assert torch.equal(again, corrupted[name, severity])


@pytest.mark.parametrize("name,severity", CASES)
def test_image_independent_of_its_batch(cells, corrupted, name, severity):
    out = corrupted[name, severity]
    for i in (0, 5):
        assert torch.equal(corrupt(cells[i:i + 1], name, severity, indices=[i])[0], out[i])
    assert torch.equal(corrupt(cells[3:7], name, severity, indices=range(3, 7)), out[3:7])


@pytest.mark.parametrize("name", NAMES)
def test_severity_is_monotone(cells, corrupted, name):
    mads = [float(_mad(corrupted[name, s], cells).mean()) for s in SEVERITIES]
    assert all(b >= a for a, b in zip(mads, mads[1:])), mads
    assert mads[-1] > 1.2 * mads[0], mads


# --- sizes -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cells_by_size() -> dict[int, torch.Tensor]:
    return {size: torch.from_numpy(generate(SEED, 2, size)[0]) for size in (32, 128)}


@pytest.mark.parametrize("size", [32, 128])
@pytest.mark.parametrize("name", NAMES)
def test_other_sizes(cells_by_size, name, size):
    x = cells_by_size[size]
    for severity in (1, 5):
        out = corrupt(x, name, severity)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
        assert (_mad(out, x) > 1e-3).all(), severity  # severity 1 is not lost at 32 px


@pytest.mark.parametrize("name", PHYSICAL)
def test_same_physical_effect_at_every_size(cells_by_size, name):
    """Corrupting at 128 px then shrinking to 32 px ≈ corrupting the 32-px image: lengths scale."""
    x128 = cells_by_size[128]
    x32 = F.avg_pool2d(x128, 4)
    y32 = corrupt(x32, name, 5)
    effect = _mad(y32, x32).mean()
    mismatch = _mad(F.avg_pool2d(corrupt(x128, name, 5), 4), y32).mean()
    # lengths left in pixels would give a mismatch of 0.7 to 1.2 times the effect
    assert mismatch < 0.5 * effect


@pytest.mark.parametrize("size", [32, 64, 128])
def test_pixelate_keeps_a_fraction_of_the_resolution(size):
    x = torch.from_numpy(generate(SEED, 1, size)[0])
    for severity in SEVERITIES:
        out = corrupt(x, "pixelate", severity)[0]
        blocks_x = 1 + int((out[:, :, 1:] != out[:, :, :-1]).any(dim=(0, 1)).sum())
        blocks_y = 1 + int((out[:, 1:, :] != out[:, :-1, :]).any(dim=(0, 2)).sum())
        expected = round(size * CORRUPTIONS["pixelate"].value(severity))
        assert blocks_x == blocks_y == expected, (severity, blocks_x, blocks_y, expected)


# --- what each corruption does -----------------------------------------------------------------
@pytest.mark.parametrize("severity", SEVERITIES)
def test_directions(cells, corrupted, severity):
    def channel_spread(x):
        return (x.amax(1) - x.amin(1)).flatten(1).mean(1)

    def get(name):
        return corrupted[name, severity]

    mean, std = cells.flatten(1).mean(1), cells.flatten(1).std(1)
    assert (get("brightness_up").flatten(1).mean(1) > mean).all()
    assert (get("brightness_down").flatten(1).mean(1) < mean).all()
    assert (get("contrast_up").flatten(1).std(1) > std).all()
    assert (get("contrast_down").flatten(1).std(1) < std).all()
    assert (channel_spread(get("saturate")) > channel_spread(cells)).all()
    assert (_high_freq(get("gaussian_noise")) > _high_freq(cells)).all()
    assert (_high_freq(get("defocus_blur")) < _high_freq(cells)).all()
    assert (_high_freq(get("motion_blur")) < _high_freq(cells)).all()


def test_colour_corruptions_keep_hue(cells, corrupted):
    """Brightness and saturation change HSV value or saturation, not which channel leads."""
    for name in ("brightness_up", "brightness_down", "saturate"):
        out = corrupted[name, 5]
        vivid = (cells.amax(1) - cells.amin(1)) > 0.05  # pixels with a well-defined hue
        assert torch.equal(out.argmax(1)[vivid], cells.argmax(1)[vivid]), name
        assert torch.equal(out.argmin(1)[vivid], cells.argmin(1)[vivid]), name


def test_stain_deposit_darkens_in_the_dye_colour(cells, corrupted):
    out = corrupted["stain_deposit", 5]
    assert (out <= cells).all()  # precipitate only absorbs
    od = torch.log10(cells.clamp_min(1e-3) / out.clamp_min(1e-3))  # the deposit's optical density
    hit = od.amax(1) > 0.2
    assert hit.any()
    ratio = od.permute(1, 0, 2, 3)[:, hit]  # 3 × deposit pixels
    # absorbance R G B ∝ DEPOSIT_OD where no pixel is clipped: blue absorbs least
    unclipped = (out.permute(1, 0, 2, 3)[:, hit] > 2e-3).all(0)
    shares = ratio[:, unclipped] / ratio[:, unclipped].sum(0)
    expected = torch.tensor(DEPOSIT_OD) / sum(DEPOSIT_OD)
    torch.testing.assert_close(shares.median(1).values, expected, atol=0.03, rtol=0)


def test_artefacts_are_nested_across_severities(cells, corrupted):
    """A higher severity keeps the lower one's deposits and bubbles and adds more."""
    for low, high in zip(SEVERITIES, SEVERITIES[1:]):
        assert (corrupted["stain_deposit", high] <= corrupted["stain_deposit", low]).all()
        assert (corrupted["stain_deposit", high] < corrupted["stain_deposit", low]).any()
        changed_low = (corrupted["bubble", low] - cells).abs().amax(1) > 0.02
        changed_high = (corrupted["bubble", high] - cells).abs().amax(1) > 0.02
        # a later bubble's rim may cross an earlier interior, so not every pixel stays changed
        assert (changed_high & changed_low).sum() >= 0.95 * changed_low.sum()
        assert changed_high.sum() > changed_low.sum()


def test_bubble_rims_are_dark_and_neutral(cells, corrupted):
    out = corrupted["bubble", 5]
    darker = (cells - out).amin(1) > 0.15  # much darker in every channel: a rim
    assert darker.any()
    # the rim scales all channels alike (grey), so their ratios are kept
    ratio = out.permute(1, 0, 2, 3)[:, darker] / cells.permute(1, 0, 2, 3)[:, darker]
    assert float((ratio.amax(0) - ratio.amin(0)).max()) < 0.25


def test_gaussian_noise_has_the_stated_std():
    x = torch.full((4, 3, 64, 64), 0.5)
    for severity in SEVERITIES:
        noise = corrupt(x, "gaussian_noise", severity) - x
        assert float(noise.std()) == pytest.approx(CORRUPTIONS["gaussian_noise"].value(severity), rel=0.03)
        assert abs(float(noise.mean())) < 0.003


# --- errors and edge cases ---------------------------------------------------------------------
@pytest.mark.parametrize("typo,meant", [("gausian_noise", "gaussian_noise"), ("defocus", "defocus_blur"),
                                        ("jpeg", "jpeg_compression"), ("brightness", "brightness_down")])
def test_unknown_name_suggests_the_close_one(typo, meant):
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(KeyError, match=f"Did you mean: [a-z_, ]*{meant}") as info:
        corrupt(x, typo, 1)
    assert isinstance(info.value, UnknownNameError) and meant in info.value.suggestions


@pytest.mark.parametrize("severity", [0, 6, -1, 2.5, True])
def test_bad_severity(severity):
    with pytest.raises(ValueError, match="severity"):
        corrupt(torch.rand(1, 3, 16, 16), "pixelate", severity)
    with pytest.raises(ValueError, match="severity"):
        CORRUPTIONS["pixelate"].value(severity)


@pytest.mark.parametrize("images,match", [
    (torch.rand(1, 16, 16, 3), "N×3×H×W"),
    (torch.rand(3, 16, 16), "N×3×H×W"),
    (torch.rand(1, 3, 16, 16, dtype=torch.float64), "float32"),
    (torch.rand(1, 3, 16, 16) * 2, r"\[0, 1\]"),
    (torch.full((1, 3, 16, 16), float("nan")), "finite"),
])
def test_bad_images(images, match):
    with pytest.raises(ValueError, match=match):
        corrupt(images, "bubble", 1)


def test_bad_indices_and_seed():
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="indices"):
        corrupt(x, "bubble", 1, indices=[0])
    with pytest.raises(ValueError, match="indices"):
        corrupt(x, "bubble", 1, indices=[0, -1])
    with pytest.raises(ValueError, match="seed"):
        corrupt(x, "bubble", 1, seed=-1)


def test_empty_batch():
    x = torch.empty(0, 3, 16, 16)
    for name in NAMES:
        out = corrupt(x, name, 3)
        assert out.shape == x.shape and out.dtype == torch.float32
