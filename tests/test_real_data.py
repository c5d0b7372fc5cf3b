"""Real-dataset loaders: each layout on tiny fixtures, label maps, masks, order, registration, bad input."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_mini_dataset
from PIL import Image

from robustbench_wbc.data import CLASSES, SPLITS, SplitDef, real
from robustbench_wbc.data.real import (
    DataError,
    DataOptionError,
    detect_format,
    get_report,
    mask_from_grey,
    open_dataset,
    parse_data_option,
    read_zheng2018,
    register_dataset,
    unregister_dataset,
)

W, H = 24, 20  # fixture image size (width × height): not square, so a resize must stretch
# One solid colour per class, so a test can tell from the pixels which folder an image came from.
COLOURS = {"neutrophil": (200, 40, 40), "eosinophil": (40, 200, 40), "basophil": (40, 40, 200),
           "lymphocyte": (200, 200, 40), "monocyte": (40, 200, 200), "other": (120, 120, 120)}


@pytest.fixture(autouse=True)
def clean_splits():
    """Unregisters every real dataset a test registers, and checks nothing else was left in SPLITS."""
    before = set(SPLITS._entries)
    yield
    for name in list(real.registered_datasets()):
        real.unregister_dataset(name)
    assert set(SPLITS._entries) == before


def _image(path: Path, colour=(128, 128, 128), size=(W, H)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _mask(path: Path, levels=(0, 128, 255), size=(W, H)) -> Path:
    """A mask in three vertical bands of grey ``levels`` (left background, middle cytoplasm, right nucleus)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    grey = np.zeros((size[1], size[0]), np.uint8)
    third = size[0] // 3
    grey[:, :third], grey[:, third:2 * third], grey[:, 2 * third:] = levels
    Image.fromarray(grey).save(path)
    return path


def _class_folders(root: Path, counts: dict[str, int], ext: str = ".jpg") -> None:
    """Writes ``counts[folder]`` images into ``root/folder``, coloured by the folder's class."""
    for folder, n in counts.items():
        cls = real.wbc_class(folder) or "other"
        for i in range(n):
            _image(root / folder / f"img{i}{ext}", COLOURS[cls])


def _check_colours(data) -> None:
    """Asserts each image has its label's colour: the label came from the image's own folder."""
    for img, label in zip(data.images, data.labels):
        expected = torch.tensor(COLOURS[CLASSES[int(label)]], dtype=torch.float32) / 255
        assert torch.allclose(img.mean((1, 2)), expected, atol=0.04)


def _label_names(data) -> list[str]:
    return [CLASSES[int(k)] for k in data.labels]


# --- Raabin-WBC ----------------------------------------------------------------------------------
@pytest.fixture
def raabin_root(tmp_path: Path) -> Path:
    root = tmp_path / "Raabin-WBC"
    five = {"Neutrophil": 2, "Eosinophil": 2, "Basophil": 2, "Lymphocyte": 2, "Monocyte": 2}
    _class_folders(root / "Train", five)
    _class_folders(root / "TestA", five)
    _class_folders(root / "TestB", {"neutrophils": 2, "LYMPHOCYTE": 3})  # fewer classes, odd spellings
    for cls in five:  # masks for Train only
        for i in range(2):
            _mask(root / "Train_masks" / cls / f"img{i}.png")
    return root


def test_raabin_registers_three_splits_with_roles(raabin_root):
    assert detect_format(raabin_root) == "raabin"
    ids = register_dataset("raabin", raabin_root)
    assert ids == ["raabin:train", "raabin:testa", "raabin:testb"]
    defs = {i: SPLITS.get(i) for i in ids}
    assert {i: d.role for i, d in defs.items()} == {"raabin:train": "train", "raabin:testa": "ood", "raabin:testb": "ood"}
    assert {i: d.default_n for i, d in defs.items()} == {"raabin:train": 10, "raabin:testa": 10, "raabin:testb": 5}
    assert all(d.domain == "raabin" for d in defs.values())


def test_raabin_images_labels_and_shapes(raabin_root):
    register_dataset("raabin", raabin_root)
    data = SPLITS.get("raabin:testa").load(None, 16)
    assert data.name == "raabin:testa"
    assert data.images.shape == (10, 3, 16, 16) and data.images.dtype == torch.float32
    assert data.labels.dtype == torch.int64
    assert 0.0 <= float(data.images.min()) and float(data.images.max()) <= 1.0
    assert sorted(_label_names(data)) == sorted(CLASSES * 2)
    _check_colours(data)
    assert data.masks is None  # no TestA_masks folder
    assert all({"path", "source_label"} <= set(m) for m in data.meta)
    assert all(Path(m["path"]).parent.name == m["source_label"] for m in data.meta)


