"""The Dask executor: the same table as a local run, failures as rows, a dead worker's cell stored once.

One LocalCluster of two worker processes (loopback, no dashboard), started as ``--workers 2``
starts it, serves the module: the CLI joins it with ``--scheduler``; the other tests drive a
:class:`DaskExecutor` on it through ``execute``.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections import Counter
from dataclasses import replace

import pandas as pd
import pytest
from conftest import WIDE, cli_text, make_mini_dataset

from robustbench_wbc import paths
from robustbench_wbc.bench import ResultStore, run
from robustbench_wbc.bench.runner import ensure_trained, execute, plan
from robustbench_wbc.cli import app
from robustbench_wbc.data.real import unregister_dataset

pytest.importorskip("distributed")
from robustbench_wbc.bench import dask_executor  # noqa: E402
from robustbench_wbc.bench.dask_executor import DaskExecutor  # noqa: E402

MODELS = ["tiny_cls", "tiny_multitask"]
PER_RUN = ["run_id", "time_s", "finished_at"]  # the columns that differ between two runs of the same cells


@pytest.fixture(scope="module")
def cluster():
    """The LocalCluster of ``--workers 2``: two worker processes, one thread each, on 127.0.0.1."""
    ensure_trained(MODELS)
    with DaskExecutor(workers=2) as executor:
        assert executor.cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert len(executor.client.scheduler_info()["workers"]) == 2
        assert set(executor.client.run(lambda: os.environ["WBC_ROBUST_HOME"]).values()) == {str(paths.home())}
        yield executor.cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bad_executor_options(cli):
    result = cli.invoke(app, ["run", "--executor", "foo"], env=WIDE)
    assert result.exit_code == 2 and "local" in cli_text(result) and "dask" in cli_text(result)
    result = cli.invoke(app, ["run", "--executor", "dask", "--workers", "0"], env=WIDE)
    assert result.exit_code == 2 and "--workers" in cli_text(result)
    for args in (["--executor", "local", "--workers", "2"], ["--executor", "local", "--scheduler", "tcp://127.0.0.1:1"],
                 ["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"]):
        result = cli.invoke(app, ["run", *args], env=WIDE)
        assert result.exit_code == 2, args
        assert "--executor dask" in cli_text(result) or "not both" in cli_text(result), cli_text(result)


def test_unreachable_scheduler_names_the_address_and_the_fix(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(dask_executor, "CONNECT_TIMEOUT_S", 1)
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    result = cli.invoke(app, ["run", "--models", "tiny_cls", "--splits", "synth:test", "--attacks", "none",
                              "--scheduler", address, "--out", str(tmp_path)], env=WIDE)
    text = cli_text(result)
    assert result.exit_code == 2, text
    assert f"cannot reach the Dask scheduler at {address}" in text and "--workers N" in text
    assert not (tmp_path / "cells").exists()


def test_dask_table_equals_the_local_one_row_for_row(cli, cluster, tmp_path):
    matrix = ["--models", ",".join(MODELS), "--splits", "synth:test,synth:ood-lab-b", "--attacks", "fgsm,pgd",
              "--eps", "8/255", "--n-images", "16"]
    local = run(MODELS, ["synth:test", "synth:ood-lab-b"], ["fgsm", "pgd"], tmp_path / "local", eps=[8 / 255],
                n_images=16)
    result = cli.invoke(app, ["run", *matrix, "--scheduler", cluster.scheduler_address, "--out",
                              str(tmp_path / "dask")], env=WIDE)
    assert result.exit_code == 0, cli_text(result)
    a, b = ResultStore(tmp_path / "local").table(), ResultStore(tmp_path / "dask").table()
    assert local.ok == b["cell_id"].nunique() > 0 and (b["status"] == "ok").all()
    assert b["run_id"].nunique() == 1  # one run, whichever worker evaluated the cell
    pd.testing.assert_frame_equal(a.drop(columns=PER_RUN), b.drop(columns=PER_RUN), check_exact=False, rtol=1e-6)
    for cell_id in a.loc[a["attack"] == "pgd", "cell_id"].unique():
        pd.testing.assert_frame_equal(ResultStore(tmp_path / "local").samples(cell_id),
                                      ResultStore(tmp_path / "dask").samples(cell_id), check_exact=False, rtol=1e-6)


def test_workers_register_the_data_option_like_the_client(cli, cluster, tmp_path):
    """A --data dataset exists only where it was registered: the workers register it too (WorkerSetup)."""
    mini = make_mini_dataset(tmp_path / "mini")
    try:
        result = cli.invoke(app, ["run", "--splits", "mini:all", "--models", "tiny_cls", "--attacks", "fgsm", "--eps",
                                  "2/255", "--n-images", "6", "--data", f"mini={mini}", "--scheduler",
                                  cluster.scheduler_address, "--out", str(tmp_path / "out")], env=WIDE)
    finally:
        unregister_dataset("mini")
    assert result.exit_code == 0, cli_text(result)
    table = ResultStore(tmp_path / "out").table()
    assert set(table["split"]) == {"mini:all"} and set(table["status"]) == {"ok"} and table["cell_id"].nunique() == 2


def test_a_task_that_fails_on_the_worker_becomes_a_failed_row(cluster, tmp_path):
    """A worker with another checkpoint than the client's refuses the cell (after a retry); the rest run."""
    cards = ensure_trained(["tiny_cls"])
    cells = plan(["tiny_cls"], ["synth:test"], ["fgsm"], [2 / 255, 8 / 255], 8, 0, cards)
    stale = replace(cells[-1], model_sha256="0" * 64)  # as if the workers' cache held another training
    store = ResultStore(tmp_path)
    with DaskExecutor(scheduler=cluster.scheduler_address) as executor:
        summary = execute(store, [*cells[:-1], stale], executor)
    assert summary.ok == len(cells) - 1
    assert [r.cell.id for r in summary.failed] == [stale.id]
    assert "WBC_ROBUST_HOME" in summary.failed[0].reason and "checkpoint" in summary.failed[0].reason
    table = store.table()
    row = table[table["cell_id"] == stale.id]
    assert len(row) == 1 and row["status"].iloc[0] == "failed" and "checkpoint" in row["reason"].iloc[0]
    assert set(table.loc[table["cell_id"] != stale.id, "status"]) == {"ok"}
    assert table["run_id"].nunique() == 1


