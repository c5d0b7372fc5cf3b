"""Real white-blood-cell datasets read from a folder the user gives, registered as splits.

Nothing is downloaded: each loader reads a copy the user already has. Every loader gives
:class:`~robustbench_wbc.data.splits.SplitData` in the project's conventions: images float32
N×3×S×S in [0, 1], resized (stretched, not cropped) to ``image_size`` with bilinear filtering
(Pillow's resize, antialiased when it shrinks); labels int64 in :data:`CLASSES` order; masks uint8
N×S×S with 0 background, 1 cytoplasm, 2 nucleus, resized with nearest neighbour, or ``None`` where
the dataset has none; ``meta`` one dict per image with at least ``path``, ``source_label`` (the
dataset's own class name, or its label as written where it has only numbers), ``class`` and
``native_hw`` (the image's (height, width) as stored, before the resize).

Layouts (folder and class names match case-insensitively, ignoring ``_``, ``-`` and spaces and a
plural ``s``; ``neut``, ``eosi``, ``Baso``, ``lymp``, ``mono`` are accepted as class names)::

    raabin       <root>/{Train,TestA,TestB}/<Class>/*.jpg            ids name:train, name:testa, name:testb
                 optional masks: <root>/<Split>_masks/<Class>/<stem>.png  (e.g. Train_masks/Neutrophil/x.png)
    pbc          <root>/{neutrophil,eosinophil,basophil,lymphocyte,monocyte,ig,erythroblast,platelet}/*.jpg
                                                                      id name:all; ig, erythroblast, platelet skipped
    lisc         <root>/Main_Dataset/<class>/*.bmp,                   id name:all; mixt skipped
                 masks <root>/Ground_Truth/<class>/**/<stem>.<any image ext>
    bloodmnist   <root> is the .npz file (train_/val_/test_ images N×H×W×3 uint8, labels N×1)
                                                                      ids name:train, name:val, name:test
    zheng2018    <root>/images/<id>.bmp, mask <root>/images/<id>.png, id name:all (role ood: another lab)
                 <root>/labels.csv: header "image ID,class label", rows "1,2" (the ID may drop the
                 zero padding of 001.bmp); labels 1..5 = neutrophil, lymphocyte, monocyte, eosinophil,
                 basophil (:data:`ZHENG2018_CLASSES`). Zheng et al., Micron 107:55-71, 2018, dataset 1.
                 :func:`read_zheng2018` gives its images and masks at native size.
    generic      <root>/<class>/<image>                               id name:all
                 or <root>/<split>/<class>/<image>                    one id name:<split> per split folder
                 optional masks mirror the image tree under <root>/masks/:
                 <root>/masks/<class>/<stem>.png, or <root>/masks/<split>/<class>/<stem>.png

Masks (Raabin, LISC, Zheng2018, generic) are greyscale: nucleus white (255), cytoplasm grey (128),
background black (0). Each pixel takes the nearest of the three levels; a pixel farther than
:data:`MASK_TOLERANCE` from all of them, or a mask whose size differs from its image's, is an
error. Where a mask folder exists, every image needs its mask (a missing one is an error): a split
has masks for all its images or for none. Mask files may have any image extension, ``.png`` is
the usual one.

Images of classes outside the five (PBC's ig, erythroblast, platelet; LISC's mixt; BloodMNIST's
classes 2, 3, 7; unknown class folders) are skipped, logged as a warning with the counts, and
counted in the split's :class:`LoadReport`. Files without an image extension in class folders
(and Zheng2018 images without a labels.csv row) are ignored the same way. A bad sample (a file
that does not decode, a missing or wrong mask, a Zheng2018 labels.csv row naming a missing image
or a label outside 1..5) raises :class:`DataError` naming the file and the fix; with
``skip_bad=True`` it is logged, skipped and counted in the report instead, and the next samples
fill its place.

Order: files are sorted by path (Zheng2018: by labels.csv row) within each class, and a split's
samples interleave the classes round-robin in :data:`CLASSES` order, so the first ``n`` are as
class-balanced as the data allows.

Reports: :func:`open_dataset` gives :class:`RealSplit` objects whose ``report`` is the
:class:`LoadReport` of their listing and last load; :func:`register_dataset` registers the splits
in :data:`SPLITS` (as ``SplitDef`` objects, which hold no report), and :func:`get_report` gives a
registered split's report by id.
"""

from __future__ import annotations

import csv
import logging
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from robustbench_wbc.data.splits import SPLITS, SplitData, SplitDef
from robustbench_wbc.data.synth import CLASSES

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("raabin", "pbc", "lisc", "bloodmnist", "zheng2018", "generic")
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
MASK_LEVELS = (0, 128, 255)  # background, cytoplasm, nucleus → mask values 0, 1, 2
MASK_TOLERANCE = 40  # a grey level farther than this from every level is not a mask value
SKIP_BAD_HINT = "or pass skip_bad=True to skip bad samples"
_JUNK_FILES = frozenset({"thumbs.db", "desktop.ini"})
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.@\-]*$")
_RESERVED_NAMES = frozenset({"synth"})


class DataError(ValueError):
    """A dataset on disk that cannot be read as asked; the message names the file and the fix."""


class DataOptionError(ValueError):
    """A ``--data name=PATH`` option that cannot be parsed."""


