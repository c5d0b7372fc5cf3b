"""The result store: one file per finished cell, written atomically; the tidy table is their union.

A cell is the unit of storage and of resumption. Its rows are written to a temporary file in the
same directory, flushed to disk, then renamed into place, so a reader (or a re-run after a kill)
sees either the whole cell or none of it. Per-sample outcomes go beside it, renamed first.

Several processes may write into one store at once (two runs sharing an ``--out``, or a Dask
client beside a local run): temporary names are unique per process, a cell's two renames happen
under the store's lock so its rows and samples come from the same writer, a finished ``ok`` cell
is never replaced by another writer's failure of it (unless it was computed by other code: another
fingerprint), and exports are serialised, so the last one holds every cell committed before it began.

Each cell's rows carry its provenance (:mod:`~robustbench_wbc.bench.provenance`) and its
``fingerprint``; :meth:`ResultStore.stored` reads a cell's status and fingerprint together, which is
what a resumed run asks of every cell.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from robustbench_wbc.atomic import atomic_open, atomic_write_parquet, dir_lock, remove_stale_temps, stage_parquet

CELLS, SAMPLES = "cells", "samples"
# Columns added to the tidy table after results were first stored, with what an older cell reads as:
# an older store stays readable, its missing numbers unknown rather than invented.
ADDED_COLUMNS = {"ci_low": float("nan"), "ci_high": float("nan"), "forward_passes": 0, "backward_passes": 0,
                 "model_params": float("nan"), "v_art": "", "v_pyautoattack": "",
                 # provenance (0 and "": not recorded; such a cell is stale, bench/provenance.py)
                 "fingerprint": "", "code_scoring": 0, "code_engine": 0, "code_backend": 0, "code_plugin": "",
                 "data_digest": "", "precision": "", "batching": ""}
# what ResultStore.provenance reads of a cell: the provenance columns and the library versions
PROVENANCE_READ = ("fingerprint", "code_scoring", "code_engine", "code_backend", "code_plugin", "data_digest",
                   "precision", "batching", "v_torch", "v_timm", "v_torchattacks", "v_art", "v_pyautoattack")


class StoreWriteError(OSError):
    """A cell could not be written (a full disk, a read-only directory): the run must stop."""


class ResultStore:
    """A directory of per-cell results under ``root``.

    Args:
        root: the run's output directory (``--out``).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _cell_path(self, cell_id: str) -> Path:
        return self.root / CELLS / f"{cell_id}.parquet"

    def _samples_path(self, cell_id: str) -> Path:
        return self.root / SAMPLES / f"{cell_id}.parquet"

    def status(self, cell_id: str) -> str | None:
        """Gives the stored status of a cell (``ok``, ``failed``, ``invalid``) or ``None``."""
        path = self._cell_path(cell_id)
        if not path.exists():  # a stat, where a failed open through pyarrow costs a millisecond
            return None
        try:  # one column through pyarrow: a resumed run asks this of every cell
            status = pq.read_table(path, columns=["status"]).column(0)
        except FileNotFoundError:
            return None
        return str(status[0].as_py())

    def stored(self, cell_id: str) -> tuple[str | None, str | None]:
        """Gives a stored cell's status and fingerprint (``None`` for a cell stored without one), or ``(None, None)``."""
        got = self._first_row(cell_id, ("status", "fingerprint"))
        if got is None:
            return None, None
        return (None if got.get("status") is None else str(got["status"]),
                str(got["fingerprint"]) if got.get("fingerprint") else None)

    def provenance(self, cell_id: str) -> dict[str, object] | None:
        """Gives the provenance a stored cell was recorded with (the columns of :data:`PROVENANCE_READ` it has)."""
        return self._first_row(cell_id, PROVENANCE_READ)

    def _first_row(self, cell_id: str, columns: tuple[str, ...]) -> dict[str, object] | None:
        path = self._cell_path(cell_id)
        if not path.exists():  # a stat, where a failed open through pyarrow costs a millisecond
            return None
        try:
            with pq.ParquetFile(path) as f:  # only these columns, through the file reader (read_table's dataset path is slower)
                have = [c for c in columns if c in f.schema_arrow.names]
                table = f.read(columns=have)
        except FileNotFoundError:
            return None
        return {c: table.column(c)[0].as_py() for c in have} if table.num_rows else {}

    def is_done(self, cell_id: str, fingerprint: str | None = None) -> bool:
        """A cell is done when it finished with status ``ok`` (and, given a ``fingerprint``, was stored with it);
        failed cells are retried."""
        status, stored = self.stored(cell_id)
        return status == "ok" and (fingerprint is None or stored == fingerprint)

    def put(self, cell_id: str, rows: pd.DataFrame, samples: pd.DataFrame | None = None) -> bool:
        """Commits one cell: its per-sample outcomes first, then its rows (the commit point).

        Gives ``False``, storing nothing, when another writer has meanwhile stored the cell ``ok``
        and this result is not ``ok`` (a finished cell is never replaced by a failure of it), unless the
        cell stored was computed by other code: its fingerprint is not this result's (or it has none,
        where this result has one).
        """
        if rows.empty:
            raise ValueError(f"cell {cell_id}: no rows to store")
        cell_path, samples_path = self._cell_path(cell_id), self._samples_path(cell_id)
        staged: list[tuple[Path, Path]] = []
        try:  # write and fsync outside the lock; only the renames are serialised
            if samples is not None:
                staged.append((stage_parquet(samples, samples_path), samples_path))
            staged.append((stage_parquet(rows, cell_path), cell_path))
            ok = bool((rows["status"] == "ok").all()) if "status" in rows else True
            mine = str(rows["fingerprint"].iloc[0]) if "fingerprint" in rows else None
            with dir_lock(self.root / CELLS):  # commits take turns; exports lock the root, and do not wait on them
                if not ok and cell_path.exists():
                    status, theirs = self.stored(cell_id)
                    if status == "ok" and (mine is None or theirs == mine):
                        return False
                while staged:
                    os.replace(*staged.pop(0))
            return True
        except OSError as exc:
            raise StoreWriteError(
                f"could not store cell {cell_id} in {self.root}: {exc.strerror or exc} "
                f"({exc.filename or cell_path}). The cells stored before it are kept and the store stays "
                f"readable; free some space (or fix the directory's permissions) and run the same command "
                f"again: it resumes where it stopped.") from exc
        finally:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)

    def table(self) -> pd.DataFrame:
        """Gives the tidy table: every stored cell's rows, in a stable order."""
        files = sorted((self.root / CELLS).glob("*.parquet"))
        if not files:
            return pd.DataFrame()
        df = _read_many(files)
        for col, default in ADDED_COLUMNS.items():
            if col not in df:
                df[col] = default
        order = [c for c in ("model", "split", "attack", "target", "eps", "seed", "metric") if c in df]
        return df.sort_values(order, kind="stable").reset_index(drop=True)

    def samples(self, cell_id: str) -> pd.DataFrame:
        """Gives one cell's per-sample outcomes."""
        return pd.read_parquet(self._samples_path(cell_id))

    def export(self) -> tuple[Path, Path]:
        """Writes the whole table as ``results.parquet`` and ``results.csv``; gives their paths.

        Exports from several processes take turns, each reading the table afresh, so the files
        left are never older than the last cell committed before the last export began. Each
        also clears the temporary files of writers killed mid-write.
        """
        pq_path, csv = self.root / "results.parquet", self.root / "results.csv"
        with dir_lock(self.root):
            for directory in (self.root, self.root / CELLS, self.root / SAMPLES):
                remove_stale_temps(directory)
            df = self.table()
            atomic_write_parquet(df, pq_path)
            with atomic_open(csv, "w") as f:
                df.to_csv(f, index=False)
        return pq_path, csv


def _read_one(path: Path) -> pa.Table:
    with pq.ParquetFile(path) as f:  # the file reader itself: a third faster than read_table's dataset path
        return f.read()


def _read_many(files: list[Path], batch: int = 256) -> pd.DataFrame:
    """Reads and stacks cell files, columns matched by name (a column a file lacks reads as missing).

    Through Arrow, converting to pandas once: a pandas read per file costs milliseconds, which a
    store of 10,000 cells pays at every export. Each batch of files is made one contiguous table
    before the next is read: thousands of one-cell tables held at once cost some 70 kB each.
    """
    try:
        parts = [pa.concat_tables([_read_one(f) for f in files[i:i + batch]], promote_options="permissive")
                 .combine_chunks() for i in range(0, len(files), batch)]
        table = pa.concat_tables(parts, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a column whose type changed between versions: let pandas mix them
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    # the per-file pandas metadata describes one file's index, not the stack's
    return table.replace_schema_metadata(None).to_pandas()
