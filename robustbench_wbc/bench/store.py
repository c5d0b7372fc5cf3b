"""The result store: one file per finished cell, written atomically; the tidy table is their union.

A cell is the unit of storage and of resumption. Its rows are written to a temporary file in the
same directory, flushed to disk, then renamed into place, so a reader (or a re-run after a kill)
sees either the whole cell or none of it. Per-sample outcomes go beside it, written first.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from robustbench_wbc.atomic import atomic_open, atomic_write_parquet

CELLS, SAMPLES = "cells", "samples"
# Columns added to the tidy table after results were first stored, with what an older cell reads as:
# an older store stays readable, its missing numbers unknown rather than invented.
ADDED_COLUMNS = {"ci_low": float("nan"), "ci_high": float("nan"), "forward_passes": 0, "backward_passes": 0,
                 "model_params": float("nan"), "v_art": "", "v_pyautoattack": ""}


class ResultStore:
    """A directory of per-cell results under ``root``.

    Args:
        root: the run's output directory (``--out``).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _cell_path(self, cell_id: str) -> Path:
        return self.root / CELLS / f"{cell_id}.parquet"

    def status(self, cell_id: str) -> str | None:
        """Gives the stored status of a cell (``ok``, ``failed``, ``invalid``) or ``None``."""
        path = self._cell_path(cell_id)
        if not path.exists():
            return None
        return str(pd.read_parquet(path, columns=["status"])["status"].iloc[0])

    def is_done(self, cell_id: str) -> bool:
        """A cell is done when it finished with status ``ok``; failed cells are retried."""
        return self.status(cell_id) == "ok"

    def put(self, cell_id: str, rows: pd.DataFrame, samples: pd.DataFrame | None = None) -> None:
        """Commits one cell: its per-sample outcomes first, then its rows (the commit point)."""
        if rows.empty:
            raise ValueError(f"cell {cell_id}: no rows to store")
        if samples is not None:
            atomic_write_parquet(samples, self.root / SAMPLES / f"{cell_id}.parquet")
        atomic_write_parquet(rows, self._cell_path(cell_id))

    def table(self) -> pd.DataFrame:
        """Gives the tidy table: every stored cell's rows, in a stable order."""
        files = sorted((self.root / CELLS).glob("*.parquet"))
        if not files:
            return pd.DataFrame()
        df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        for col, default in ADDED_COLUMNS.items():
            if col not in df:
                df[col] = default
        order = [c for c in ("model", "split", "attack", "target", "eps", "seed", "metric") if c in df]
        return df.sort_values(order, kind="stable").reset_index(drop=True)

    def samples(self, cell_id: str) -> pd.DataFrame:
        """Gives one cell's per-sample outcomes."""
        return pd.read_parquet(self.root / SAMPLES / f"{cell_id}.parquet")

    def export(self) -> tuple[Path, Path]:
        """Writes the whole table as ``results.parquet`` and ``results.csv``; gives their paths."""
        df = self.table()
        pq, csv = self.root / "results.parquet", self.root / "results.csv"
        atomic_write_parquet(df, pq)
        with atomic_open(csv, "w") as f:
            df.to_csv(f, index=False)
        return pq, csv