class _MaskError(DataError):
    """A bad mask file (the report names the mask, not the image)."""


# --- class names ---------------------------------------------------------------------------------
_WBC_ALIASES = {
    "neutrophil": ("neutrophil", "neut", "neu"),
    "eosinophil": ("eosinophil", "eosi", "eos"),
    "basophil": ("basophil", "baso", "bas"),
    "lymphocyte": ("lymphocyte", "lymp", "lympho", "lym"),
    "monocyte": ("monocyte", "mono", "mon"),
}
_ALIAS_TO_CLASS = {alias: cls for cls, aliases in _WBC_ALIASES.items() for alias in aliases}
_PBC_OTHER = ("ig", "erythroblast", "platelet")


def _norm(name: str) -> str:
    """Gives a folder name folded for matching: lower case, without ``_ - .`` and spaces."""
    return re.sub(r"[\s_.\-]+", "", name.lower())


def wbc_class(name: str) -> str | None:
    """Gives the :data:`CLASSES` name a dataset's class name stands for, or ``None``."""
    key = _norm(name)
    if key in _ALIAS_TO_CLASS:
        return _ALIAS_TO_CLASS[key]
    if key.endswith("s") and key[:-1] in _ALIAS_TO_CLASS:
        return _ALIAS_TO_CLASS[key[:-1]]
    return None


def _natural_key(s: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


# --- reports and samples -------------------------------------------------------------------------
@dataclass
class LoadReport:
    """What a split's listing and its last load found, skipped and loaded.

    ``skipped_classes`` counts images of classes outside the five (by the dataset's class name),
    ``ignored_files`` lists files in class folders without an image extension, and ``bad`` lists
    ``(path, reason)`` for each sample skipped with ``skip_bad=True``.
    """

    split: str
    root: str
    format: str
    class_counts: dict[str, int] = field(default_factory=dict)
    skipped_classes: dict[str, int] = field(default_factory=dict)
    ignored_files: list[str] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)
    n_requested: int = 0
    n_loaded: int = 0

    @property
    def n_found(self) -> int:
        """Gives the number of images of the five classes listed."""
        return sum(self.class_counts.values())

    @property
    def n_skipped_classes(self) -> int:
        return sum(self.skipped_classes.values())

    @property
    def n_bad(self) -> int:
        return len(self.bad)


@dataclass(frozen=True)
class _Sample:
    """One image to read: a file (``index`` None) or row ``index`` of an ``.npz`` array."""

    path: Path
    label: int
    source_label: str
    mask_path: Path | None = None
    index: int | None = None
    array_key: str = ""


@dataclass
class RealSplit:
    """A listed split of a real dataset: its samples (not decoded yet) and how to load them."""

    id: str
    sub: str
    role: str
    folder: Path
    samples: list[_Sample]
    has_masks: bool
    skip_bad: bool
    listing: LoadReport  # what listing the files found; ``report`` adds the last load's
    report: LoadReport = field(init=False)

    def __post_init__(self) -> None:
        self.report = self.listing

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, n: int | None = None, image_size: int = 64) -> SplitData:
        """Gives the first ``n`` loadable samples (default: all) at ``image_size`` pixels."""
        n = len(self.samples) if n is None else n
        if n < 1:
            raise ValueError(f"split {self.id!r}: n must be ≥ 1, got {n}")
        if image_size < 1:
            raise ValueError(f"split {self.id!r}: image_size must be ≥ 1, got {image_size}")
        report = replace(self.listing, bad=list(self.listing.bad), n_requested=n, n_loaded=0)
        images, masks, labels, meta = [], [], [], []
        arrays: dict[str, np.ndarray] = {}
        for sample in self.samples:
            if len(images) == n:
                break
            try:
                if sample.index is None:
                    img, mask, native_hw = _read_file_sample(sample, self.has_masks, image_size)
                else:
                    (img, native_hw), mask = _read_array_sample(sample, arrays, image_size), None
            except DataError as exc:
                if not self.skip_bad:
                    raise
                logger.warning("split %s: skipping a bad sample: %s", self.id, exc)
                report.bad.append((str(sample.mask_path if isinstance(exc, _MaskError) else sample.path), str(exc)))
                continue
            images.append(img)
            masks.append(mask)
            labels.append(sample.label)
            meta.append(_meta(sample, len(meta), self.id, native_hw))
        if not images:
            raise DataError(f"split {self.id!r}: none of the {len(self.samples)} images in {self.folder} could be read; "
                            f"see the warnings above for each file and fix or replace them")
        report.n_loaded = len(images)
        self.report = report
        new_bad = report.n_bad - self.listing.n_bad
        if new_bad:
            logger.warning("split %s: loaded %d images, skipped %d bad ones (see get_report(%r).bad)",
                           self.id, len(images), new_bad, self.id)
        return SplitData(self.id, torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64),
                         torch.from_numpy(np.stack(masks)) if self.has_masks else None, meta)


_REGISTERED: dict[str, list[RealSplit]] = {}  # dataset name → its registered splits


