"""The SynthWBC data engine: batching, 8-bit images, priors, domains, probes, the confounded track,
the on-disk cache and dataset cards, the split registry, and the bench on a split without masks."""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_mini_dataset, per_image_rows
from PIL import Image
from scipy import ndimage

from robustbench_wbc.cli.data import NATURAL_PRIORS
from robustbench_wbc.data import cache
from robustbench_wbc.data.real import register_dataset, unregister_dataset
from robustbench_wbc.data.splits import SPLITS, TEST_SEED, TRAIN_SEED, SynthSpec, render
from robustbench_wbc.data.synth import CHUNK, CLASSES, DOMAINS, GENERATOR_VERSION, LAB_B, SOURCE_LAB, generate

SEED = 777
SIZE = 32
OOD = ("stain-b", "camera-b", "lab-b")


# --- helpers -------------------------------------------------------------------------------------
def _laplacian_energy(images: np.ndarray) -> float:
    """Mean |discrete Laplacian| over the interior pixels of N×3×H×W images: high-frequency energy."""
    x = images.astype(np.float64)
    lap = (4 * x[..., 1:-1, 1:-1] - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2] - x[..., 1:-1, 2:])
    return float(np.abs(lap).mean())


def _edge_sharpness(images: np.ndarray, masks: np.ndarray) -> float:
    """The mean grey step between neighbouring pixels across the cell membrane (mask 0 | mask > 0), over
    the cell's contrast with the background: 1 for a perfectly sharp edge, less the more it is blurred.
    Signed and averaged, so sensor noise cancels out (unlike the Laplacian's energy)."""
    gray = images.astype(np.float64).mean(1)
    cell = masks > 0
    steps, contrast = [], []
    for g, c in zip(gray, cell):
        for axis in (0, 1):
            a, b = np.swapaxes(g, 0, axis), np.swapaxes(c, 0, axis)
            steps += [*(a[:-1] - a[1:])[~b[:-1] & b[1:]], *(a[1:] - a[:-1])[b[:-1] & ~b[1:]]]
        far_bg = ~ndimage.binary_dilation(c, iterations=3)
        core = ndimage.binary_erosion(c, iterations=2)
        contrast.append(g[far_bg].mean() - g[core].mean())
    return float(np.mean(steps) / np.mean(contrast))


