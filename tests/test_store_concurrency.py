"""The result store with several writers at once: separate processes putting cells and exporting into one --out."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

from robustbench_wbc.atomic import _HOST
from robustbench_wbc.bench.store import ResultStore

WRITERS, CELLS_EACH, OVERLAP = 4, 50, 10  # writer w puts cells [w*40, w*40 + 50): 10 shared with the next writer


def cell_ids(writer: int) -> list[str]:
    start = writer * (CELLS_EACH - OVERLAP)
    return [f"cell{i:04d}" for i in range(start, start + CELLS_EACH)]


def rows_of(cell_id: str, writer: int, status: str = "ok") -> pd.DataFrame:
    """A cell's rows as the runner makes them, in miniature: one row per metric, the writer named."""
    metrics = ["accuracy", "robust_accuracy", "mean_perturbation_linf"]
    return pd.DataFrame({"cell_id": cell_id, "model": "m", "split": "s", "attack": "pgd", "target": "cls", "eps": 0.03,
                         "seed": 0, "metric": metrics, "value": np.linspace(0, 1, len(metrics)), "status": status,
                         "reason": "", "writer": writer})


def samples_of(cell_id: str, writer: int) -> pd.DataFrame:
    return pd.DataFrame({"index": np.arange(16), "robust": np.arange(16) % 2 == 0, "writer": writer})


def write_cells(root: str, writer: int, barrier) -> None:
    """One writer process: puts its cells, exporting every tenth, then once at the end (as execute does)."""
    store = ResultStore(root)
    barrier.wait()  # start together, so the writes interleave
    for i, cell_id in enumerate(cell_ids(writer)):
        store.put(cell_id, rows_of(cell_id, writer), samples_of(cell_id, writer))
        if i % 10 == 9:
            store.export()
    store.export()