def get_report(split_id: str) -> LoadReport:
    """Gives the :class:`LoadReport` of a registered real split (its listing, and its last load)."""
    for splits in _REGISTERED.values():
        for split in splits:
            if split.id == split_id:
                return split.report
    known = sorted(s.id for splits in _REGISTERED.values() for s in splits)
    raise KeyError(f"no real-data split {split_id!r} is registered; registered: {', '.join(known) or 'none'}")


def _meta(sample: _Sample, position: int, split_id: str, native_hw: tuple[int, int]) -> dict:
    path = str(sample.path) if sample.index is None else f"{sample.path}#{sample.array_key}[{sample.index}]"
    meta = {"path": path, "source_label": sample.source_label, "class": CLASSES[sample.label],
            "split": split_id, "index": position, "native_hw": native_hw}
    if sample.mask_path is not None:
        meta["mask_path"] = str(sample.mask_path)
    if sample.index is not None:
        meta["source_index"] = sample.index
    return meta


# --- decoding ------------------------------------------------------------------------------------
def _open_image(path: Path, what: str) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        cls = _MaskError if what == "mask" else DataError
        raise cls(f"{path}: cannot decode this {what} file ({type(exc).__name__}: {exc}). "
                  f"Fix: replace or delete the file, {SKIP_BAD_HINT}") from exc
    return img


def _to_rgb_array(img: Image.Image, size: int) -> np.ndarray:
    rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return (np.asarray(rgb, dtype=np.float32) / 255.0).transpose(2, 0, 1).copy()


def mask_from_grey(grey: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
    """Gives a 0/1/2 mask from a grey-level mask (0 background, 128 cytoplasm, 255 nucleus).

    Raises :class:`DataError` naming ``path`` where a level is farther than
    :data:`MASK_TOLERANCE` from all three.
    """
    levels = np.asarray(MASK_LEVELS, dtype=np.int16)
    dist = np.abs(grey.astype(np.int16)[..., None] - levels)
    nearest = dist.argmin(-1)
    far = dist.min(-1) > MASK_TOLERANCE
    if far.any():
        bad = np.unique(grey[far])
        shown = ", ".join(str(int(v)) for v in bad[:8]) + (", …" if len(bad) > 8 else "")
        raise _MaskError(f"{path}: mask has grey levels {shown} ({int(far.sum())} pixels) more than {MASK_TOLERANCE} away "
                         f"from 0 (background), 128 (cytoplasm) and 255 (nucleus). Fix: save the mask with exactly "
                         f"these three levels, {SKIP_BAD_HINT}")
    return nearest.astype(np.uint8)


def _decode_mask(path: Path, image_wh: tuple[int, int]) -> np.ndarray:
    """Gives the 0/1/2 mask in ``path`` at its own size, which must be ``image_wh`` (width, height)."""
    img = _open_image(path, "mask")
    if img.size != image_wh:
        raise _MaskError(f"{path}: mask is {img.size[0]}×{img.size[1]} px but its image is {image_wh[0]}×{image_wh[1]} px. "
                         f"Fix: give the mask its image's size, {SKIP_BAD_HINT}")
    if img.mode in ("RGB", "RGBA", "P", "PA", "LA", "CMYK", "YCbCr"):
        rgb = np.asarray(img.convert("RGB"), dtype=np.int16)
        if np.abs(rgb - rgb[..., :1]).max() > MASK_TOLERANCE:
            raise _MaskError(f"{path}: mask is in colour; it must be greyscale (0 background, 128 cytoplasm, 255 nucleus). "
                             f"Fix: convert it to greyscale levels, {SKIP_BAD_HINT}")
        grey = rgb[..., 0]
    elif img.mode in ("1", "L"):
        grey = np.asarray(img.convert("L"))
    else:  # 16-bit or float: the values must already be the 8-bit levels
        grey = np.asarray(img, dtype=np.float64)
        if grey.ndim != 2 or grey.min() < 0 or grey.max() > 255:
            raise _MaskError(f"{path}: mask of mode {img.mode} has values outside 0..255. "
                             f"Fix: save it as an 8-bit greyscale PNG, {SKIP_BAD_HINT}")
        grey = np.rint(grey)
    return mask_from_grey(grey, path)


def _read_mask(path: Path, image_wh: tuple[int, int], size: int) -> np.ndarray:
    classes = _decode_mask(path, image_wh)
    return np.asarray(Image.fromarray(classes).resize((size, size), Image.Resampling.NEAREST), dtype=np.uint8)


def _read_file_sample(sample: _Sample, has_masks: bool, size: int) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
    """Gives the image and mask (or ``None``) at ``size`` pixels, and the image's native (height, width)."""
    img = _open_image(sample.path, "image")
    image = _to_rgb_array(img, size)
    native_hw = (img.size[1], img.size[0])
    if not has_masks:
        return image, None, native_hw
    if sample.mask_path is None:  # listing raises for (or drops) such images; this guards against a bug
        raise _MaskError(f"{sample.path}: no mask found for this image. Fix: add its mask, {SKIP_BAD_HINT}")
    return image, _read_mask(sample.mask_path, img.size, size), native_hw


def _read_array_sample(sample: _Sample, arrays: dict[str, np.ndarray], size: int) -> tuple[np.ndarray, tuple[int, int]]:
    if sample.array_key not in arrays:
        with np.load(sample.path) as npz:
            arrays[sample.array_key] = npz[sample.array_key]
    pixels = arrays[sample.array_key][sample.index]
    if pixels.dtype != np.uint8:
        raise DataError(f"{sample.path}: {sample.array_key} holds {pixels.dtype} pixels, expected uint8 (0..255); "
                        f"not a BloodMNIST .npz")
    img = Image.fromarray(pixels if pixels.ndim == 3 else pixels[..., None].repeat(3, -1))
    return _to_rgb_array(img, size), (int(pixels.shape[0]), int(pixels.shape[1]))


# --- listing -------------------------------------------------------------------------------------
def _subdirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: _natural_key(p.name))


