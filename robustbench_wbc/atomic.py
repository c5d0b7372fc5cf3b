"""Writing files so that a reader, or a re-run after a kill, sees the whole file or none of it.

Temporary files are made with :func:`tempfile.mkstemp` beside their target (unique names, created
exclusively, so several processes writing into one directory never collide) and renamed into place
with :func:`os.replace`, which is atomic on POSIX file systems. Their names carry the writer's host
and process id, so that :func:`remove_stale_temps` can clear what a killed writer left without
touching a live one's.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pandas as pd

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

logger = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
# .<target>.<host>-<pid>.<random>.tmp
_TMP_RE = re.compile(r"^\..+\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.[^.]+\.tmp$")
STALE_AFTER_S = 3600  # a temporary file of unknown origin this old is a dead writer's


@contextlib.contextmanager
def _staged_open(path: Path, mode: str) -> Iterator[tuple[IO, Path]]:
    """Opens a temporary file beside ``path``; on success it is flushed to disk and left for the caller to
    rename, on any error removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f, Path(tmp)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "wb") -> Iterator[IO]:
    """Opens a temporary file beside ``path``; on success it is flushed to disk and renamed into place,
    on any error removed, so ``path`` is never half-written."""
    with _staged_open(path, mode) as (f, tmp):
        yield f
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def stage_parquet(df: pd.DataFrame, path: Path) -> Path:
    """Writes ``df`` as Parquet to a temporary file beside ``path``, flushed to disk; gives the temporary's path.

    ``os.replace(tmp, path)`` commits it; the caller removes it if it does not.
    """
    with _staged_open(path, "wb") as (f, tmp):
        df.to_parquet(f, index=False)
    return tmp


def atomic_write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Writes ``df`` to ``path`` as Parquet, atomically (:func:`atomic_open`)."""
    with atomic_open(path, "wb") as f:
        df.to_parquet(f, index=False)


def atomic_write_text(text: str, path: Path) -> None:
    """Writes ``text`` to ``path`` as UTF-8, atomically (:func:`atomic_open`)."""
    with atomic_open(path, "w") as f:
        f.write(text)


@contextlib.contextmanager
def dir_lock(directory: Path) -> Iterator[None]:
    """Holds an exclusive advisory lock on ``directory`` across processes, released on exit or by the kernel
    when the process dies; it leaves no file behind. Where the file system cannot lock (no ``fcntl``, as
    on Windows, or some network mounts) it warns once and goes on unlocked: one writer per store there."""
    directory.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        _warn_unlocked(directory, "no fcntl on this platform")
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            _warn_unlocked(directory, str(exc))
        yield
    finally:
        os.close(fd)  # releases the lock


_WARNED: set[str] = set()


def _warn_unlocked(directory: Path, why: str) -> None:
    if why not in _WARNED:
        _WARNED.add(why)
        logger.warning("cannot lock %s (%s): do not let two processes write into it at once", directory, why)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temps(directory: Path) -> int:
    """Removes the temporary files in ``directory`` that a writer killed mid-write left behind: those of a
    process of this host that is gone, and any over an hour old; gives how many. A live writer's stay."""
    removed = 0
    try:
        names = [n for n in os.listdir(directory) if n.startswith(".") and n.endswith(TMP_SUFFIX)]
    except FileNotFoundError:
        return 0
    for name in names:
        path = directory / name
        m = _TMP_RE.match(name)
        try:
            if m and m["host"] == _HOST and os.name == "posix":  # os.kill(pid, 0) is a probe on POSIX only
                stale = not _alive(int(m["pid"]))
            else:
                stale = time.time() - path.stat().st_mtime > STALE_AFTER_S
            if stale:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # renamed into place, or removed by another sweeper, meanwhile
            pass
    return removed
