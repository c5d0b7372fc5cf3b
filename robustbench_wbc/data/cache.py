"""SynthWBC on disk: generated splits cached as 8-bit arrays with a dataset card.

A cache entry is a directory named by the digest of everything that decides the pixels (generator
version, seed, domain and its parameters, probe, corruption, size, class priors), so a changed
parameter is a new entry, never a stale one. It holds ``images.npy`` (uint8 N×H×W×3),
``masks.npy``, ``labels.npy`` and ``card.json`` (parameters, per-class counts, content hash), and is
written to a temporary directory and renamed into place. Any ``n`` up to the stored one is served
from it (image ``i`` does not depend on ``n``); a larger ``n`` rewrites it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from robustbench_wbc import paths
from robustbench_wbc.data.splits import SynthSpec, render
from robustbench_wbc.data.synth import CLASSES, GENERATOR_VERSION, pixel_size

logger = logging.getLogger(__name__)

BATCH = 1024  # images rendered at a time when writing a set: bounds memory for any n


def _npy_writer(path: Path, shape: tuple[int, ...], dtype):
    """Opens a ``.npy`` file for sequential writing: the header now, the data batch by batch."""
    f = open(path, "wb")
    np.lib.format.write_array_header_2_0(
        f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape})
    return f


def _hash_npy_data(path: Path, h) -> None:
    """Feeds the data bytes of a ``.npy`` file (not its header) to ``h``, a block at a time."""
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_2_0(f)
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)


def write_set(spec: SynthSpec, n: int, size: int, out: Path, name: str = "") -> dict:
    """Renders ``n`` images of ``spec`` into ``out`` in batches; gives the card written.

    Each batch is written and hashed as it comes and then dropped, so memory stays bounded by the
    batch whatever ``n`` (a 100,000-image set at 64 px is measured by ``benchmarks/bench_synth.py``).
    """
    out.mkdir(parents=True, exist_ok=True)
    labels = np.empty(n, np.int64)
    t0 = time.perf_counter()
    with _npy_writer(out / "images.npy", (n, size, size, 3), np.uint8) as fi, \
            _npy_writer(out / "masks.npy", (n, size, size), np.uint8) as fm:
        for start in range(0, n, BATCH):
            stop = min(n, start + BATCH)
            x, y, m, _ = render(spec, stop - start, size, start)
            img = np.ascontiguousarray(np.round(x.transpose(0, 2, 3, 1) * 255).astype(np.uint8))
            m = np.ascontiguousarray(m)
            fi.write(img.data)
            fm.write(m.data)
            labels[start:stop] = y
    elapsed = time.perf_counter() - t0
    np.save(out / "labels.npy", labels)
    h = hashlib.sha256()
    for f in ("images.npy", "masks.npy"):
        _hash_npy_data(out / f, h)
    h.update(labels.tobytes())
    card = {
        "name": name, "generator": GENERATOR_VERSION, "params": asdict(spec), "size": size, "n": n,
        "um_per_px": pixel_size(size, spec.um_per_px),
        "class_counts": {c: int((labels == k).sum()) for k, c in enumerate(CLASSES)},
        "sha256": h.hexdigest(), "sha256_of": "the bytes of images, masks and labels, in that order",
        "images_per_s": round(n / elapsed, 1),
        "files": {"images": "images.npy (uint8 N×H×W×3)", "masks": "masks.npy (uint8 N×H×W: 0 bg, 1 cytoplasm, 2 nucleus)",
                  "labels": "labels.npy (int64, index into classes)"},
        "classes": list(CLASSES),
    }
    (out / "card.json").write_text(json.dumps(card, indent=2))
    return card


def _read(entry: Path, n: int):
    images = np.load(entry / "images.npy", mmap_mode="r")[:n]
    masks = np.load(entry / "masks.npy", mmap_mode="r")[:n]
    labels = np.load(entry / "labels.npy")[:n]
    x = images.transpose(0, 3, 1, 2).astype(np.float32) / 255
    return x, labels, np.array(masks)


def load_or_render(spec: SynthSpec, n: int, size: int):
    """Gives ``(images, labels, masks, meta)`` for the first ``n`` images, from the cache if there."""
    entry = paths.home() / "data" / spec.key(size)
    card_path = entry / "card.json"
    try:
        card = json.loads(card_path.read_text()) if card_path.exists() else None
    except (OSError, json.JSONDecodeError):
        logger.warning("unreadable cache card %s: regenerating", card_path)
        card = None
    if card is not None and card.get("n", 0) >= n and card.get("generator") == GENERATOR_VERSION:
        try:
            x, labels, masks = _read(entry, n)
        except (OSError, ValueError, EOFError) as exc:  # a truncated or missing array: make it again
            logger.warning("damaged cache entry %s (%s): regenerating", entry, exc)
            card = None
    if card is None or card.get("n", 0) < n or card.get("generator") != GENERATOR_VERSION:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
        try:
            write_set(spec, n, size, tmp)
            if entry.exists():
                shutil.rmtree(entry, ignore_errors=True)
            try:
                os.replace(tmp, entry)
            except OSError:  # another process put its entry there first: both hold the same pixels
                logger.info("cache entry %s written concurrently; using the other copy", entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        x, labels, masks = _read(entry, n)
    um = pixel_size(size, spec.um_per_px)
    meta = [{"class": CLASSES[lab], "index": i, "domain": spec.domain, "um_per_px": um}
            for i, lab in enumerate(labels.tolist())]
    return x, labels, masks, meta