def _cell_mean_rgb(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per-image mean RGB over the cell's pixels (mask > 0): N×3."""
    return np.stack([images[i][:, masks[i] > 0].mean(1) for i in range(len(images))])


def _nearest_mean_accuracy(images, labels, masks, n_fit: int = 200) -> float:
    """Fits a nearest-class-mean classifier on the cell's mean colour of the first ``n_fit`` images;
    gives its accuracy on the rest: how much class information the colour alone carries."""
    images, labels, masks = (np.asarray(a) for a in (images, labels, masks))
    feats = _cell_mean_rgb(images, masks)
    fit, held = slice(0, n_fit), slice(n_fit, None)
    centres = np.stack([feats[fit][labels[fit] == k].mean(0) for k in range(len(CLASSES))])
    dist = ((feats[held][:, None, :] - centres[None]) ** 2).sum(-1)
    return float((dist.argmin(1) == labels[held]).mean())


def _optical_density(images: np.ndarray, where: np.ndarray) -> float:
    """Mean optical density (−log10 of the intensity, summed over RGB) of the pixels ``where`` (N×H×W)."""
    rgb = np.clip(images.transpose(0, 2, 3, 1)[where], 1 / 255, 1.0)
    return float(-np.log10(rgb).sum(1).mean())


def _ranks(values) -> np.ndarray:
    return np.argsort(np.argsort(np.asarray(values)))


def _spearman(a, b) -> float:
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def _jpeg_roundtrip(images: np.ndarray, quality: int) -> np.ndarray:
    """Saves and reloads N×3×H×W images in [0, 1] as JPEG with Pillow."""
    out = []
    for a in np.round(images.transpose(0, 2, 3, 1) * 255).astype(np.uint8):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    return np.stack(out).transpose(0, 3, 1, 2).astype(np.float32) / 255


def _blockiness(images: np.ndarray) -> float:
    """Mean |step| across the 8-pixel JPEG block borders over the mean |step| elsewhere (≈1 without blocks)."""
    ratios = []
    for axis in (-1, -2):
        steps = np.abs(np.diff(images, axis=axis))
        steps = steps.mean(tuple(a for a in range(steps.ndim) if a != steps.ndim + axis))
        border = np.arange(7, len(steps), 8)
        ratios.append(steps[border].mean() / np.delete(steps, border).mean())
    return float(np.mean(ratios))


# --- module fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def source300():
    """Images 0..299 of stream SEED in one call: spans the CHUNK boundary at 256."""
    assert 150 < CHUNK < 300
    return generate(SEED, 300, SIZE)


@pytest.fixture(scope="module")
def by_domain():
    """The same 200 cells (stream SEED) rendered in every domain."""
    return {name: generate(SEED, 200, SIZE, d) for name, d in DOMAINS.items()}


@pytest.fixture(scope="module")
def test400():
    return SPLITS.get("synth:test").load(400, SIZE)


@pytest.fixture(scope="module")
def train_pair():
    """synth:train and synth:train-confounded, 500 images each."""
    return SPLITS.get("synth:train").load(500, SIZE), SPLITS.get("synth:train-confounded").load(500, SIZE)


# --- generate(): batching, 8 bits, priors ---------------------------------------------------------
def test_start_batches_equal_one_call_across_the_chunk_boundary(source300):
    first = generate(SEED, 150, SIZE, start=0)
    second = generate(SEED, 150, SIZE, start=150)  # images 150..299: crosses CHUNK = 256
    for whole, a, b in zip(source300[:3], first[:3], second[:3]):
        np.testing.assert_array_equal(whole, np.concatenate([a, b]))
    assert source300[3] == first[3] + second[3]
    assert [m["index"] for m in second[3]] == list(range(150, 300))


@pytest.mark.parametrize(("start", "n"), [(256, 44), (250, 10), (1, 255)])
def test_start_slices_match_one_call(source300, start, n):
    part = generate(SEED, n, SIZE, start=start)
    for whole, p in zip(source300[:3], part[:3]):
        np.testing.assert_array_equal(whole[start:start + n], p)
    assert part[3] == source300[3][start:start + n]


def test_start_batching_with_class_probs():
    probs = (0.5, 0.1, 0.1, 0.2, 0.1)
    whole = generate(SEED, 300, 16, class_probs=probs)
    parts = [generate(SEED, 100, 16, class_probs=probs, start=s) for s in (0, 100, 200)]
    for k in range(3):
        np.testing.assert_array_equal(whole[k], np.concatenate([p[k] for p in parts]))


def test_images_are_8bit_exact(by_domain):
    for name, (images, _, _, _) in by_domain.items():
        scaled = images.astype(np.float64) * 255
        np.testing.assert_allclose(scaled, np.round(scaled), atol=1e-3, err_msg=name)
        assert images.min() >= 0 and images.max() <= 1


def test_class_probs_frequencies_match_priors():
    _, labels, _, meta = generate(SEED, 5000, 8, class_probs=NATURAL_PRIORS)
    freq = np.bincount(labels, minlength=len(CLASSES)) / len(labels)
    np.testing.assert_allclose(freq, NATURAL_PRIORS, atol=0.02)  # binomial sd ≤ 0.007 at n = 5000
    assert freq[CLASSES.index("neutrophil")] > 0.55 and freq[CLASSES.index("basophil")] < 0.02
    assert [m["class"] for m in meta[:50]] == [CLASSES[k] for k in labels[:50]]


@pytest.mark.parametrize("probs", [
    (0.25, 0.25, 0.25, 0.25),  # wrong length
    (0.2,) * 6,  # wrong length, sums to more than 1
    (-0.1, 0.3, 0.3, 0.3, 0.2),  # negative (sums to 1)
    (0.3,) * 5,  # does not sum to 1
    (0.1,) * 5,
], ids=["len4", "len6", "negative", "sum1.5", "sum0.5"])
def test_invalid_class_probs_raise(probs):
    with pytest.raises(ValueError, match="class_probs"):
        generate(SEED, 10, 8, class_probs=probs)


# --- domains -------------------------------------------------------------------------------------
def test_every_domain_renders_the_same_cells(by_domain):
    _, labels, masks, _ = by_domain["source"]
    assert set(DOMAINS) >= {"source", *OOD, "confounded", "stain-random"}
    for name, (images, lab, msk, meta) in by_domain.items():
        np.testing.assert_array_equal(lab, labels, err_msg=name)
        np.testing.assert_array_equal(msk, masks, err_msg=name)
        assert {m["domain"] for m in meta} == {name}
        if name != "source":
            assert not np.array_equal(images, by_domain["source"][0]), name


@pytest.mark.parametrize("domain", OOD)
def test_ood_domains_shift_the_mean_colour(by_domain, domain):
    src = by_domain["source"][0].mean((0, 2, 3))
    ood = by_domain[domain][0].mean((0, 2, 3))
    # measured at 32 px: stain-b 0.14, camera-b 0.074, lab-b 0.17 (largest channel shift)
    assert np.abs(ood - src).max() > 0.04, (domain, src, ood)


def test_camera_b_and_lab_b_blur_the_cell_edges_stain_b_does_not(by_domain):
    sharp = {name: _edge_sharpness(by_domain[name][0], by_domain[name][2]) for name in ("source", *OOD)}
    # measured: source 0.35, stain-b 0.39, camera-b 0.16, lab-b 0.17 (the same without JPEG)
    assert sharp["camera-b"] < 0.7 * sharp["source"], sharp
    assert sharp["lab-b"] < 0.7 * sharp["source"], sharp
    assert sharp["stain-b"] > 0.85 * sharp["source"], sharp


def test_camera_b_and_lab_b_have_less_high_frequency_energy(by_domain):
    energy = {name: _laplacian_energy(by_domain[name][0]) for name in ("source", *OOD)}
    # measured: source 0.074, stain-b 0.071, camera-b 0.027, lab-b 0.027. Lab B's camera blurs, but
    # also adds more sensor noise: without its JPEG step the energy would be 1.05-1.09× the source's.
    assert energy["camera-b"] < 0.6 * energy["source"], energy
    assert energy["lab-b"] < 0.6 * energy["source"], energy
    assert energy["stain-b"] > 0.85 * energy["source"], energy


def test_lab_b_is_saved_as_jpeg(by_domain):
    assert DOMAINS["lab-b"].camera.jpeg_quality > 0
    assert DOMAINS["source"].camera.jpeg_quality == 0 and DOMAINS["stain-b"].camera.jpeg_quality == 0
    # the same domain (same name, so the same sensor noise) without JPEG, then JPEG-encoded by Pillow
    lossless = replace(LAB_B, camera=replace(LAB_B.camera, jpeg_quality=0))
    raw = generate(SEED, 200, SIZE, lossless)[0]
    lab_b = by_domain["lab-b"][0]
    assert not np.array_equal(raw, lab_b)
    np.testing.assert_array_equal(_jpeg_roundtrip(raw, LAB_B.camera.jpeg_quality), lab_b)
    # 8×8 block artefacts: measured 1.45 with JPEG, 1.03 without
    assert _blockiness(lab_b) > _blockiness(raw) + 0.2


# --- probe splits --------------------------------------------------------------------------------
def test_probe_grayscale_is_gray_with_the_test_cells(test400):
    gray = SPLITS.get("synth:probe-grayscale").load(400, SIZE)
    assert torch.equal(gray.images[:, 0], gray.images[:, 1]) and torch.equal(gray.images[:, 1], gray.images[:, 2])
    assert torch.equal(gray.labels, test400.labels) and torch.equal(gray.masks, test400.masks)
    luma = (test400.images * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    assert (gray.images[:, 0] - luma).abs().max().item() <= 1 / 255 + 1e-6
    assert gray.images.std().item() > 0.02  # not a blank image


def test_colour_carries_class_information_in_test_but_not_in_probe_stain_random(test400):
    rand = SPLITS.get("synth:probe-stain-random").load(400, SIZE)
    assert torch.equal(rand.labels, test400.labels) and torch.equal(rand.masks, test400.masks)
    acc_test = _nearest_mean_accuracy(test400.images.numpy(), test400.labels.numpy(), test400.masks.numpy())
    acc_rand = _nearest_mean_accuracy(rand.images.numpy(), rand.labels.numpy(), rand.masks.numpy())
    # measured (200 fit, 200 held out, 32 px): synth:test 0.965, probe-stain-random 0.36; chance is 0.2
    assert acc_test > 0.6, acc_test
    assert acc_rand < 0.45, acc_rand


# --- the confounded track ------------------------------------------------------------------------
def _dye_factor(k: int, dye: int) -> float:
    """The documented per-class dye strength: 1 + 0.25·cos(2πk/5 + 2π·dye/3)."""
    return 1 + 0.25 * math.cos(2 * math.pi * k / len(CLASSES) + 2 * math.pi * dye / 3)


def test_train_confounded_same_cells_as_train(train_pair):
    train, conf = train_pair
    assert torch.equal(train.labels, conf.labels) and torch.equal(train.masks, conf.masks)
    assert not torch.equal(train.images, conf.images)
    spec = SPLITS.get("synth:train-confounded").synth
    assert spec.seed == SPLITS.get("synth:train").synth.seed == TRAIN_SEED
    assert DOMAINS[spec.domain].stain_mode == "per-class"


def test_train_confounded_stain_shift_differs_by_class(train_pair):
    train, conf = train_pair
    x0, x1 = train.images.numpy(), conf.images.numpy()
    labels, masks = train.labels.numpy(), train.masks.numpy()
    nucleus_ratio, background_ratio = [], []
    for k in range(len(CLASSES)):
        sel = labels == k
        nuc, bg = masks[sel] == 2, masks[sel] == 0
        nucleus_ratio.append(_optical_density(x1[sel], nuc) / _optical_density(x0[sel], nuc))
        background_ratio.append(_optical_density(x1[sel], bg) / _optical_density(x0[sel], bg))
    purple = [_dye_factor(k, 1) for k in range(len(CLASSES))]  # chromatin: the azure-eosin dye
    eosin = [_dye_factor(k, 2) for k in range(len(CLASSES))]  # red cells in the background: eosin
    # measured: nucleus OD ratios 0.93 0.85 0.96 1.14 1.12 vs purple 0.88 0.76 0.97 1.23 1.17;
    # background 0.98 1.02 1.03 1.00 0.97 vs eosin 0.88 1.17 1.23 0.97 0.76 (both in the same order)
    assert max(nucleus_ratio) - min(nucleus_ratio) > 0.15, nucleus_ratio
    assert _spearman(nucleus_ratio, purple) >= 0.9, (nucleus_ratio, purple)
    assert _spearman(background_ratio, eosin) >= 0.9, (background_ratio, eosin)
    assert nucleus_ratio[CLASSES.index("eosinophil")] < 0.93 < 1.07 < nucleus_ratio[CLASSES.index("lymphocyte")]


def test_source_test_split_is_not_confounded(test400):
    spec = SPLITS.get("synth:test").synth
    assert spec.domain == "source" and DOMAINS["source"].stain_mode == "fixed"
    images, labels, masks, _ = generate(TEST_SEED, 400, SIZE, SOURCE_LAB)
    np.testing.assert_array_equal(test400.images.numpy(), images)
    np.testing.assert_array_equal(test400.labels.numpy(), labels)
    np.testing.assert_array_equal(test400.masks.numpy(), masks)


# --- SynthSpec.key -------------------------------------------------------------------------------
def test_synth_spec_key_tracks_every_field_and_size():
    base = SynthSpec(5)
    variants = {
        "seed": replace(base, seed=6),
        "domain": replace(base, domain="lab-b"),
        "probe": replace(base, probe="grayscale"),
        "corruption": replace(base, corruption="gaussian_noise", severity=3),
        "severity": replace(base, severity=2),
        "corruption-only": replace(base, corruption="gaussian_noise"),
        "class_probs": replace(base, class_probs=NATURAL_PRIORS),
        "class_probs2": replace(base, class_probs=(0.2,) * 5),
        "um_per_px": replace(base, um_per_px=0.2),
    }
    # a new SynthSpec field needs a case here
    assert set(asdict(base)) == {"seed", "domain", "probe", "corruption", "severity", "class_probs", "um_per_px"}
    keys = {name: spec.key(SIZE) for name, spec in variants.items()}
    keys["base"] = base.key(SIZE)
    keys["size"] = base.key(64)
    assert len(set(keys.values())) == len(keys), keys
    assert SynthSpec(5).key(SIZE) == base.key(SIZE)
    assert SynthSpec(5, class_probs=tuple(NATURAL_PRIORS)).key(SIZE) == keys["class_probs"]
    assert all(len(k) >= 16 and all(c in "0123456789abcdef" for c in k) for k in keys.values())


# --- the cache -----------------------------------------------------------------------------------
@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("WBC_ROBUST_HOME", str(home))
    return home


def _entry(home: Path, split: str) -> Path:
    return home / "data" / SPLITS.get(split).synth.key(SIZE)


def _sha256(entry: Path) -> str:
    h = hashlib.sha256()
    for name in ("images", "masks", "labels"):
        h.update(np.ascontiguousarray(np.load(entry / f"{name}.npy")).tobytes())
    return h.hexdigest()


def _mtimes(entry: Path) -> dict[str, tuple[int, int]]:
    """Each file's (inode, mtime) and the entry's own inode: a rewrite renames a new directory into place."""
    return {"": (entry.stat().st_ino, 0), **{p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in entry.iterdir()}}


def test_first_load_writes_the_entry_and_its_card(home):
    d = SPLITS.get("synth:val")
    data = d.load(20, SIZE)
    entry = _entry(home, "synth:val")
    assert sorted(p.name for p in entry.iterdir()) == ["card.json", "images.npy", "labels.npy", "masks.npy"]
    assert [p.name for p in (home / "data").iterdir()] == [entry.name]  # no temporary dirs left behind
    card = json.loads((entry / "card.json").read_text())
    assert card["generator"] == GENERATOR_VERSION
    assert card["params"] == json.loads(json.dumps(asdict(d.synth)))
    assert card["n"] == 20 and card["size"] == SIZE
    assert card["class_counts"] == {c: 4 for c in CLASSES}
    assert card["sha256"] == _sha256(entry)
    assert np.load(entry / "images.npy").shape == (20, SIZE, SIZE, 3)
    assert len(data) == 20


def test_smaller_load_is_served_from_the_cache(home):
    d = SPLITS.get("synth:val")
    big = d.load(20, SIZE)
    entry = _entry(home, "synth:val")
    before = _mtimes(entry)
    small = d.load(8, SIZE)
    assert _mtimes(entry) == before
    assert json.loads((entry / "card.json").read_text())["n"] == 20
    assert torch.equal(small.images, big.images[:8]) and torch.equal(small.labels, big.labels[:8])
    assert torch.equal(small.masks, big.masks[:8])


def test_larger_load_rewrites_the_entry(home):
    d = SPLITS.get("synth:val")
    small = d.load(10, SIZE)
    big = d.load(30, SIZE)
    entry = _entry(home, "synth:val")
    card = json.loads((entry / "card.json").read_text())
    assert card["n"] == 30 and sum(card["class_counts"].values()) == 30
    assert np.load(entry / "images.npy").shape[0] == 30 and card["sha256"] == _sha256(entry)
    assert torch.equal(big.images[:10], small.images)
    assert [p.name for p in (home / "data").iterdir()] == [entry.name]


@pytest.mark.parametrize("damage", ["not json", "old generator"])
def test_corrupt_or_stale_card_is_regenerated(home, damage):
    d = SPLITS.get("synth:val")
    first = d.load(12, SIZE)
    card_path = _entry(home, "synth:val") / "card.json"
    if damage == "not json":
        card_path.write_text("{not json")
    else:
        card = json.loads(card_path.read_text())
        card["generator"] = "synthwbc-0"
        card_path.write_text(json.dumps(card))
    again = d.load(12, SIZE)
    card = json.loads(card_path.read_text())
    assert card["generator"] == GENERATOR_VERSION and card["n"] == 12
    assert torch.equal(again.images, first.images) and torch.equal(again.masks, first.masks)


@pytest.mark.parametrize("split", ["synth:val", "synth:probe-grayscale", "synth:ood-lab-b"])
def test_loaded_arrays_equal_render(home, split):
    d = SPLITS.get(split)
    data = d.load(15, SIZE)
    images, labels, masks, _ = render(d.synth, 15, SIZE)
    np.testing.assert_array_equal(data.images.numpy(), images)
    np.testing.assert_array_equal(data.labels.numpy(), labels)
    np.testing.assert_array_equal(data.masks.numpy(), masks)
    assert data.images.dtype == torch.float32 and data.labels.dtype == torch.int64 and data.masks.dtype == torch.uint8


# --- write_set -----------------------------------------------------------------------------------
def test_write_set_files_card_and_hash(tmp_path):
    spec = SynthSpec(11, class_probs=NATURAL_PRIORS)
    card = cache.write_set(spec, 60, SIZE, tmp_path / "set", name="custom")
    images = np.load(tmp_path / "set" / "images.npy")
    masks = np.load(tmp_path / "set" / "masks.npy")
    labels = np.load(tmp_path / "set" / "labels.npy")
    assert images.dtype == np.uint8 and images.shape == (60, SIZE, SIZE, 3)
    assert masks.dtype == np.uint8 and masks.shape == (60, SIZE, SIZE)
    assert labels.dtype == np.int64 and labels.shape == (60,)
    assert json.loads(json.dumps(card)) == json.loads((tmp_path / "set" / "card.json").read_text())
    assert card["sha256"] == _sha256(tmp_path / "set")
    assert sum(card["class_counts"].values()) == 60
    assert card["class_counts"] == {c: int((labels == k).sum()) for k, c in enumerate(CLASSES)}
    assert card["name"] == "custom" and card["n"] == 60 and card["size"] == SIZE
    x, y, m, _ = render(spec, 60, SIZE)
    np.testing.assert_array_equal(images, np.round(x.transpose(0, 2, 3, 1) * 255).astype(np.uint8))
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_array_equal(masks, m)


def test_write_set_in_batches_equals_one_batch(tmp_path, monkeypatch):
    spec = SynthSpec(12)
    one = cache.write_set(spec, 300, 16, tmp_path / "one")
    monkeypatch.setattr(cache, "BATCH", 70)  # batches that do not align with CHUNK
    many = cache.write_set(spec, 300, 16, tmp_path / "many")
    assert many["sha256"] == one["sha256"] == _sha256(tmp_path / "many")


# --- the split registry --------------------------------------------------------------------------
def test_registry_roles_and_ood_splits(test400):
    roles = {s: SPLITS.get(s).role for s in SPLITS.list("synth:*")}
    assert {"train", "val", "test", "ood", "probe"} <= set(roles.values())
    assert roles["synth:probe-grayscale"] == roles["synth:probe-stain-random"] == "probe"
    assert roles["synth:train-confounded"] == "train"
    for dom in OOD:
        d = SPLITS.get(f"synth:ood-{dom}")
        assert d.role == "ood" and d.domain == dom and d.synth.domain == dom
        assert d.synth.seed == TEST_SEED == SPLITS.get("synth:test").synth.seed
        ood = d.load(40, SIZE)
        assert torch.equal(ood.masks, test400.masks[:40]) and torch.equal(ood.labels, test400.labels[:40])
        assert not torch.equal(ood.images, test400.images[:40])


# --- the bench on a split without masks ----------------------------------------------------------
@pytest.fixture(scope="module")
def maskless_bench(tmp_path_factory, tiny_cards):
    """A bench run of the three tiny families on a real split with no masks: ``(summary, table)``."""
    from robustbench_wbc.bench import ResultStore, run

    root = make_mini_dataset(tmp_path_factory.mktemp("mini") / "mini")
    try:
        assert register_dataset("mini", root) == ["mini:all"]
        assert SPLITS.get("mini:all").load(10, SIZE).masks is None
        out = tmp_path_factory.mktemp("maskless") / "o"
        summary = run(["tiny_unet", "tiny_multitask", "tiny_cls"], ["mini:all"], ["fgsm"], out=out,
                      eps=[2 / 255], n_images=10)
        table = ResultStore(out).table()
    finally:
        unregister_dataset("mini")
    assert "mini:all" not in SPLITS
    return summary, table


def test_bench_without_masks_no_cell_fails(maskless_bench):
    summary, table = maskless_bench
    failed = [(r.cell.model, r.cell.attack, r.cell.target, r.reason) for r in summary.failed]
    assert failed == []
    assert summary.ok == summary.planned > 0
    assert set(table["status"]) == {"ok"}


def test_bench_without_masks_scores_accuracy(maskless_bench):
    _, table = maskless_bench
    ok = table[table["status"] == "ok"]
    for model in ("tiny_multitask", "tiny_cls"):
        rows = ok[(ok["model"] == model) & (ok["split"] == "mini:all")]
        clean = rows[(rows["attack"] == "none") & (rows["metric"] == "accuracy")]
        assert len(clean) == 1 and 0 <= clean["value"].item() <= 1, model
        robust = rows[(rows["attack"] == "fgsm") & (rows["metric"] == "robust_accuracy")]
        assert len(robust) >= 1 and (robust["value"] <= clean["value"].item() + 1e-12).all(), model
        assert (per_image_rows(rows)["n"] == 10).all()


def test_bench_without_masks_has_no_dice_rows(maskless_bench):
    _, table = maskless_bench
    rows = table[table["split"] == "mini:all"]
    assert len(rows) > 0
    seg_metrics = rows["metric"].str.contains("dice|iou", regex=True)
    assert not seg_metrics.any(), rows.loc[seg_metrics, ["model", "attack", "metric"]]
    assert not pd.isna(rows.loc[rows["metric"] == "accuracy", "value"]).any()


def test_pixel_size_scales_the_cells():
    """Halving µm/pixel (twice the magnification) makes every cell about four times larger in pixels."""
    from robustbench_wbc.data.synth import generate as gen

    _, _, m_default, meta_default = gen(5, 40, 64)
    _, _, m_zoom, meta_zoom = gen(5, 40, 64, um_per_px=0.2)
    assert meta_default[0]["um_per_px"] == pytest.approx(0.4) and meta_zoom[0]["um_per_px"] == pytest.approx(0.2)
    small = [i for i, m in enumerate(meta_default) if m["diameter_um"] < 11]  # whole cells at both zooms
    ratio = np.mean([(m_zoom[i] > 0).sum() / (m_default[i] > 0).sum() for i in small])
    assert 3.3 < ratio < 4.5
    with pytest.raises(ValueError, match="um_per_px"):
        gen(5, 4, 64, um_per_px=5.0)