def _find_child(folder: Path, *names: str) -> Path | None:
    """Gives the subfolder whose folded name is one of ``names``, or ``None``."""
    wanted = {_norm(n) for n in names}
    return next((d for d in _subdirs(folder) if _norm(d.name) in wanted), None)


def _image_files(folder: Path, report: LoadReport) -> list[Path]:
    images = []
    for f in folder.iterdir():
        if not f.is_file() or f.name.startswith(".") or f.name.lower() in _JUNK_FILES:
            continue
        if f.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(f)
        else:
            report.ignored_files.append(str(f))
    return sorted(images, key=lambda p: _natural_key(str(p)))


def _mask_index(mask_folder: Path | None) -> dict[str, list[Path]]:
    """Gives the mask files under ``mask_folder`` (any depth) by stem."""
    index: dict[str, list[Path]] = {}
    if mask_folder is None or not mask_folder.is_dir():
        return index
    for f in sorted(mask_folder.rglob("*")):
        if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("."):
            index.setdefault(f.stem, []).append(f)
    return index


def _interleave(samples: list[_Sample]) -> list[_Sample]:
    """Gives the samples round-robin over classes (CLASSES order), each class in listed order."""
    by_class: dict[int, list[_Sample]] = {}
    for s in samples:
        by_class.setdefault(s.label, []).append(s)
    queues = [by_class[k] for k in sorted(by_class)]
    out = []
    for i in range(max((len(q) for q in queues), default=0)):
        out.extend(q[i] for q in queues if i < len(q))
    return out


