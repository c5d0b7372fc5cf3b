"""SynthWBC: determinism, shapes, masks that match the pixels, morphology, domains, splits."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage

from robustbench_wbc.data import CLASSES, DEFAULT_EVAL_SPLITS, LAB_B, SOURCE_LAB, SPLITS, SplitData, generate
from robustbench_wbc.data.synth import render_cell

SEED = 4242


@pytest.fixture(scope="module")
def source64():
    """100 source-lab images at 64 px: 20 per class."""
    return generate(SEED, 100, 64)


def _by_class(labels: np.ndarray) -> dict[str, np.ndarray]:
    return {name: np.flatnonzero(labels == k) for k, name in enumerate(CLASSES)}


# --- determinism -------------------------------------------------------------------------------
def test_deterministic_by_seed():
    a = generate(7, 10, 32)
    b = generate(7, 10, 32)
    for x, y in zip(a[:3], b[:3]):
        np.testing.assert_array_equal(x, y)
    assert a[3] == b[3]


def test_different_seeds_differ():
    a_img, a_lab, a_mask, _ = generate(7, 10, 32)
    b_img, b_lab, b_mask, _ = generate(8, 10, 32)
    np.testing.assert_array_equal(a_lab, b_lab)  # labels are index % 5 whatever the seed
    assert not np.array_equal(a_img, b_img)
    assert not np.array_equal(a_mask, b_mask)


def test_prefix_property():
    """Image i is the same whatever the number of images asked for."""
    big = generate(11, 12, 32)
    small = generate(11, 4, 32)
    for x, y in zip(small[:3], big[:3]):
        np.testing.assert_array_equal(x, y[:4])
    assert small[3] == big[3][:4]


def test_render_cell_matches_generate():
    images, labels, masks, _ = generate(11, 3, 32)
    img, mask, meta = render_cell(11, 2, int(labels[2]), 32)
    np.testing.assert_array_equal(img.transpose(2, 0, 1), images[2])
    np.testing.assert_array_equal(mask, masks[2])
    assert meta["class"] == CLASSES[labels[2]]


# --- shapes, dtypes, ranges --------------------------------------------------------------------
@pytest.mark.parametrize("size", [32, 96])
def test_shapes_dtypes_ranges(size):
    n = 12
    images, labels, masks, meta = generate(SEED, n, size)
    assert images.shape == (n, 3, size, size) and images.dtype == np.float32
    assert masks.shape == (n, size, size) and masks.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert set(np.unique(masks)) <= {0, 1, 2}
    np.testing.assert_array_equal(labels, np.arange(n) % len(CLASSES))
    assert len(meta) == n
    assert [m["index"] for m in meta] == list(range(n))
    assert all(m["domain"] == "source" and m["class"] == CLASSES[lab] for m, lab in zip(meta, labels))
    assert meta[0]["um_per_px"] == pytest.approx(25.6 / size)


@pytest.mark.parametrize("size", [8, 256])
def test_size_bounds_accepted(size):
    images, _, masks, _ = generate(SEED, 1, size)
    assert images.shape[-1] == masks.shape[-1] == size


@pytest.mark.parametrize("size", [0, 7, 257, 1024])
def test_size_outside_range_raises(size):
    with pytest.raises(ValueError, match="8..256"):
        generate(SEED, 1, size)


def test_class_probs_draw_labels():
    _, labels, _, meta = generate(SEED, 15, 16, class_probs=(0, 0, 0, 1.0, 0))
    assert (labels == CLASSES.index("lymphocyte")).all()
    assert all(m["class"] == "lymphocyte" for m in meta)
    _, labels2, _, _ = generate(SEED, 15, 16, class_probs=(0.2,) * 5)
    np.testing.assert_array_equal(labels2, generate(SEED, 15, 16, class_probs=(0.2,) * 5)[1])
    assert len(set(labels2.tolist())) > 1


# --- masks match the pixels --------------------------------------------------------------------
def test_every_image_has_nucleus_and_cytoplasm(source64):
    _, labels, masks, _ = source64
    for i in range(len(labels)):
        assert (masks[i] == 2).sum() > 0, f"image {i} ({CLASSES[labels[i]]}) has no nucleus"
        assert (masks[i] == 1).sum() > 0, f"image {i} ({CLASSES[labels[i]]}) has no cytoplasm"
        assert (masks[i] == 0).sum() > 0, f"image {i} has no background"


def test_masks_are_central_cells(source64):
    """The white cell is one connected region near the centre."""
    _, _, masks, _ = source64
    for m in masks:
        lab, n = ndimage.label(m > 0)
        assert n == 1
        cy, cx = ndimage.center_of_mass(m > 0)
        assert abs(cy - 31.5) < 8 and abs(cx - 31.5) < 8


@pytest.mark.parametrize("cls", CLASSES)
def test_darkness_nucleus_gt_cytoplasm_gt_background(source64, cls):
    """Stained nuclei are darker than cytoplasm, which is darker than the plasma, per class."""
    images, labels, masks, _ = source64
    dark = 1 - images.mean(axis=1)
    idx = _by_class(labels)[cls]
    assert len(idx) == 20
    nuc = np.mean([dark[i][masks[i] == 2].mean() for i in idx])
    cyt = np.mean([dark[i][masks[i] == 1].mean() for i in idx])
    bg = np.mean([dark[i][masks[i] == 0].mean() for i in idx])
    assert nuc > cyt + 0.1 > bg + 0.1, (cls, nuc, cyt, bg)


def test_lymphocyte_nucleus_fills_more_of_the_cell_than_neutrophil(source64):
    _, labels, masks, meta = source64
    idx = _by_class(labels)

    def frac(i):
        return (masks[i] == 2).sum() / (masks[i] > 0).sum()

    lym = np.mean([frac(i) for i in idx["lymphocyte"]])
    neu = np.mean([frac(i) for i in idx["neutrophil"]])
    assert lym > neu + 0.2
    # the meta agrees with the mask
    for i in idx["lymphocyte"]:
        assert meta[i]["nucleus_frac"] == pytest.approx(frac(i))


def test_monocytes_are_larger_than_lymphocytes(source64):
    _, labels, masks, meta = source64
    idx = _by_class(labels)
    mono_d = np.mean([meta[i]["diameter_um"] for i in idx["monocyte"]])
    lym_d = np.mean([meta[i]["diameter_um"] for i in idx["lymphocyte"]])
    assert mono_d > lym_d + 3
    # and the masks say the same (cell area in pixels)
    mono_a = np.mean([(masks[i] > 0).sum() for i in idx["monocyte"]])
    lym_a = np.mean([(masks[i] > 0).sum() for i in idx["lymphocyte"]])
    assert mono_a > 1.5 * lym_a


def test_diameters_within_class_ranges(source64):
    _, labels, _, meta = source64
    from robustbench_wbc.data.synth import MORPHOLOGY

    for i, lab in enumerate(labels):
        lo, hi = MORPHOLOGY[CLASSES[lab]].diameter_um
        assert lo <= meta[i]["diameter_um"] <= hi


def test_neutrophil_nuclei_are_lobed(source64):
    """Neutrophil lobes are joined by thin chromatin filaments (one component in the mask, as in a
    real smear); eroding 0.8 µm cuts the filaments and separates the lobes, while a lymphocyte's
    round nucleus stays whole."""
    _, labels, masks, _ = source64
    idx = _by_class(labels)

    def lobes(i, erode):
        nuc = masks[i] == 2
        if erode:
            nuc = ndimage.binary_erosion(nuc, iterations=erode)
        return ndimage.label(nuc)[1]

    assert all(lobes(i, 0) == 1 for i in idx["lymphocyte"])
    neu = np.mean([lobes(i, 2) for i in idx["neutrophil"]])
    lym = np.mean([lobes(i, 2) for i in idx["lymphocyte"]])
    assert lym == 1.0
    assert neu > 1.5


# --- domains and splits ------------------------------------------------------------------------
def test_ood_split_same_cells_other_lab():
    test = SPLITS.get("synth:test").load(20, 32)
    ood = SPLITS.get("synth:ood-lab-b").load(20, 32)
    assert torch.equal(test.labels, ood.labels)
    assert torch.equal(test.masks, ood.masks)
    assert not torch.equal(test.images, ood.images)
    shift = (test.images.mean((0, 2, 3)) - ood.images.mean((0, 2, 3))).abs()
    assert shift.max().item() > 0.05  # a colour shift, not just noise
    assert {m["domain"] for m in test.meta} == {SOURCE_LAB.name}
    assert {m["domain"] for m in ood.meta} == {LAB_B.name}


def test_same_cell_under_two_domains_has_same_mask_and_meta():
    img_a, mask_a, meta_a = render_cell(5, 3, 3, 32, SOURCE_LAB)
    img_b, mask_b, meta_b = render_cell(5, 3, 3, 32, LAB_B)
    np.testing.assert_array_equal(mask_a, mask_b)
    assert meta_a == meta_b
    assert np.abs(img_a - img_b).mean() > 0.02


def test_splits_registry_roles():
    roles = {s: SPLITS.get(s).role for s in SPLITS.list()}
    assert {"train", "val", "test", "ood"} <= set(roles.values())
    assert roles["synth:train"] == "train" and roles["synth:val"] == "val"
    assert roles["synth:test"] == "test" and roles["synth:ood-lab-b"] == "ood"
    assert set(DEFAULT_EVAL_SPLITS) <= set(roles)
    for s in SPLITS.list():
        d = SPLITS.get(s)
        assert d.name == s and d.default_n > 0 and d.description


def test_splits_do_not_share_cells():
    """Train, val and test are generated from different seeds: no image of one split equals any image of another."""
    digests = {s: {hashlib.sha256(image.numpy().tobytes()).hexdigest() for image in SPLITS.get(s).load(20, 16).images}
               for s in ("synth:train", "synth:val", "synth:test")}
    for a, b in itertools.combinations(digests, 2):
        shared = len(digests[a] & digests[b])
        assert shared == 0, f"{a} and {b} share {shared} images"


def test_split_load_n_and_size():
    d = SPLITS.get("synth:val").load(7, 24)
    assert len(d) == 7 and d.images.shape == (7, 3, 24, 24) and d.masks.shape == (7, 24, 24)
    assert d.images.dtype == torch.float32 and d.labels.dtype == torch.int64
    assert d.name == "synth:val" and d.classes == CLASSES
    with pytest.raises(ValueError, match="n must be"):
        SPLITS.get("synth:val").load(0, 24)


def test_splitdata_subset_and_batches():
    d = SPLITS.get("synth:test").load(11, 16)
    sub = d.subset(6)
    assert len(sub) == 6
    assert torch.equal(sub.images, d.images[:6]) and torch.equal(sub.masks, d.masks[:6])
    assert torch.equal(sub.labels, torch.arange(6) % 5)
    assert sub.meta == d.meta[:6]
    assert d.subset(None) is d and d.subset(11) is d and d.subset(50) is d

    batches = list(d.batches(4))
    assert [len(b[0]) for b in batches] == [4, 4, 3]
    assert torch.equal(torch.cat([b[0] for b in batches]), d.images)
    assert torch.equal(torch.cat([b[1] for b in batches]), d.labels)
    assert torch.equal(torch.cat([b[2] for b in batches]), d.masks)

    no_masks = SplitData("x", d.images, d.labels, None)
    assert no_masks.subset(3).masks is None
    assert all(m is None for _, _, m in no_masks.batches(5))


def test_content_hash_tracks_content():
    d = SPLITS.get("synth:test").load(5, 16)
    same = SPLITS.get("synth:test").load(5, 16)
    assert d.content_hash() == same.content_hash()
    assert len(d.content_hash()) == 64
    changed = SplitData(d.name, d.images.clone(), d.labels, d.masks)
    changed.images[0, 0, 0, 0] += 0.5
    assert changed.content_hash() != d.content_hash()
    assert d.subset(4).content_hash() != d.content_hash()