def test_raabin_testb_maps_the_classes_present(raabin_root):
    register_dataset("raabin", raabin_root)
    data = SPLITS.get("raabin:testb").load()
    assert sorted(_label_names(data)) == ["lymphocyte"] * 3 + ["neutrophil"] * 2
    assert {m["source_label"] for m in data.meta} == {"neutrophils", "LYMPHOCYTE"}
    _check_colours(data)
    assert get_report("raabin:testb").class_counts == {"neutrophil": 2, "lymphocyte": 3}


def test_raabin_masks_from_split_masks_folder(raabin_root):
    register_dataset("raabin", raabin_root)
    data = SPLITS.get("raabin:train").load(4, 12)
    assert data.masks is not None and data.masks.shape == (4, 12, 12) and data.masks.dtype == torch.uint8
    # bands 0 | 128 | 255 resized with nearest: left columns background, middle cytoplasm, right nucleus
    np.testing.assert_array_equal(data.masks[:, :, 0].unique().numpy(), [0])
    np.testing.assert_array_equal(data.masks[:, :, 6].unique().numpy(), [1])
    np.testing.assert_array_equal(data.masks[:, :, -1].unique().numpy(), [2])
    assert set(data.masks.unique().tolist()) == {0, 1, 2}
    assert all(m["mask_path"].endswith(Path(m["path"]).stem + ".png") for m in data.meta)


def test_missing_mask_is_an_error_naming_the_image(raabin_root):
    (raabin_root / "Train_masks" / "Monocyte" / "img1.png").unlink()
    with pytest.raises(DataError, match=r"img1\.jpg: no mask found.*Train_masks.*Monocyte.*img1\.png"):
        register_dataset("raabin", raabin_root)
    ids = register_dataset("raabin", raabin_root, skip_bad=True)
    assert SPLITS.get("raabin:train").default_n == 9
    assert [Path(p).name for p, _ in get_report("raabin:train").bad] == ["img1.jpg"]
    assert "raabin:train" in ids


# --- class-interleaved order ---------------------------------------------------------------------
def test_prefix_is_class_interleaved_and_sorted(tmp_path):
    root = tmp_path / "flat"
    _class_folders(root, {"neutrophil": 3, "basophil": 1, "lymphocyte": 2, "monocyte": 0})
    register_dataset("flat", root)
    data = SPLITS.get("flat:all").load()
    # round-robin in CLASSES order (neutrophil, eosinophil, basophil, lymphocyte, monocyte)
    assert _label_names(data) == ["neutrophil", "basophil", "lymphocyte", "neutrophil", "lymphocyte", "neutrophil"]
    assert [Path(m["path"]).name for m in data.meta if m["class"] == "neutrophil"] == ["img0.jpg", "img1.jpg", "img2.jpg"]
    prefix = SPLITS.get("flat:all").load(3)
    assert _label_names(prefix) == ["neutrophil", "basophil", "lymphocyte"]
    torch.testing.assert_close(prefix.images, data.images[:3])


def test_natural_sort_within_a_class(tmp_path):
    root = tmp_path / "flat"
    for name in ("img10.png", "img2.png", "img1.png"):
        _image(root / "Monocyte" / name, COLOURS["monocyte"])
    data = open_dataset(root)["all"].load()
    assert [Path(m["path"]).name for m in data.meta] == ["img1.png", "img2.png", "img10.png"]


# --- PBC -----------------------------------------------------------------------------------------
def test_pbc_maps_five_and_reports_skipped(tmp_path, caplog):
    root = tmp_path / "PBC_dataset_normal_DIB"
    _class_folders(root, {"neutrophil": 2, "eosinophil": 1, "basophil": 1, "lymphocyte": 1, "monocyte": 1,
                          "ig": 2, "erythroblast": 1, "platelet": 3})
    assert detect_format(root) == "pbc"
    with caplog.at_level(logging.WARNING, logger="robustbench_wbc.data.real"):
        assert register_dataset("pbc", root) == ["pbc:all"]
    assert "ig: 2" in caplog.text and "erythroblast: 1" in caplog.text and "platelet: 3" in caplog.text
    report = get_report("pbc:all")
    assert report.format == "pbc"
    assert report.skipped_classes == {"erythroblast": 1, "ig": 2, "platelet": 3}
    assert report.n_skipped_classes == 6 and report.n_found == 6
    data = SPLITS.get("pbc:all").load(None, 8)
    assert len(data) == 6 and SPLITS.get("pbc:all").role == "ood"
    assert sorted(_label_names(data)) == sorted(["neutrophil"] * 2 + ["eosinophil", "basophil", "lymphocyte", "monocyte"])
    _check_colours(data)
    assert data.masks is None