def _list_class_folders(split_id: str, folder: Path, report: LoadReport, *, mask_root: Path | None, skip_bad: bool,
                        class_dirs: list[Path] | None = None, recursive_masks: bool = False) -> tuple[list[_Sample], bool]:
    """Lists ``folder/<class>/<image>``; gives the samples and whether the split has masks."""
    class_dirs = _subdirs(folder) if class_dirs is None else class_dirs
    if not class_dirs:
        raise DataError(f"{folder}: no class folders found (expected e.g. {folder}/Neutrophil/*.jpg). "
                        f"Fix: put each class's images in a folder named after the class")
    has_masks = mask_root is not None and mask_root.is_dir()
    samples: list[_Sample] = []
    for d in class_dirs:
        cls = wbc_class(d.name)
        files = _image_files(d, report)
        if cls is None:
            report.skipped_classes[d.name] = report.skipped_classes.get(d.name, 0) + len(files)
            continue
        if not files:
            logger.warning("split %s: class folder %s holds no images", split_id, d)
        report.class_counts[cls] = report.class_counts.get(cls, 0) + len(files)
        masks: dict[str, list[Path]] = {}
        mask_dir = _find_child(mask_root, d.name) if has_masks else None
        if mask_dir is not None:
            masks = _mask_index(mask_dir)
            if not recursive_masks:
                masks = {stem: [p for p in ps if p.parent == mask_dir] for stem, ps in masks.items()}
        for f in files:
            mask_path = None
            if has_masks:
                found = list(masks.get(f.stem, []))
                if len(found) > 1:
                    pngs = [p for p in found if p.suffix.lower() == ".png"]
                    if len(pngs) != 1:
                        _bad_listing(report, skip_bad, f, f"{f}: several mask files match it: {', '.join(map(str, found))}. "
                                     f"Fix: keep one mask per image, {SKIP_BAD_HINT}")
                        continue
                    found = pngs
                if not found:
                    expected = (mask_dir or mask_root / d.name) / f"{f.stem}.png"
                    _bad_listing(report, skip_bad, f, f"{f}: no mask found for this image (expected {expected}). "
                                 f"Fix: add the mask, or remove the mask folder {mask_root} to load the split without masks, "
                                 f"{SKIP_BAD_HINT}")
                    continue
                mask_path = found[0]
            samples.append(_Sample(f, CLASSES.index(cls), d.name, mask_path))
    if report.skipped_classes:
        shown = ", ".join(f"{k}: {v}" for k, v in report.skipped_classes.items())
        logger.warning("split %s: skipping images of classes outside the five WBC classes (%s)", split_id, shown)
    if report.ignored_files:
        logger.warning("split %s: ignoring %d files without an image extension, e.g. %s",
                       split_id, len(report.ignored_files), report.ignored_files[0])
    if not samples:
        found = ", ".join(d.name for d in class_dirs)
        raise DataError(f"{folder}: no images of the five WBC classes {', '.join(CLASSES)} found (class folders: {found}). "
                        f"Fix: check the path, and that class folders hold image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    report.class_counts = {c: report.class_counts[c] for c in CLASSES if c in report.class_counts}
    return _interleave(samples), has_masks


def _bad_listing(report: LoadReport, skip_bad: bool, path: Path, message: str) -> None:
    if not skip_bad:
        raise DataError(message)
    logger.warning("skipping a bad sample: %s", message)
    report.bad.append((str(path), message))


def _role(sub: str) -> str:
    return {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val"}.get(sub, "ood")


def _sub_id(name: str) -> str:
    sub = re.sub(r"[^a-z0-9_.@\-]+", "-", name.lower()).strip("-")
    return sub or "split"


def _file_split(name: str, root: Path, fmt: str, sub: str, folder: Path, skip_bad: bool, **kwargs) -> RealSplit:
    split_id = f"{name}:{sub}"
    report = LoadReport(split_id, str(root), fmt)
    samples, has_masks = _list_class_folders(split_id, folder, report, skip_bad=skip_bad, **kwargs)
    return RealSplit(split_id, sub, _role(sub), folder, samples, has_masks, skip_bad, report)


_RAABIN_SPLITS = {"train": "train", "testa": "testa", "testb": "testb"}


def _open_raabin(name: str, root: Path, skip_bad: bool) -> list[RealSplit]:
    splits = []
    for d in _subdirs(root):
        sub = _RAABIN_SPLITS.get(_norm(d.name))
        if sub is None:
            continue
        mask_root = _find_child(root, f"{d.name}_masks")
        splits.append(_file_split(name, root, "raabin", sub, d, skip_bad, mask_root=mask_root))
    if not splits:
        raise DataError(f"{root}: no Raabin-WBC split folders (Train, TestA, TestB) found")
    return sorted(splits, key=lambda s: list(_RAABIN_SPLITS).index(s.sub))


def _open_flat(name: str, root: Path, fmt: str, skip_bad: bool) -> list[RealSplit]:
    return [_file_split(name, root, fmt, "all", root, skip_bad, mask_root=None)]


def _open_lisc(name: str, root: Path, skip_bad: bool) -> list[RealSplit]:
    main = _find_child(root, "Main_Dataset")
    if main is None:
        raise DataError(f"{root}: no Main_Dataset folder; a LISC root holds Main_Dataset/<class>/*.bmp")
    gt = _find_child(root, "Ground_Truth", "Ground_Truth_Segmentation")
    if gt is None:
        logger.warning("LISC %s: no Ground_Truth folder; loading without masks", root)
    return [_file_split(name, root, "lisc", "all", main, skip_bad, mask_root=gt, recursive_masks=True)]


def _open_generic(name: str, root: Path, skip_bad: bool) -> list[RealSplit]:
    mask_root = _find_child(root, "masks")
    dirs = [d for d in _subdirs(root) if d != mask_root]
    if not dirs:
        raise DataError(f"{root}: no class or split folders found. "
                        f"Fix: use <root>/<class>/<image> or <root>/<split>/<class>/<image>")
    if any(wbc_class(d.name) for d in dirs):  # <root>/<class>/<image>
        return [_file_split(name, root, "generic", "all", root, skip_bad, mask_root=mask_root, class_dirs=dirs)]
    splits = []
    for d in dirs:  # <root>/<split>/<class>/<image>
        sub = _sub_id(d.name)
        if not any(wbc_class(c.name) for c in _subdirs(d)):
            raise DataError(f"{d}: split folder without any WBC class folder ({', '.join(CLASSES)}). "
                            f"Fix: put images in {d}/<class>/, or move the folder out of {root}")
        split_masks = _find_child(mask_root, d.name) if mask_root is not None else None
        if mask_root is not None and split_masks is None:
            logger.warning("%s: no mask folder for split %r (%s); loading it without masks", root, d.name, mask_root / d.name)
        splits.append(_file_split(name, root, "generic", sub, d, skip_bad, mask_root=split_masks))
    return splits


# Zheng2018 (dataset 1 of Zheng et al., Micron 2018): label k in labels.csv → CLASSES name
ZHENG2018_CLASSES = ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil")  # labels 1..5
_ZHENG2018_HEADER = ("imageid", "classlabel")  # "image ID,class label", folded with _norm


def _zheng2018_labels_file(root: Path) -> Path | None:
    """Gives ``root/labels.csv`` (any case) where its header is ``image ID,class label``, else ``None``."""
    found = next((f for f in root.iterdir() if f.is_file() and f.name.lower() == "labels.csv"), None)
    if found is None:
        return None
    try:
        with found.open(encoding="utf-8-sig", newline="") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return found if tuple(_norm(h) for h in header) == _ZHENG2018_HEADER else None


def _is_zheng2018(root: Path) -> bool:
    images = _find_child(root, "images")
    if images is None or _zheng2018_labels_file(root) is None:
        return False
    stems = {f.stem for f in images.iterdir() if f.is_file() and f.suffix.lower() == ".png"}
    return any(f.is_file() and f.suffix.lower() == ".bmp" and f.stem in stems for f in images.iterdir())


def _list_zheng2018(root: Path, report: LoadReport, skip_bad: bool) -> tuple[list[_Sample], bool]:
    """Lists ``root/images/<id>.bmp`` (+ ``<id>.png`` masks) by the rows of ``root/labels.csv``, in row order.

    Gives the samples and whether the images have masks (all of them must, where any has one).
    """
    images_dir = _find_child(root, "images")
    labels_csv = _zheng2018_labels_file(root)
    if images_dir is None or labels_csv is None:
        raise DataError(f"{root}: not a Zheng2018 folder; it holds images/<id>.bmp with <id>.png masks and a labels.csv "
                        f"whose header is 'image ID,class label'")
    bmps: dict[str, Path] = {}
    pngs: dict[str, Path] = {}
    for f in sorted(images_dir.iterdir(), key=lambda p: _natural_key(p.name)):
        if not f.is_file() or f.name.startswith(".") or f.name.lower() in _JUNK_FILES:
            continue
        if f.suffix.lower() == ".bmp":
            bmps[f.stem] = f
        elif f.suffix.lower() == ".png":
            pngs[f.stem] = f
        else:
            report.ignored_files.append(str(f))
    by_number: dict[int, list[str]] = {}
    for stem in bmps:
        if stem.isdigit():
            by_number.setdefault(int(stem), []).append(stem)
    has_masks = any(stem in pngs for stem in bmps)
    if not has_masks:
        logger.warning("Zheng2018 %s: no <id>.png mask beside any image in %s; loading without masks", root, images_dir)
    fix_row = f"Fix: correct or delete the row in {labels_csv}, {SKIP_BAD_HINT}"
    samples: list[_Sample] = []
    seen: dict[str, int] = {}
    try:
        with labels_csv.open(encoding="utf-8-sig", newline="") as f:
            rows = list(enumerate(csv.reader(f), start=1))[1:]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{labels_csv}: cannot read this CSV file ({type(exc).__name__}: {exc}). "
                        f"Fix: save it as UTF-8 text with rows 'image ID,class label'") from exc
    for line, row in rows:
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        where = f"{labels_csv} line {line} ({','.join(row)!r})"
        if len(cells) != 2 or not cells[0]:
            _bad_listing(report, skip_bad, labels_csv, f"{where}: expected two fields, image ID and class label. {fix_row}")
            continue
        image_id, label = cells
        stem = image_id if image_id in bmps else None
        if stem is None and image_id.isdigit() and len(by_number.get(int(image_id), [])) == 1:
            stem = by_number[int(image_id)][0]
        if stem is None:
            if image_id.isdigit() and len(by_number.get(int(image_id), [])) > 1:
                shown = ", ".join(str(bmps[s]) for s in by_number[int(image_id)])
                _bad_listing(report, skip_bad, labels_csv, f"{where}: several images match image ID {image_id}: {shown}. "
                             f"Fix: keep one of them, {SKIP_BAD_HINT}")
                continue
            width = max((len(s) for s in bmps if s.isdigit()), default=0)
            expected = images_dir / f"{image_id.zfill(width) if image_id.isdigit() else image_id}.bmp"
            _bad_listing(report, skip_bad, expected, f"{where}: no image {expected} for image ID {image_id}. "
                         f"Fix: add the image, or delete the row from {labels_csv}, {SKIP_BAD_HINT}")
            continue
        if not (label.isdigit() and 1 <= int(label) <= len(ZHENG2018_CLASSES)):
            _bad_listing(report, skip_bad, labels_csv, f"{where}: class label {label!r} is not one of 1..5 "
                         f"({', '.join(f'{k} {c}' for k, c in enumerate(ZHENG2018_CLASSES, 1))}). {fix_row}")
            continue
        if stem in seen:
            _bad_listing(report, skip_bad, labels_csv, f"{where}: image {bmps[stem]} already has a row (line {seen[stem]}). "
                         f"{fix_row}")
            continue
        seen[stem] = line
        mask_path = pngs.get(stem)
        if has_masks and mask_path is None:
            _bad_listing(report, skip_bad, bmps[stem], f"{bmps[stem]}: no mask found for this image "
                         f"(expected {images_dir / (stem + '.png')}). Fix: add the mask, {SKIP_BAD_HINT}")
            continue
        cls = ZHENG2018_CLASSES[int(label) - 1]
        report.class_counts[cls] = report.class_counts.get(cls, 0) + 1
        samples.append(_Sample(bmps[stem], CLASSES.index(cls), str(int(label)), mask_path))
    unlisted = [str(bmps[s]) for s in bmps if s not in seen]
    if unlisted:
        report.ignored_files.extend(unlisted)
        logger.warning("Zheng2018 %s: ignoring %d images without a row in %s, e.g. %s", root, len(unlisted), labels_csv.name,
                       unlisted[0])
    if not samples:
        raise DataError(f"{root}: no labelled images found ({len(bmps)} .bmp files in {images_dir}, {len(rows)} rows in "
                        f"{labels_csv}). Fix: check the path, and that labels.csv rows name images/<id>.bmp files")
    report.class_counts = {c: report.class_counts[c] for c in CLASSES if c in report.class_counts}
    return samples, has_masks


def _open_zheng2018(name: str, root: Path, skip_bad: bool) -> list[RealSplit]:
    split_id = f"{name}:all"
    report = LoadReport(split_id, str(root), "zheng2018")
    samples, has_masks = _list_zheng2018(root, report, skip_bad)
    return [RealSplit(split_id, "all", _role("all"), root, _interleave(samples), has_masks, skip_bad, report)]


def read_zheng2018(root: str | Path, skip_bad: bool = False) -> list[tuple[np.ndarray, np.ndarray, str, str]]:
    """Gives every labelled image of a Zheng2018 folder at its native size, in ``labels.csv`` order.

    Each item is ``(image, mask, class, stem)``: image uint8 H×W×3 RGB, mask uint8 H×W with 0
    background, 1 cytoplasm, 2 nucleus, the :data:`CLASSES` name of its (noisy) label, and the
    file stem (``"001"``). Nothing is resized. A bad sample raises :class:`DataError` naming the
    file, or with ``skip_bad=True`` is logged and left out.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; give the Zheng2018 folder holding images/ and labels.csv")
    report = LoadReport("zheng2018", str(root), "zheng2018")
    samples, has_masks = _list_zheng2018(root, report, skip_bad)
    if not has_masks:
        raise DataError(f"{root}: no masks (images/<id>.png beside images/<id>.bmp). Fix: add the masks")
    out = []
    for sample in samples:
        assert sample.mask_path is not None  # listing drops (or raises for) images without a mask
        try:
            img = _open_image(sample.path, "image")
            mask = _decode_mask(sample.mask_path, img.size)
        except DataError as exc:
            if not skip_bad:
                raise
            logger.warning("Zheng2018 %s: skipping a bad sample: %s", root, exc)
            continue
        out.append((np.asarray(img.convert("RGB"), dtype=np.uint8), mask, CLASSES[sample.label], sample.path.stem))
    return out


# BloodMNIST label k → its class name (erythroblast, ig and platelet are outside the five and skipped)
BLOODMNIST_CLASSES = ("basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet")


def _open_bloodmnist(name: str, root: Path, skip_bad: bool) -> list[RealSplit]:
    try:
        with np.load(root) as npz:
            keys = set(npz.files)
            labels_by_split = {s: np.asarray(npz[f"{s}_labels"]) for s in ("train", "val", "test") if f"{s}_labels" in keys}
            shapes = {s: _npy_shape(root, f"{s}_images.npy") for s in labels_by_split}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{root}: cannot read this .npz file ({type(exc).__name__}: {exc}). "
                        f"Fix: download the BloodMNIST .npz again") from exc
    if not labels_by_split:
        raise DataError(f"{root}: no train_labels/val_labels/test_labels arrays (found {sorted(keys)}); not a BloodMNIST .npz")
    splits = []
    for sub, labels in labels_by_split.items():
        if f"{sub}_images" not in keys:
            raise DataError(f"{root}: has {sub}_labels but no {sub}_images")
        shape = shapes[sub]
        labels = labels.reshape(-1)
        if shape is not None and (len(shape) not in (3, 4) or shape[0] != len(labels) or (len(shape) == 4 and shape[3] != 3)):
            raise DataError(f"{root}: {sub}_images has shape {shape}, expected ({len(labels)}, H, W, 3)")
        split_id = f"{name}:{sub}"
        report = LoadReport(split_id, str(root), "bloodmnist")
        samples = []
        for i, k in enumerate(labels.tolist()):
            if not 0 <= k < len(BLOODMNIST_CLASSES):
                raise DataError(f"{root}: {sub}_labels[{i}] = {k} is not a BloodMNIST label (0..7)")
            src = BLOODMNIST_CLASSES[k]
            if src in CLASSES:
                samples.append(_Sample(root, CLASSES.index(src), src, index=i, array_key=f"{sub}_images"))
                report.class_counts[src] = report.class_counts.get(src, 0) + 1
            else:
                report.skipped_classes[src] = report.skipped_classes.get(src, 0) + 1
        if report.skipped_classes:
            shown = ", ".join(f"{k}: {v}" for k, v in report.skipped_classes.items())
            logger.warning("split %s: skipping images of classes outside the five WBC classes (%s)", split_id, shown)
        report.class_counts = {c: report.class_counts[c] for c in CLASSES if c in report.class_counts}
        if not samples:
            raise DataError(f"{root}: {sub} split holds no images of the five WBC classes")
        splits.append(RealSplit(split_id, sub, _role(sub), root, _interleave(samples), False, skip_bad, report))
    return splits


def _npy_shape(npz_path: Path, member: str) -> tuple[int, ...] | None:
    """Gives the shape of an ``.npz`` member from its header, without reading its data."""
    with zipfile.ZipFile(npz_path) as zf:
        if member not in zf.namelist():
            return None
        with zf.open(member) as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, _ = read(f)
    return tuple(shape)


_OPENERS: dict[str, Callable[[str, Path, bool], list[RealSplit]]] = {
    "raabin": _open_raabin,
    "pbc": lambda name, root, skip_bad: _open_flat(name, root, "pbc", skip_bad),
    "lisc": _open_lisc,
    "bloodmnist": _open_bloodmnist,
    "zheng2018": _open_zheng2018,
    "generic": _open_generic,
}


def detect_format(path: str | Path) -> str:
    """Gives the format of the dataset at ``path`` (one of :data:`FORMATS`), or raises DataError."""
    root = Path(path)
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    if root.is_file():
        if root.suffix.lower() == ".npz":
            return "bloodmnist"
        raise DataError(f"{root}: a file, but not a BloodMNIST .npz; give a dataset folder or a .npz file")
    if _is_zheng2018(root):
        return "zheng2018"
    names = {_norm(d.name) for d in _subdirs(root)}
    if names & {"testa", "testb"}:  # a lone Train/ reads the same as the generic layout
        return "raabin"
    if "maindataset" in names:
        return "lisc"
    folded = {n[:-1] if n.endswith("s") and n[:-1] in _PBC_OTHER else n for n in names}
    if folded & set(_PBC_OTHER) and any(wbc_class(n) for n in names):
        return "pbc"
    if any(wbc_class(n) for n in names):
        return "generic"
    if any(wbc_class(c.name) for d in _subdirs(root) if _norm(d.name) != "masks" for c in _subdirs(d)):
        return "generic"
    shown = ", ".join(d.name for d in _subdirs(root)) or "none"
    raise DataError(f"{root}: no known dataset layout (subfolders: {shown}). Expected Raabin-WBC (Train/TestA/TestB), "
                    f"PBC (class folders incl. ig/erythroblast/platelet), LISC (Main_Dataset/), a BloodMNIST .npz, "
                    f"Zheng2018 (images/<id>.bmp with <id>.png masks, labels.csv 'image ID,class label'), or the generic "
                    f"<root>[/<split>]/<class>/<image>; see robustbench_wbc.data.real for the layouts")


def open_dataset(path: str | Path, format: str | None = None, skip_bad: bool = False, name: str = "data") -> dict[str, RealSplit]:
    """Gives the splits of the dataset at ``path`` by sub-split name, listed but not decoded.

    Args:
        path: the dataset's root folder (the ``.npz`` file for BloodMNIST).
        format: one of :data:`FORMATS`, or ``None`` to detect it.
        skip_bad: skip (and report) bad samples instead of raising :class:`DataError`.
        name: the prefix of the split ids (``name:sub``).
    """
    root = Path(path).expanduser()
    fmt = detect_format(root) if format is None else format.lower()
    if fmt not in _OPENERS:
        raise DataError(f"unknown dataset format {format!r}; use one of {', '.join(FORMATS)}")
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    if fmt == "bloodmnist" and not root.is_file():
        raise DataError(f"{root}: BloodMNIST is read from its .npz file; give the file's path")
    if fmt != "bloodmnist" and not root.is_dir():
        raise DataError(f"{root}: the {fmt} format is read from a folder; give the dataset's root folder")
    splits: dict[str, RealSplit] = {}
    for split in _OPENERS[fmt](name, root, skip_bad):
        if split.sub in splits:
            raise DataError(f"{root}: two folders give the split id {split.id!r} ({splits[split.sub].folder}, {split.folder}). "
                            f"Fix: rename one of them")
        splits[split.sub] = split
    return splits


def _check_name(name: str, error: type[ValueError]) -> None:
    if not _NAME_RE.match(name):
        raise error(f"invalid dataset name {name!r}: use lower-case letters, digits and _ - . @, starting with a letter or digit")
    if name in _RESERVED_NAMES:
        raise error(f"dataset name {name!r} is reserved for the built-in splits; choose another")


def register_dataset(name: str, path: str | Path, format: str | None = None, skip_bad: bool = False) -> list[str]:
    """Registers each split of the dataset at ``path`` as ``name:<sub>`` in SPLITS; gives the ids.

    Registering ``name`` again replaces its earlier splits. Files are listed now and decoded
    on each ``load``.
    """
    _check_name(name, DataError)
    splits = open_dataset(path, format, skip_bad, name)
    previous = {s.id for s in _REGISTERED.get(name, [])}
    for split in splits.values():
        if split.id in SPLITS and split.id not in previous:
            raise DataError(f"split {split.id!r} is already registered by something else; choose another dataset name")
    unregister_dataset(name)
    for split in splits.values():
        fmt = split.report.format
        description = (f"{fmt} {split.sub} from {split.report.root}: {len(split)} images"
                       f"{', with masks' if split.has_masks else ''}")
        SPLITS.add(split.id, SplitDef(split.id, split.load, split.role, name, len(split), description,
                                      has_masks=split.has_masks))
    _REGISTERED[name] = list(splits.values())
    return [s.id for s in splits.values()]


def unregister_dataset(name: str) -> list[str]:
    """Removes the splits registered under ``name``; gives their ids."""
    ids = [s.id for s in _REGISTERED.pop(name, [])]
    for split_id in ids:
        SPLITS.remove(split_id)
    return ids


def parse_data_option(text: str) -> tuple[str, Path]:
    """Gives ``(name, path)`` from a ``--data name=PATH`` option; raises DataOptionError."""
    if "=" not in text:
        raise DataOptionError(f"--data {text!r}: expected name=PATH, e.g. --data raabin=/data/Raabin-WBC")
    name, _, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    _check_name(name, DataOptionError)
    if not raw:
        raise DataOptionError(f"--data {text!r}: no path after '='; expected name=PATH")
    path = Path(raw).expanduser()
    if not path.exists():
        raise DataOptionError(f"--data {text!r}: {path} does not exist; give the dataset's folder (or BloodMNIST .npz)")
    return name, path


def registered_datasets() -> dict[str, list[str]]:
    """Gives the split ids registered per dataset name."""
    return {name: [s.id for s in splits] for name, splits in _REGISTERED.items()}
