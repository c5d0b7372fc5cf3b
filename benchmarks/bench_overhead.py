"""The runner's bookkeeping cost per cell on a large matrix of trivial cells: overhead and peak memory. Not a test.

    .venv/bin/python benchmarks/bench_overhead.py                 # 10,000 cells of tiny_cls
    .venv/bin/python benchmarks/bench_overhead.py --cells 500     # a quick run

Plans a matrix of ``--cells`` cells (one clean cell, then FGSM at ``--cells − 1`` distinct budgets
on ``--n-images`` images of ``synth:test``; a cell of the tiny model takes milliseconds), runs it
with the local executor into a fresh store (``execute``: skip what is done, evaluate, commit each
cell, export the table), and reports:

* the bookkeeping overhead per cell: the run's wall time minus the cells' own ``time_s`` (what
  ``evaluate_cell`` measured around its work), divided by the cells. It holds what the runner and
  the store add: the done-check, building the rows, writing two Parquet files per cell atomically
  (fsync included) and the final export of the whole table;
* the second run over the same store, where every cell is done: the resumption cost per cell;
* peak resident memory of the process (``ru_maxrss``), and what it was before the run (after
  importing torch and the package, and loading the model), so the run's own share shows: the
  imports alone are most of it (torch some 500 MB).

The issue's goals: at most 20 ms per cell of overhead, and no memory growth past 500 MB: the run's own
share (peak after less peak before), since importing torch alone makes some 500 MB resident. The model is trained in
$WBC_ROBUST_HOME on first use (tiny_cls: seconds). ``--threads 1`` (the default) keeps OpenMP
threads from fighting another process for the cores.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import robustbench_wbc
from robustbench_wbc.bench.runner import LocalExecutor, ensure_trained, execute, git_sha, plan
from robustbench_wbc.bench.store import ResultStore


def peak_rss_mb() -> float:
    """The process's peak resident set so far, in MB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=10_000, help="cells in the matrix (default 10000)")
    p.add_argument("--model", default="tiny_cls", help="a classifier or multitask model id (default tiny_cls)")
    p.add_argument("--n-images", type=int, default=2, help="images per cell (default 2: the cells stay trivial)")
    p.add_argument("--out", type=Path, default=None, help="the store (default: a temporary directory, removed after)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    a = p.parse_args()
    if a.cells < 2:
        p.error("--cells must be at least 2")
    if a.threads:
        torch.set_num_threads(a.threads)

    cards = ensure_trained([a.model])
    # distinct budgets in (0, 16/255]: every cell has its own id
    eps = [16 / 255 * (i + 1) / (a.cells - 1) for i in range(a.cells - 1)]
    cells = plan([a.model], ["synth:test"], ["fgsm"], eps, a.n_images, 0, cards)
    assert len(cells) == a.cells and len({c.id for c in cells}) == a.cells, len(cells)

    out = a.out or Path(tempfile.mkdtemp(prefix="wbc-overhead-"))
    try:
        executor = LocalExecutor()
        executor.ctx.model(a.model)  # load the model and the split before the clock starts
        executor.ctx.split("synth:test", a.n_images, cards[a.model].image_size)
        rss_before = peak_rss_mb()
        store = ResultStore(out)
        t0 = time.perf_counter()
        summary = execute(store, cells, executor)
        wall = time.perf_counter() - t0
        rss_after = peak_rss_mb()
        t0 = time.perf_counter()
        again = execute(store, cells, executor)
        wall_again = time.perf_counter() - t0
        table = store.table()
    finally:
        if a.out is None:
            shutil.rmtree(out, ignore_errors=True)

    assert summary.ok == a.cells and not summary.failed, (summary.ok, len(summary.failed))
    assert again.skipped == a.cells, again.skipped
    assert table["cell_id"].nunique() == a.cells
    cell_time = table.drop_duplicates("cell_id")["time_s"].sum()
    overhead_ms = (wall - cell_time) / a.cells * 1e3
    print(f"## Runner bookkeeping overhead, {a.cells} cells\n")
    print(f"- {datetime.date.today().isoformat()}, {os.cpu_count()} cores of {_common.cpu_model()}, "
          f"{platform.system()} {platform.release()}, Python {platform.python_version()}")
    print(f"- robustbench_wbc {robustbench_wbc.__version__} ({git_sha() or 'no git'}), torch {torch.__version__}, "
          f"pandas {pd.__version__}, pyarrow {pyarrow.__version__}; torch threads {torch.get_num_threads()}")
    print(f"- model {a.model}, split synth:test, {a.n_images} images per cell; one clean cell and "
          f"{a.cells - 1} FGSM cells; {len(table)} rows\n")
    print("| measure | value | goal |")
    print("|---|---:|---:|")
    print(f"| wall time of the run (s) | {wall:.1f} | |")
    print(f"| the cells' own time, sum of `time_s` (s) | {cell_time:.1f} | |")
    print(f"| **overhead per cell (ms)** | **{overhead_ms:.2f}** | ≤ 20 |")
    print(f"| second run, every cell done: per cell (ms) | {wall_again / a.cells * 1e3:.2f} | |")
    print(f"| peak RSS before the run (MB) | {rss_before:.0f} | |")
    print(f"| peak RSS after the run (MB) | {rss_after:.0f} | |")
    print(f"| **the run's own share of it: growth (MB)** | **{rss_after - rss_before:.0f}** | ≤ 500 |")


if __name__ == "__main__":
    main()
