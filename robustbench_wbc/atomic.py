"""Writing files so that a reader, or a re-run after a kill, sees the whole file or none of it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pandas as pd


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "wb") -> Iterator[IO]:
    """Opens a temporary file beside ``path``; on success it is flushed to disk and renamed into place,
    on any error removed, so ``path`` is never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Writes ``df`` to ``path`` as Parquet, atomically (:func:`atomic_open`)."""
    with atomic_open(path, "wb") as f:
        df.to_parquet(f, index=False)


def atomic_write_text(text: str, path: Path) -> None:
    """Writes ``text`` to ``path`` as UTF-8, atomically (:func:`atomic_open`)."""
    with atomic_open(path, "w") as f:
        f.write(text)