# --- LISC ----------------------------------------------------------------------------------------
def test_lisc_images_masks_and_mixt(tmp_path):
    root = tmp_path / "LISC"
    main = root / "Main_Dataset"
    _class_folders(main, {"Baso": 1, "eosi": 1, "lymp": 1, "mono": 1, "neut": 2, "mixt": 2}, ext=".bmp")
    for folder in ("Baso", "eosi", "lymp", "mono", "neut"):
        for img in (main / folder).iterdir():
            ext = ".bmp" if folder == "neut" else ".png"  # any image extension
            _mask(root / "Ground_Truth" / folder / f"{img.stem}{ext}", levels=(10, 120, 245))  # near the levels
    assert detect_format(root) == "lisc"
    assert register_dataset("lisc", root) == ["lisc:all"]
    assert get_report("lisc:all").skipped_classes == {"mixt": 2}
    data = SPLITS.get("lisc:all").load(None, W)
    assert _label_names(data) == ["neutrophil", "eosinophil", "basophil", "lymphocyte", "monocyte", "neutrophil"]
    assert [m["source_label"] for m in data.meta] == ["neut", "eosi", "Baso", "lymp", "mono", "neut"]
    _check_colours(data)
    assert data.masks is not None and data.masks.shape == (6, W, W)
    # at the image's own width, nearest keeps the three 8-px bands exactly: 10→0, 120→1, 245→2
    expected_row = np.repeat(np.array([0, 1, 2], np.uint8), W // 3)
    assert (data.masks.numpy() == expected_row).all()


def test_mask_levels_nearest_and_rejects_far_values():
    grey = np.array([[0, 30, 100, 128, 160, 220, 255]], np.uint8)
    np.testing.assert_array_equal(mask_from_grey(grey), [[0, 0, 1, 1, 1, 2, 2]])
    with pytest.raises(DataError, match=r"bad\.png: mask has grey levels 64"):
        mask_from_grey(np.array([[0, 64, 255]], np.uint8), "bad.png")


# --- BloodMNIST ----------------------------------------------------------------------------------
BLOOD_LABELS = [0, 1, 2, 3, 4, 5, 6, 7, 6, 4]  # one of each BloodMNIST class, then a second neutrophil and lymphocyte


def _bloodmnist(path: Path) -> Path:
    arrays = {}
    for split, labels in (("train", BLOOD_LABELS), ("val", [6, 7]), ("test", [5, 2, 0])):
        images = np.zeros((len(labels), 28, 28, 3), np.uint8)
        images[:] = (np.arange(len(labels)) * 20 + 10)[:, None, None, None]  # image i is grey 10 + 20 i
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, np.array(labels, np.uint8)[:, None]
    np.savez_compressed(path, **arrays)
    return path


def test_bloodmnist_remaps_labels_and_reports_skipped(tmp_path):
    path = _bloodmnist(tmp_path / "bloodmnist.npz")
    assert detect_format(path) == "bloodmnist"
    assert register_dataset("bm", path) == ["bm:train", "bm:val", "bm:test"]
    assert [SPLITS.get(f"bm:{s}").role for s in ("train", "val", "test")] == ["train", "val", "ood"]
    assert get_report("bm:train").skipped_classes == {"erythroblast": 1, "ig": 1, "platelet": 1}
    assert get_report("bm:val").skipped_classes == {"platelet": 1}
    data = SPLITS.get("bm:train").load(None, 16)
    assert data.images.shape == (7, 3, 16, 16) and data.masks is None
    expected = {0: "basophil", 1: "eosinophil", 4: "lymphocyte", 5: "monocyte", 6: "neutrophil"}
    for label, m, img in zip(data.labels, data.meta, data.images):
        i = m["source_index"]
        assert CLASSES[int(label)] == expected[BLOOD_LABELS[i]] == m["source_label"]
        assert torch.allclose(img, torch.full_like(img, (10 + 20 * i) / 255))  # the pixels of row i
    assert _label_names(data) == ["neutrophil", "eosinophil", "basophil", "lymphocyte", "monocyte",
                                  "neutrophil", "lymphocyte"]
    assert [m["source_index"] for m in data.meta] == [6, 1, 0, 4, 5, 8, 9]


def test_bloodmnist_rejects_other_npz(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, x=np.zeros(3))
    with pytest.raises(DataError, match="not a BloodMNIST"):
        register_dataset("bm", path)


# --- generic layout ------------------------------------------------------------------------------
def test_generic_split_layout_with_masks(tmp_path):
    root = tmp_path / "mydata"
    for split in ("train", "Test"):
        _class_folders(root / split, {"neutrophil": 1, "monocyte": 1}, ext=".png")
        for cls in ("neutrophil", "monocyte"):
            _mask(root / "masks" / split / cls / "img0.png")
    assert detect_format(root) == "generic"
    assert register_dataset("mine", root) == ["mine:test", "mine:train"]
    assert SPLITS.get("mine:train").role == "train" and SPLITS.get("mine:test").role == "ood"
    data = SPLITS.get("mine:test").load(2, 9)
    assert _label_names(data) == ["neutrophil", "monocyte"]
    assert data.masks.shape == (2, 9, 9)
    assert data.masks[0, 0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_generic_flat_layout_with_masks_and_ignored_files(tmp_path, caplog):
    root = tmp_path / "flat"
    _class_folders(root, {"Eosinophils": 1, "basophil": 1}, ext=".png")
    (root / "basophil" / "notes.txt").write_text("not an image")
    for folder in ("Eosinophils", "basophil"):
        _mask(root / "masks" / folder / "img0.png")
    with caplog.at_level(logging.WARNING, logger="robustbench_wbc.data.real"):
        assert register_dataset("flat", root) == ["flat:all"]
    assert "notes.txt" in caplog.text
    assert [Path(p).name for p in get_report("flat:all").ignored_files] == ["notes.txt"]
    data = SPLITS.get("flat:all").load()
    assert _label_names(data) == ["eosinophil", "basophil"]
    assert data.masks is not None and set(data.masks.unique().tolist()) == {0, 1, 2}


# --- Zheng2018 -----------------------------------------------------------------------------------
ZHENG_HEADER = "image ID,class label"


def _zheng_root(root: Path, labels=(1, 2, 5, 3, 4), sizes: dict[int, tuple[int, int]] | None = None) -> Path:
    """A Zheng2018-like tree: ``images/00<i>.bmp`` coloured by its label's class, ``00<i>.png`` masks, ``labels.csv``.

    ``labels[i - 1]`` is image ``i``'s label (1..5); ``sizes`` gives some images another (width, height).
    """
    for i, label in enumerate(labels, start=1):
        size = (sizes or {}).get(i, (W, H))
        _image(root / "images" / f"{i:03d}.bmp", COLOURS[real.ZHENG2018_CLASSES[label - 1]], size)
        _mask(root / "images" / f"{i:03d}.png", size=size)
    _zheng_labels(root, [f"{i},{label}" for i, label in enumerate(labels, start=1)])
    return root


def _zheng_labels(root: Path, rows: list[str]) -> None:
    """Writes ``labels.csv`` as the real one is written: CRLF line ends, IDs without zero padding."""
    (root / "labels.csv").write_bytes(("\r\n".join([ZHENG_HEADER, *rows]) + "\r\n").encode())


def test_zheng2018_detected_and_registered_as_one_ood_split(tmp_path):
    root = _zheng_root(tmp_path / "zheng")
    assert detect_format(root) == "zheng2018"
    name, path = parse_data_option(f"zheng2018={root}")  # --data zheng2018=PATH
    assert register_dataset(name, path) == ["zheng2018:all"]
    split = SPLITS.get("zheng2018:all")
    assert (split.role, split.domain, split.default_n, split.has_masks) == ("ood", "zheng2018", 5, True)
    report = get_report("zheng2018:all")
    assert report.format == "zheng2018" and report.n_found == 5 and report.n_bad == 0
    # another name gives another prefix, as for every format
    assert register_dataset("lab-c", root) == ["lab-c:all"]


def test_zheng2018_class_map_images_masks_and_meta(tmp_path):
    root = _zheng_root(tmp_path / "zheng", sizes={4: (30, 18)})
    data = open_dataset(root)["all"].load(None, 12)
    by_stem = {Path(m["path"]).stem: m for m in data.meta}
    # labels.csv order is neutrophil, lymphocyte, monocyte, eosinophil, basophil; CLASSES' is not
    assert {stem: m["class"] for stem, m in by_stem.items()} == {
        "001": "neutrophil", "002": "lymphocyte", "003": "basophil", "004": "monocyte", "005": "eosinophil"}
    assert {stem: m["source_label"] for stem, m in by_stem.items()} == {
        "001": "1", "002": "2", "003": "5", "004": "3", "005": "4"}
    assert _label_names(data) == list(CLASSES)  # interleaved in CLASSES order, as every format
    _check_colours(data)
    assert data.images.shape == (5, 3, 12, 12) and data.images.dtype == torch.float32
    assert data.masks is not None and data.masks.shape == (5, 12, 12) and data.masks.dtype == torch.uint8
    # bands 0 | 128 | 255 resized with nearest, whatever the native size
    np.testing.assert_array_equal(data.masks[:, :, 0].unique().numpy(), [0])
    np.testing.assert_array_equal(data.masks[:, :, 6].unique().numpy(), [1])
    np.testing.assert_array_equal(data.masks[:, :, -1].unique().numpy(), [2])
    assert {stem: m["native_hw"] for stem, m in by_stem.items()} == {
        "001": (H, W), "002": (H, W), "003": (H, W), "004": (18, 30), "005": (H, W)}
    assert all(m["mask_path"] == str(root / "images" / f"{stem}.png") for stem, m in by_stem.items())
    assert all(m["path"] == str(root / "images" / f"{stem}.bmp") for stem, m in by_stem.items())


def test_read_zheng2018_gives_native_images_and_masks(tmp_path):
    root = _zheng_root(tmp_path / "zheng", sizes={2: (30, 18)})
    _mask(root / "images" / "003.png", levels=(10, 120, 245))  # near the levels: decoded as the loaders do
    items = read_zheng2018(root)
    assert [(stem, cls) for _, _, cls, stem in items] == [
        ("001", "neutrophil"), ("002", "lymphocyte"), ("003", "basophil"), ("004", "monocyte"), ("005", "eosinophil")]
    for image, mask, cls, stem in items:
        h, w = (18, 30) if stem == "002" else (H, W)
        assert image.shape == (h, w, 3) and image.dtype == np.uint8
        assert mask.shape == (h, w) and mask.dtype == np.uint8
        np.testing.assert_array_equal(image[0, 0], COLOURS[cls])
        np.testing.assert_array_equal(mask[0], np.repeat(np.array([0, 1, 2], np.uint8), [w // 3, w // 3, w - 2 * (w // 3)]))


def test_zheng2018_ids_with_or_without_zero_padding(tmp_path):
    root = _zheng_root(tmp_path / "zheng", labels=(1, 2))
    _image(root / "images" / "7.bmp", COLOURS["monocyte"])
    _mask(root / "images" / "7.png")
    _zheng_labels(root, ["001,1", "2,2", "7,3"])
    assert [stem for *_, stem in read_zheng2018(root)] == ["001", "002", "7"]


def test_zheng2018_detection_needs_the_header_and_the_images(tmp_path):
    root = _zheng_root(tmp_path / "zheng")
    (root / "labels.csv").write_text("id,label\n1,1\n")
    with pytest.raises(DataError, match="no known dataset layout"):
        detect_format(root)
    with pytest.raises(DataError, match="not a Zheng2018 folder"):
        open_dataset(root, format="zheng2018")
    generic = make_mini_dataset(tmp_path / "mini")  # a class-folder tree with a Zheng-like labels.csv stays generic
    _zheng_labels(generic, ["1,1"])
    assert detect_format(generic) == "generic"


def test_zheng2018_images_without_a_row_are_ignored_and_reported(tmp_path, caplog):
    root = _zheng_root(tmp_path / "zheng")
    _zheng_labels(root, ["1,1", "2,2", "3,5"])
    with caplog.at_level(logging.WARNING, logger="robustbench_wbc.data.real"):
        split = open_dataset(root, name="z")["all"]
    assert len(split) == 3 and "ignoring 2 images without a row" in caplog.text
    assert [Path(p).name for p in split.report.ignored_files] == ["004.bmp", "005.bmp"]


@pytest.mark.parametrize(("rows", "message", "bad_path"), [
    (["1,1", "2,2", "9,3"], r"labels\.csv line 4 \('9,3'\): no image .*images/009\.bmp for image ID 9", "images/009.bmp"),
    (["1,1", "2,6", "3,5"], r"labels\.csv line 3 \('2,6'\): class label '6' is not one of 1\.\.5", "labels.csv"),
    (["1,1", "2,x", "3,5"], r"labels\.csv line 3 \('2,x'\): class label 'x' is not one of 1\.\.5", "labels.csv"),
    (["1,1", "2,0", "3,5"], r"class label '0' is not one of 1\.\.5 \(1 neutrophil, 2 lymphocyte", "labels.csv"),
    (["1,1", "2", "3,5"], r"labels\.csv line 3 \('2'\): expected two fields", "labels.csv"),
    (["1,1", "3,5", "3,5"], r"labels\.csv line 4 .*003\.bmp already has a row \(line 3\)", "labels.csv"),
])
def test_zheng2018_bad_labels_rows(tmp_path, rows, message, bad_path):
    root = _zheng_root(tmp_path / "zheng")
    _zheng_labels(root, rows)
    with pytest.raises(DataError, match=message) as info:
        register_dataset("z", root)
    assert "Fix:" in str(info.value) and "skip_bad" in str(info.value)
    assert "z:all" not in SPLITS
    register_dataset("z", root, skip_bad=True)
    report = get_report("z:all")
    assert report.n_bad == 1 and report.bad[0][0] == str(root / bad_path)
    assert SPLITS.get("z:all").default_n == 2 and len(SPLITS.get("z:all").load(None, 8)) == 2


def test_zheng2018_missing_mask_is_an_error_naming_the_image(tmp_path):
    root = _zheng_root(tmp_path / "zheng")
    (root / "images" / "002.png").unlink()
    with pytest.raises(DataError, match=r"002\.bmp: no mask found for this image \(expected .*002\.png\)"):
        open_dataset(root)
    split = open_dataset(root, skip_bad=True)["all"]
    assert len(split) == 4 and [path for path, _ in split.report.bad] == [str(root / "images" / "002.bmp")]


@pytest.mark.parametrize(("breakage", "message", "bad_file"), [
    ("mask200", r"003\.png: mask has grey levels 200", "003.png"),
    ("mask_size", r"003\.png: mask is 26×20 px but its image is 24×20 px", "003.png"),
    ("corrupt_bmp", r"003\.bmp: cannot decode this image file", "003.bmp"),
])
def test_zheng2018_bad_sample_raises_naming_the_file_or_is_skipped(tmp_path, breakage, message, bad_file):
    root = _zheng_root(tmp_path / "zheng")
    if breakage == "mask200":
        _mask(root / "images" / "003.png", levels=(0, 128, 200))
    elif breakage == "mask_size":
        _mask(root / "images" / "003.png", size=(W + 2, H))
    else:
        (root / "images" / "003.bmp").write_bytes(b"BM not really a bitmap" * 4)
    register_dataset("z", root)  # listing does not decode
    with pytest.raises(DataError, match=message) as info:
        SPLITS.get("z:all").load(None, 8)
    assert str(root / "images" / bad_file) in str(info.value) and "skip_bad" in str(info.value)
    with pytest.raises(DataError, match=message):
        read_zheng2018(root)
    register_dataset("z", root, skip_bad=True)
    data = SPLITS.get("z:all").load(None, 8)
    assert len(data) == 4 and "basophil" not in _label_names(data)
    report = get_report("z:all")
    assert [path for path, _ in report.bad] == [str(root / "images" / bad_file)]
    assert (report.n_requested, report.n_loaded) == (5, 4)
    assert [stem for *_, stem in read_zheng2018(root, skip_bad=True)] == ["001", "002", "004", "005"]


# --- registration --------------------------------------------------------------------------------
def test_reregistering_replaces_the_old_splits(tmp_path, raabin_root):
    assert len(register_dataset("d", raabin_root)) == 3
    flat = tmp_path / "flat"
    _class_folders(flat, {"monocyte": 2})
    assert register_dataset("d", flat) == ["d:all"]
    assert SPLITS.list("d:*") == ["d:all"]
    assert "d:testb" not in SPLITS
    assert _label_names(SPLITS.get("d:all").load()) == ["monocyte", "monocyte"]


@pytest.mark.parametrize("name", ["Bad", "synth", "a:b", ""])
def test_register_rejects_bad_names(raabin_root, name):
    with pytest.raises(DataError, match="name"):
        register_dataset(name, raabin_root)


def test_register_refuses_to_overwrite_foreign_split(tmp_path, raabin_root):
    foreign = SplitDef("other:train", lambda n, size: None, "train", "other", 1, "registered by someone else")
    SPLITS.add("other:train", foreign)
    try:
        with pytest.raises(DataError, match="'other:train' is already registered"):
            register_dataset("other", raabin_root)
        assert SPLITS.get("other:train") is foreign
        assert "other:testa" not in SPLITS
    finally:
        SPLITS.remove("other:train")


def test_explicit_format_and_unknown_format(raabin_root):
    assert register_dataset("r", raabin_root / "Train", format="generic") == ["r:all"]
    with pytest.raises(DataError, match="unknown dataset format 'coco'"):
        register_dataset("r", raabin_root, format="coco")


# --- --data option -------------------------------------------------------------------------------
def test_parse_data_option(tmp_path):
    assert parse_data_option(f"raabin={tmp_path}") == ("raabin", tmp_path)
    assert parse_data_option(f" my-data_2 = {tmp_path} ") == ("my-data_2", tmp_path)


@pytest.mark.parametrize(("text", "message"), [
    ("raabin", "expected name=PATH"),
    ("Raabin=/tmp", "invalid dataset name 'Raabin'"),
    ("=/tmp", "invalid dataset name ''"),
    ("x=", "no path"),
    ("x=/no/such/folder/anywhere", "does not exist"),
])
def test_parse_data_option_errors(text, message):
    with pytest.raises(DataOptionError, match=message):
        parse_data_option(text)
    assert issubclass(DataOptionError, ValueError)


# --- bad input -----------------------------------------------------------------------------------
@pytest.fixture
def corrupt_root(tmp_path: Path) -> Path:
    root = tmp_path / "corrupt"
    _class_folders(root, {"neutrophil": 2, "eosinophil": 2})
    (root / "neutrophil" / "img0.jpg").write_bytes(b"this is not a jpeg" * 10)
    return root


def test_corrupt_image_raises_naming_the_file(corrupt_root):
    register_dataset("c", corrupt_root)  # listing does not decode
    with pytest.raises(DataError, match=r"neutrophil/img0\.jpg: cannot decode this image file.*skip_bad"):
        SPLITS.get("c:all").load()


def test_corrupt_image_skipped_and_reported(corrupt_root, caplog):
    register_dataset("c", corrupt_root, skip_bad=True)
    with caplog.at_level(logging.WARNING, logger="robustbench_wbc.data.real"):
        data = SPLITS.get("c:all").load()
    assert len(data) == 3 and "img0.jpg" in caplog.text
    assert [Path(m["path"]).name for m in data.meta] == ["img0.jpg", "img1.jpg", "img1.jpg"]
    assert _label_names(data) == ["eosinophil", "neutrophil", "eosinophil"]
    report = get_report("c:all")
    assert report.n_bad == 1 and Path(report.bad[0][0]) == corrupt_root / "neutrophil" / "img0.jpg"
    assert report.n_requested == 4 and report.n_loaded == 3
    # a prefix still gives n images: the next sample fills the bad one's place
    assert len(SPLITS.get("c:all").load(2)) == 2 and get_report("c:all").n_bad == 1


def test_split_of_only_bad_images_raises(tmp_path):
    root = tmp_path / "allbad"
    (root / "monocyte").mkdir(parents=True)
    (root / "monocyte" / "a.png").write_bytes(b"garbage")
    register_dataset("b", root, skip_bad=True)
    with pytest.raises(DataError, match="none of the 1 images"):
        SPLITS.get("b:all").load()


@pytest.mark.parametrize(("mask_kwargs", "message"), [
    ({"size": (W + 2, H)}, r"img0\.png: mask is 26×20 px but its image is 24×20 px"),
    ({"levels": (0, 64, 255)}, r"img0\.png: mask has grey levels 64"),
])
def test_bad_mask_raises_naming_the_mask(tmp_path, mask_kwargs, message):
    root = tmp_path / "g"
    _class_folders(root, {"lymphocyte": 2}, ext=".png")
    _mask(root / "masks" / "lymphocyte" / "img0.png", **mask_kwargs)
    _mask(root / "masks" / "lymphocyte" / "img1.png")
    register_dataset("g", root)
    with pytest.raises(DataError, match=message) as info:
        SPLITS.get("g:all").load()
    assert str(root / "masks" / "lymphocyte" / "img0.png") in str(info.value)
    register_dataset("g", root, skip_bad=True)
    data = SPLITS.get("g:all").load()
    assert len(data) == 1 and data.meta[0]["mask_path"].endswith("img1.png")
    assert get_report("g:all").bad[0][0] == str(root / "masks" / "lymphocyte" / "img0.png")


def test_colour_mask_rejected(tmp_path):
    root = tmp_path / "g"
    _class_folders(root, {"lymphocyte": 1}, ext=".png")
    _image(root / "masks" / "lymphocyte" / "img0.png", (255, 0, 0))
    register_dataset("g", root)
    with pytest.raises(DataError, match="mask is in colour"):
        SPLITS.get("g:all").load()


@pytest.mark.parametrize("layout", ["empty", "unknown", "empty_classes", "file"])
def test_unrecognised_or_empty_roots_raise(tmp_path, layout):
    root = tmp_path / "root"
    root.mkdir()
    if layout == "unknown":
        _image(root / "foo" / "bar" / "x.png")
        _image(root / "baz" / "y.png")
    elif layout == "empty_classes":
        (root / "Neutrophil").mkdir()
        (root / "Monocyte").mkdir()
    elif layout == "file":
        root = _image(tmp_path / "x.png")
    with pytest.raises(DataError, match=str(root)):
        register_dataset("x", root)
    assert "x:all" not in SPLITS


def test_empty_raabin_split_names_the_folder(raabin_root):
    for f in (raabin_root / "TestB").rglob("*.jpg"):
        f.unlink()
    with pytest.raises(DataError, match=r"TestB: no images of the five WBC classes"):
        register_dataset("raabin", raabin_root)
    assert "raabin:train" not in SPLITS  # nothing half-registered


# --- resizing and reports ------------------------------------------------------------------------
def test_downscale_is_antialiased(tmp_path):
    """A 1-px checkerboard shrunk 4× averages to grey; point sampling would keep black and white."""
    root = tmp_path / "flat"
    (root / "monocyte").mkdir(parents=True)
    checker = ((np.indices((24, 24)).sum(0) % 2) * 255).astype(np.uint8)
    Image.fromarray(np.stack([checker] * 3, -1)).save(root / "monocyte" / "c.png")
    img = open_dataset(root)["all"].load(1, 6).images[0]
    assert img.shape == (3, 6, 6)
    assert torch.allclose(img, torch.full_like(img, 0.5), atol=0.1)


def test_open_dataset_without_registering(raabin_root):
    splits = open_dataset(raabin_root, name="peek")
    assert list(splits) == ["train", "testa", "testb"]
    assert splits["testb"].id == "peek:testb" and len(splits["testb"]) == 5
    assert splits["train"].has_masks and not splits["testa"].has_masks
    assert not any(i.startswith("peek:") for i in SPLITS.list())
    with pytest.raises(KeyError, match="no real-data split 'peek:testb' is registered"):
        get_report("peek:testb")


def test_loads_are_deterministic_and_reports_track_the_last_load(raabin_root):
    register_dataset("raabin", raabin_root)
    split = SPLITS.get("raabin:train")
    a, b = split.load(7, 10), split.load(7, 10)
    assert a.content_hash() == b.content_hash()
    assert (get_report("raabin:train").n_requested, get_report("raabin:train").n_loaded) == (7, 7)
    split.load(3, 10)
    assert get_report("raabin:train").n_loaded == 3


# --- the real Zheng2018 dataset 1 (../shared/data beside the clone; skipped where absent) --------
ZHENG_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "zheng2018-dataset1"
ZHENG_COUNTS = {"neutrophil": 176, "lymphocyte": 53, "monocyte": 48, "eosinophil": 22, "basophil": 1}
needs_zheng = pytest.mark.skipif(
    not (ZHENG_ROOT / "labels.csv").is_file(),
    reason=f"real Zheng2018 data not found at {ZHENG_ROOT} (CI puts ../shared/data beside the clone)")


@pytest.fixture(scope="module")
def zheng_split():
    """The real set listed (not registered) and loaded once at 32 px: ``(split, data)``."""
    split = open_dataset(ZHENG_ROOT, name="zheng2018")["all"]
    return split, split.load(None, 32)


@pytest.fixture(scope="module")
def zheng_native():
    return read_zheng2018(ZHENG_ROOT)


@needs_zheng
def test_real_zheng2018_detected_and_registered():
    assert detect_format(ZHENG_ROOT) == "zheng2018"
    assert register_dataset("zheng2018", ZHENG_ROOT) == ["zheng2018:all"]
    split = SPLITS.get("zheng2018:all")
    assert (split.role, split.default_n, split.has_masks) == ("ood", 300, True)
    assert get_report("zheng2018:all").class_counts == {c: ZHENG_COUNTS[c] for c in CLASSES}


@needs_zheng
def test_real_zheng2018_loads_all_300_with_masks(zheng_split):
    split, data = zheng_split
    assert len(data) == 300 and data.images.shape == (300, 3, 32, 32) and data.masks.shape == (300, 32, 32)
    assert Counter(_label_names(data)) == ZHENG_COUNTS
    assert split.report.n_bad == 0 and split.report.n_loaded == 300 and not split.report.ignored_files
    assert set(data.masks.unique().tolist()) == {0, 1, 2}
    assert bool((data.masks == 2).flatten(1).any(1).all())  # a nucleus in every image, even at 32 px
    sizes = Counter(m["native_hw"] for m in data.meta)
    assert sizes[(120, 120)] > 150 and (116, 108) in sizes  # mostly 120×120, some smaller (e.g. 108 wide × 116 high)
    assert len({m["path"] for m in data.meta}) == 300


@needs_zheng
def test_real_zheng2018_native_images_and_masks(zheng_native, zheng_split):
    assert len(zheng_native) == 300
    assert Counter(cls for *_, cls, _ in zheng_native) == ZHENG_COUNTS
    native_hw = {Path(m["path"]).stem: m["native_hw"] for m in zheng_split[1].meta}
    for image, mask, _, stem in zheng_native:
        assert image.dtype == np.uint8 and image.shape == (*native_hw[stem], 3)
        assert mask.dtype == np.uint8 and mask.shape == native_hw[stem]
        assert set(np.unique(mask).tolist()) <= {0, 1, 2} and (mask == 2).any()
    shapes = {mask.shape for _, mask, _, _ in zheng_native}
    assert {(120, 120), (116, 108)} <= shapes


def test_leaderboard_reads_real_cells_apart(tmp_path, tiny_cards):
    """A split of real cells gets its own columns (the sim-to-real gap), never mixed into the synthetic OOD mean."""
    from robustbench_wbc.bench import ResultStore, run
    from robustbench_wbc.report import leaderboard
    from robustbench_wbc.report.leaderboard import to_markdown

    root = _zheng_root(tmp_path / "zheng", labels=(1, 1, 1, 2, 5))
    register_dataset("zreal", root)
    try:
        out = tmp_path / "out"
        summary = run(["tiny_cls", "tiny_multitask", "tiny_unet"], ["synth:test", "zreal:all"], [], out, n_images=10)
        assert not summary.failed
        table = ResultStore(out).table()
        board = leaderboard(table).set_index("model")
        real = table[table["split"] == "zreal:all"]
        acc = real[(real["model"] == "tiny_cls") & (real["metric"] == "accuracy")]["value"].iloc[0]
        assert board.loc["tiny_cls", "real_acc"] == pytest.approx(acc)
        bal = real[(real["model"] == "tiny_cls") & (real["metric"] == "balanced_accuracy")]["value"].iloc[0]
        assert board.loc["tiny_cls", "real_balanced_acc"] == pytest.approx(bal)
        assert np.isnan(board.loc["tiny_cls", "clean_acc_ood"])  # no synthetic OOD split ran
        assert 0 <= board.loc["tiny_unet", "nucleus_dice_real"] <= 1 and np.isnan(board.loc["tiny_unet", "real_acc"])
        assert "real balanced acc %" in to_markdown(leaderboard(table))
    finally:
        unregister_dataset("zreal")