def test_cells_start_largest_first(cluster, tmp_path):
    """Every PGD cell (ten steps) starts on a worker before any FGSM cell (one step), and every FGSM cell before
    any clean cell, though ``execute`` lists each model's clean cell first: start times as the scheduler's task
    stream has them (the worker's whole task, loading the model included), so a worker slow to load its first
    model cannot hold a large cell while the other runs the small ones."""
    from distributed import get_task_stream

    cards = ensure_trained(["tiny_cls"])
    cells = plan(["tiny_cls"], ["synth:test", "synth:ood-lab-b"], ["fgsm", "pgd"], [2 / 255, 8 / 255], 16, 0, cards)
    with DaskExecutor(scheduler=cluster.scheduler_address) as executor, get_task_stream(executor.client) as stream:
        summary = execute(ResultStore(tmp_path), cells, executor)
    assert summary.ok == len(cells)
    attack = {c.id: c.attack for c in cells}
    started = pd.DataFrame([{"attack": attack[task["key"].split("-")[1]],
                             "start": min(s["start"] for s in task["startstops"] if s["action"] == "compute")}
                            for task in stream.data])
    assert sorted(started["attack"]) == sorted(attack.values())
    first, last = started.groupby("attack")["start"].min(), started.groupby("attack")["start"].max()
    order = started.sort_values("start").to_string()
    assert last["pgd"] <= first["fgsm"] and last["fgsm"] <= first["none"], order


def test_a_killed_worker_costs_no_cell_and_stores_none_twice(cluster, tmp_path):
    """SIGKILL one worker process when the first result arrives: its cell is retried elsewhere, every cell
    comes back exactly once, all ok."""
    cards = ensure_trained(["tiny_cls"])
    cells = plan(["tiny_cls"], ["synth:test", "synth:ood-lab-b"], ["pgd"], [k / 255 for k in range(1, 8)], 32, 0,
                 cards)
    seen: Counter = Counter()
    killed: list[int] = []
    in_flight: list[str] = []
    with DaskExecutor(scheduler=cluster.scheduler_address) as executor:
        def on_cell(result, i, total):
            seen[result.cell.id] += 1
            if not killed:
                busy = {w: keys for w, keys in executor.client.processing().items() if keys}
                worker = next(iter(busy))  # one that has a cell in flight: that cell must be retried elsewhere
                in_flight.extend(busy[worker])
                killed.append(executor.client.run(os.getpid, workers=[worker])[worker])
                os.kill(killed[0], signal.SIGKILL)

        summary = execute(ResultStore(tmp_path), cells, executor, on_cell)
    assert killed and in_flight
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the nanny reaps it; it must be gone, or the test proved nothing
        try:
            os.kill(killed[0], 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"worker process {killed[0]} survived SIGKILL")
    assert summary.ok == len(cells) and not summary.failed
    assert set(seen) == {c.id for c in cells} and set(seen.values()) == {1}
    table = ResultStore(tmp_path).table()
    assert table["cell_id"].nunique() == len(cells) and (table["status"] == "ok").all()
