"""The same matrix run locally and on a Dask LocalCluster: wall times, their ratio, and the tables compared. Not a test.

    .venv/bin/python benchmarks/bench_dask.py                     # tiny_cls, tiny_multitask; 2 workers
    .venv/bin/python benchmarks/bench_dask.py --workers 4 --n-images 128

Plans one small real matrix (``--models`` × ``--splits`` × FGSM and PGD at ``--eps``), trains
what is missing (not timed), then runs it twice into fresh stores:

(a) ``--executor local``: in this process, torch at its default threads (all cores) or ``--threads``;
(b) ``--executor dask --workers N``: a LocalCluster of N worker processes on 127.0.0.1, one
    thread each, torch threads cores // N; the cluster's start is timed apart from the run.

Prints a markdown table: the wall time of each, the ratio local / dask (above 1: Dask is faster),
and whether the two tables are the same row for row once the per-run columns (``run_id``,
``time_s``, ``finished_at``) are dropped (if not, which values differ and by how much: torch at
another thread count sums in another order, so ``--threads`` equal to the workers' gives
identical tables). On a machine with few cores the workers' start and
the per-process model copies can cost more than they save; the ratio grows with the cells' size.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import distributed
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import robustbench_wbc
from robustbench_wbc.attacks import parse_eps
from robustbench_wbc.bench.dask_executor import DaskExecutor
from robustbench_wbc.bench.runner import LocalExecutor, ensure_trained, execute, git_sha, plan
from robustbench_wbc.bench.store import ResultStore

PER_RUN = ["run_id", "time_s", "finished_at"]



def compare(a: pd.DataFrame, b: pd.DataFrame) -> str:
    """Says whether two tables agree row for row without the per-run columns: identical, close, or how not."""
    a, b = a.drop(columns=PER_RUN), b.drop(columns=PER_RUN)
    if a.shape != b.shape or list(a.columns) != list(b.columns):
        return f"different shapes {a.shape} vs {b.shape}"
    try:
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        return "identical"
    except AssertionError:
        pass
    others = [c for c in a.columns if c not in ("value", "ci_low", "ci_high")]
    if not a[others].equals(b[others]):
        bad = [c for c in others if not a[c].equals(b[c])]
        return f"different coordinates or counts in {', '.join(bad)}"
    va, vb = a["value"].to_numpy(float), b["value"].to_numpy(float)
    differ = ~((va == vb) | (np.isnan(va) & np.isnan(vb)))
    worst = a.loc[differ].assign(other=vb[differ], diff=np.abs(va - vb)[differ]).sort_values("diff").iloc[-1]
    return (f"same rows; {differ.sum()} of {len(a)} values differ, the largest by {worst['diff']:.3g} "
            f"({worst['metric']}, {worst['model']} {worst['split']} {worst['attack']} eps={worst['eps']:.4g}: "
            f"{worst['value']:.6g} vs {worst['other']:.6g})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="tiny_cls,tiny_multitask")
    p.add_argument("--splits", default="synth:test,synth:ood-lab-b")
    p.add_argument("--attacks", default="fgsm,pgd")
    p.add_argument("--eps", default="2/255,8/255")
    p.add_argument("--n-images", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads of the local run (default: torch's, all cores); the workers' count "
                        "(cores // workers) makes the two runs do the same arithmetic")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    models, splits, attacks = a.models.split(","), a.splits.split(","), a.attacks.split(",")

    cards = ensure_trained(models)
    cells = plan(models, splits, attacks, parse_eps(a.eps), a.n_images, 0, cards)
    root = Path(tempfile.mkdtemp(prefix="wbc-bench-dask-"))
    try:
        t0 = time.perf_counter()
        local = execute(ResultStore(root / "local"), cells, LocalExecutor())
        t_local = time.perf_counter() - t0

        t0 = time.perf_counter()
        with DaskExecutor(workers=a.workers) as executor:
            t_start = time.perf_counter() - t0
            t0 = time.perf_counter()
            remote = execute(ResultStore(root / "dask"), cells, executor)
            t_dask = time.perf_counter() - t0
        verdict = compare(ResultStore(root / "local").table(), ResultStore(root / "dask").table())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert local.ok == remote.ok == len(cells), (local.ok, remote.ok, len(cells))

    print(f"## Local vs Dask LocalCluster ({a.workers} workers), {len(cells)} cells\n")
    print(f"- {datetime.date.today().isoformat()}, {os.cpu_count()} cores of {_common.cpu_model()}, "
          f"{platform.system()} {platform.release()}, Python {platform.python_version()}")
    print(f"- robustbench_wbc {robustbench_wbc.__version__} ({git_sha() or 'no git'}), torch {torch.__version__}, "
          f"dask/distributed {distributed.__version__}; local torch threads {torch.get_num_threads()}, "
          f"workers {max(1, (os.cpu_count() or 1) // a.workers)} each")
    print(f"- models {', '.join(models)}; splits {', '.join(splits)}; attacks {', '.join(attacks)} at eps {a.eps}; "
          f"{a.n_images} images per cell\n")
    print("| run | wall time (s) |")
    print("|---|---:|")
    print(f"| local (in process) | {t_local:.1f} |")
    print(f"| dask: cluster start | {t_start:.1f} |")
    print(f"| dask: the run | {t_dask:.1f} |")
    print(f"| dask: start + run | {t_start + t_dask:.1f} |\n")
    print(f"Local / dask (run only): **{t_local / t_dask:.2f}**; with the start: {t_local / (t_start + t_dask):.2f}. "
          f"Tables without {', '.join(PER_RUN)}: **{verdict}**.")


if __name__ == "__main__":
    main()
