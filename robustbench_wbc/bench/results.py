"""Results as the report reads them: a run's store, or a published tidy table, alike.

A run writes a store (``--out``: one file per cell under ``cells/``, per-sample outcomes under
``samples/``). What is published (``results/reference/``, a table sent to a colleague) is the
tidy table itself, ``results.parquet`` (or ``.csv``), with every cell's per-sample outcomes in one
``samples.parquet`` beside it (:func:`publish` writes both). :func:`open_results` gives either as
an object with ``root``, ``table()`` and ``samples(cell_id)``, so every report — the leaderboard,
its ensemble column and paired ranks, the per-class tables, the HTML report — reads both alike.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from robustbench_wbc.atomic import atomic_write_parquet
from robustbench_wbc.bench.store import CELLS, ResultStore

TABLE, SAMPLES_FILE = "results.parquet", "samples.parquet"
# the per-sample outcomes a published table keeps: what the reports read (the ensemble, paired ranks, the
# per-class tables, the claims); the IoUs and perturbation norms stay in the run's store (their means are
# in the table). Scores are kept as float32: their means agree with the table's to ~1e-7.
PUBLISHED_SAMPLES = ("index", "label", "clean_pred", "adv_pred", "robust", "clean_nucleus_dice",
                     "clean_cytoplasm_dice", "adv_nucleus_dice", "adv_cytoplasm_dice")
PROVENANCE = "provenance.json"  # beside a published table: when, where, from which commits, by which command
RUNS_LOG = "runs.jsonl"  # in a run's store: one line per `wbc-robust run` into it (the command, when, the commit)


class ResultsError(ValueError):
    """A path that holds no results, or a table that cannot be read as one."""


class TableResults:
    """A published tidy table (``results.parquet`` or ``.csv``) and the ``samples.parquet`` beside it.

    Args:
        path: the table file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.root = self.path.parent
        self._samples: dict[str, pd.DataFrame] | None = None

    def table(self) -> pd.DataFrame:
        """Gives the tidy table, as :meth:`ResultStore.table` would."""
        try:
            if self.path.suffix == ".csv":
                df = pd.read_csv(self.path, keep_default_na=True)
                if "finished_at" in df:
                    df["finished_at"] = pd.to_datetime(df["finished_at"], utc=True, errors="coerce")
                if "params" in df:
                    df["params"] = df["params"].fillna("")
            else:
                df = pd.read_parquet(self.path)
        except (OSError, ValueError) as exc:
            raise ResultsError(f"cannot read the results table {self.path}: {exc}. Give a results.parquet or "
                               f"results.csv written by `wbc-robust run`, or the run's --out directory") from None
        missing = {"model", "split", "attack", "metric", "value", "status", "cell_id"} - set(df.columns)
        if missing:
            raise ResultsError(f"{self.path} is not a tidy results table: it lacks the columns {sorted(missing)}")
        return df

    def samples(self, cell_id: str) -> pd.DataFrame:
        """Gives one cell's per-sample outcomes, from ``samples.parquet`` beside the table.

        Raises :class:`FileNotFoundError` when there is no such file, :class:`KeyError` when it lacks the cell.
        """
        if self._samples is None:
            path = self.root / SAMPLES_FILE
            if not path.is_file():
                raise FileNotFoundError(f"no per-sample outcomes beside {self.path} ({path} is missing)")
            every = pd.read_parquet(path)
            self._samples = {c: g.drop(columns="cell_id").dropna(axis=1, how="all").reset_index(drop=True)
                             for c, g in every.groupby("cell_id", sort=False)}
        if cell_id not in self._samples:
            raise KeyError(f"cell {cell_id} has no per-sample outcomes in {self.root / SAMPLES_FILE}")
        return self._samples[cell_id]


def open_results(path: str | Path) -> ResultStore | TableResults:
    """Opens what ``path`` holds: a run's store (a directory with ``cells/``), a directory with a published
    ``results.parquet`` (or ``results.csv``), or such a table file itself.

    Raises:
        ResultsError: ``path`` holds none of these; the message names what was looked for.
    """
    p = Path(path)
    if p.is_dir():
        if any((p / CELLS).glob("*.parquet")):
            return ResultStore(p)
        for name in (TABLE, "results.csv"):
            if (p / name).is_file():
                return TableResults(p / name)
        raise ResultsError(f"no results in {p}: it has no cells/ (a run's --out) and no {TABLE} or results.csv. "
                           f"Run `wbc-robust run --out {p}` first")
    if p.is_file() and p.suffix in (".parquet", ".csv"):
        return TableResults(p)
    raise ResultsError(f"no results at {p}: give a run's --out directory, a directory with {TABLE}, or a "
                       f"results .parquet / .csv file")


def publish(store: ResultStore, dest: str | Path) -> tuple[Path, Path]:
    """Writes the store's tidy table and every ``ok`` cell's per-sample outcomes (:data:`PUBLISHED_SAMPLES`)
    into ``dest`` (``results.parquet``, ``samples.parquet``, each atomically); gives their paths.
    :func:`open_results` reads them back."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    table = store.table()
    parts, missing = [], []
    for cell_id in sorted(table.loc[table["status"] == "ok", "cell_id"].unique()):
        try:
            s = store.samples(cell_id)
        except FileNotFoundError:
            missing.append(cell_id)
            continue
        s = s[[c for c in PUBLISHED_SAMPLES if c in s]]
        scores = [c for c in s.columns if c.endswith("_dice")]
        parts.append(s.astype(dict.fromkeys(scores, "float32")).assign(cell_id=cell_id))
    if missing:  # a published table is complete: its ranks and ensemble columns need every cell's outcomes
        raise ResultsError(f"{len(missing)} ok cells of {store.root} have no per-sample outcomes (e.g. {missing[0]}: "
                           f"{store.root / 'samples' / (missing[0] + '.parquet')} is missing); run the same command "
                           f"again into a fresh --out before publishing")
    samples = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"cell_id": pd.Series(dtype=str)})
    atomic_write_parquet(table, dest / TABLE)
    atomic_write_parquet(samples, dest / SAMPLES_FILE)
    return dest / TABLE, dest / SAMPLES_FILE