def test_concurrent_writers_store_each_cell_once(tmp_path):
    ctx = mp.get_context("forkserver")  # separate processes, as separate runs would be; the store imported once
    ctx.set_forkserver_preload(["robustbench_wbc.bench.store"])
    barrier = ctx.Barrier(WRITERS)
    procs = [ctx.Process(target=write_cells, args=(str(tmp_path), w, barrier)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * WRITERS

    expected = sorted(set().union(*(cell_ids(w) for w in range(WRITERS))))
    assert len(expected) == WRITERS * CELLS_EACH - (WRITERS - 1) * OVERLAP
    store = ResultStore(tmp_path)
    table = store.table()
    # nothing lost, nothing twice: three rows per cell, every cell once
    assert sorted(table["cell_id"].unique()) == expected
    assert table.groupby("cell_id").size().eq(3).all()
    # each cell whole from one writer, and its samples from that same writer (the renames are paired)
    per_cell = table.groupby("cell_id")["writer"].nunique()
    assert per_cell.eq(1).all()
    for cell_id in expected:
        assert set(store.samples(cell_id)["writer"]) == {table.loc[table["cell_id"] == cell_id, "writer"].iloc[0]}
    # the exported table, written last by whichever writer finished last, holds every cell
    exported = pd.read_parquet(tmp_path / "results.parquet")
    assert sorted(exported["cell_id"].unique()) == expected and len(exported) == len(table)
    assert len(pd.read_csv(tmp_path / "results.csv")) == len(table)
    # no temporary file left behind anywhere in the store
    leftovers = [os.path.join(d, f) for d, _, files in os.walk(tmp_path) for f in files if f.endswith(".tmp")]
    assert leftovers == []


def test_an_export_is_never_replaced_by_an_older_one(tmp_path, monkeypatch):
    """Export A reads the table; a cell is committed; export B runs; then A writes. B's table must win."""
    store = ResultStore(tmp_path)
    store.put("c0", rows_of("c0", 0))
    has_read, go_on = threading.Event(), threading.Event()
    read_table = ResultStore.table
    calls = []

    def table_then_wait(self):
        df = read_table(self)
        calls.append(len(df))
        if len(calls) == 1:  # export A: hold on after reading, before writing
            has_read.set()
            assert go_on.wait(30)
        return df

    monkeypatch.setattr(ResultStore, "table", table_then_wait)
    export_a = threading.Thread(target=store.export)
    export_a.start()
    assert has_read.wait(30)
    store.put("c1", rows_of("c1", 1))
    export_b = threading.Thread(target=ResultStore(tmp_path).export)
    export_b.start()
    export_b.join(timeout=1.0)  # without the export lock B finishes here, and A would then overwrite it
    go_on.set()
    export_a.join(timeout=30)
    export_b.join(timeout=30)
    assert not export_a.is_alive() and not export_b.is_alive()
    assert set(pd.read_parquet(tmp_path / "results.parquet")["cell_id"]) == {"c0", "c1"}
    assert set(pd.read_csv(tmp_path / "results.csv")["cell_id"]) == {"c0", "c1"}


def test_a_failure_never_replaces_an_ok_cell(tmp_path):
    store = ResultStore(tmp_path)
    assert store.put("c1", rows_of("c1", 0), samples_of("c1", 0))
    assert not store.put("c1", rows_of("c1", 1, status="failed"))
    assert store.is_done("c1") and set(store.table()["writer"]) == {0}
    # an ok result does replace a failure (a retried cell), and a failure replaces a failure
    assert store.put("c2", rows_of("c2", 0, status="failed"))
    assert store.put("c2", rows_of("c2", 1, status="invalid"))
    assert store.status("c2") == "invalid"
    assert store.put("c2", rows_of("c2", 2), samples_of("c2", 2))
    assert store.status("c2") == "ok" and set(store.samples("c2")["writer"]) == {2}


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    store = ResultStore(tmp_path)

    class Unwritable(pd.DataFrame):
        def to_parquet(self, *args, **kwargs):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.put("c1", rows_of("c1", 0), Unwritable(samples_of("c1", 0)))
    with pytest.raises(OSError, match="disk full"):
        store.put("c1", Unwritable(rows_of("c1", 0)), samples_of("c1", 0))
    assert store.status("c1") is None
    assert [p for p in tmp_path.rglob("*") if p.is_file() and p.name.endswith(".tmp")] == []


def test_table_reads_cells_written_before_columns_were_added(tmp_path):
    """An older cell file (fewer columns) stacks with newer ones; its missing numbers read as unknown."""
    store = ResultStore(tmp_path)
    new = rows_of("new", 0).assign(forward_passes=7, v_art="1.20")
    store.put("new", new)
    store.put("old", rows_of("old", 0))
    table = store.table()
    assert len(table) == 6
    old, fresh = table[table["cell_id"] == "old"], table[table["cell_id"] == "new"]
    assert old["forward_passes"].isna().all() and (fresh["forward_passes"] == 7).all()
    assert (fresh["v_art"] == "1.20").all()


def test_table_reads_a_column_whose_type_changed(tmp_path):
    """Cells whose column types disagree (a writer of another version) still stack, through pandas."""
    store = ResultStore(tmp_path)
    store.put("a", rows_of("a", 0).assign(extra=1))
    store.put("b", rows_of("b", 0).assign(extra="one"))
    table = store.table()
    assert len(table) == 6 and set(table["extra"]) == {1, "one"}


def test_export_clears_what_killed_writers_left_but_not_live_ones(tmp_path):
    """A writer SIGKILLed mid-write leaves its temporary file; the next export removes it, and only it."""
    store = ResultStore(tmp_path)
    store.put("c1", rows_of("c1", 0))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    cells = tmp_path / "cells"
    dead = cells / f".c2.parquet.{_HOST}-{gone.pid}.abc123.tmp"  # a writer of this host that is gone
    live = cells / f".c3.parquet.{_HOST}-{os.getpid()}.abc123.tmp"  # this process, mid-write
    elsewhere = cells / f".c4.parquet.0000beef-{gone.pid}.abc123.tmp"  # another host's: its pids mean nothing here
    old = tmp_path / "samples" / ".c5.parquet.x1y2.tmp"  # unknown origin, two hours old
    old.parent.mkdir()
    for path in (dead, live, elsewhere, old):
        path.write_bytes(b"half a file")
    os.utime(old, (time.time() - 7200,) * 2)
    store.export()
    assert not dead.exists() and not old.exists()
    assert live.exists() and elsewhere.exists()
    assert sorted(store.table()["cell_id"].unique()) == ["c1"]
