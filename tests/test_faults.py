"""Faults: a killed run resumes to the same table; the same command twice gives the same table;
a model that breaks mid-run fails its cells, with the reason, and the run goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import cli_text
from torch import nn

import robustbench_wbc as rw
from robustbench_wbc.bench import ResultStore
from robustbench_wbc.bench.runner import run
from robustbench_wbc.report.reliability import unreliable

# what differs between two runs of the same command: the run's id, and when and how fast cells ran
TIME_COLUMNS = ["run_id", "time_s", "finished_at"]
MATRIX = ["--models", "tiny_cls,tiny_multitask", "--splits", "synth:test", "--attacks", "fgsm,pgd",
          "--eps", "1/255,2/255,4/255,8/255", "--n-images", "24"]


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    t = table.drop(columns=TIME_COLUMNS)
    return t.sort_values(["cell_id", "metric"]).reset_index(drop=True)


def wbc_robust(args: list[str], home: Path) -> subprocess.Popen:
    env = {**os.environ, "WBC_ROBUST_HOME": str(home), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    code = "import sys; from robustbench_wbc.cli import app; sys.exit(app())"
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_sigkill_mid_matrix_then_resume_gives_the_uninterrupted_table(tmp_path, wbc_home, tiny_cards):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    p = wbc_robust(["run", *MATRIX, "--out", str(whole)], wbc_home)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out
    planned = len(ResultStore(whole).table()["cell_id"].unique())

    p = wbc_robust(["run", *MATRIX, "--out", str(killed)], wbc_home)
    cells = killed / "cells"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and p.poll() is None:  # kill once a few cells are in
        if cells.exists() and len(list(cells.glob("*.parquet"))) >= 3:
            break
        time.sleep(0.05)
    assert p.poll() is None, "the run finished before it could be killed: make the matrix larger"
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    p.stdout.close()
    done = len(list(cells.glob("*.parquet")))
    assert 3 <= done < planned
    assert ResultStore(killed).table()["cell_id"].nunique() == done  # what was committed reads back whole

    p = wbc_robust(["run", *MATRIX, "--out", str(killed)], wbc_home)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out
    assert f"{planned} cells: {done} already done, {planned - done} run" in " ".join(out.split())
    resumed = ResultStore(killed).table()
    assert resumed.groupby(["cell_id", "metric"]).size().max() == 1  # no duplicated rows
    assert not list(killed.rglob("*.tmp"))  # no half-written file left behind
    pd.testing.assert_frame_equal(comparable(resumed), comparable(ResultStore(whole).table()))


def test_same_command_twice_gives_identical_tables(tmp_path, tiny_cards):
    args = dict(models=["tiny_cls", "tiny_unet", "tiny_multitask"], splits=["synth:test", "synth:ood-lab-b"],
                attacks=["fgsm", "pgd", "pgd-l2"], eps=None, n_images=16)
    tables = []
    for name in ("a", "b"):
        run(out=tmp_path / name, **args)
        tables.append(ResultStore(tmp_path / name).table())
    a, b = tables
    assert set(a["run_id"]) != set(b["run_id"])  # two runs …
    pd.testing.assert_frame_equal(comparable(a), comparable(b))  # … one table
    for name in ("a", "b"):  # and the per-sample outcomes too
        assert sorted(p.name for p in (tmp_path / name / "samples").iterdir())
    for cell in a["cell_id"].unique():
        pa, pb = (tmp_path / n / "samples" / f"{cell}.parquet" for n in ("a", "b"))
        if pa.exists():
            pd.testing.assert_frame_equal(pd.read_parquet(pa), pd.read_parquet(pb))


class BreaksAfter(nn.Module):
    """A classifier that behaves for its first ``calls`` forward passes, then returns ``broken(x)``."""

    def __init__(self, calls: int, broken) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(8, 5))
        self.calls, self.broken, self.seen = calls, broken, 0

    def forward(self, x):
        self.seen += 1
        z = self.net(x)
        return z if self.seen <= self.calls else self.broken(z)


SMALL = dict(splits=["synth:test"], attacks=["fgsm", "pgd"], eps=[2 / 255, 8 / 255], n_images=16, image_size=32)


@pytest.mark.parametrize(("broken", "reason"), [
    (lambda z: z * float("nan"), "non-finite"),
    (lambda z: z[:, :4], "shape|out of bounds"),
])
def test_a_model_that_breaks_mid_run_fails_its_cells_with_the_reason_and_the_run_goes_on(broken, reason):
    # the probe and the clean cell (with its checks) pass; the attacks then meet the broken model
    table = rw.benchmark(BreaksAfter(6, broken), name="breaks", **SMALL)
    status = table.drop_duplicates("cell_id").set_index("cell_id")
    assert (status["status"] == "ok").sum() >= 1  # the clean cell
    failed = status[status["status"] == "failed"]
    assert len(failed) == len(status) - 1  # every later cell ran, and failed on its own
    assert failed["reason"].str.contains(reason).all()
    assert table.loc[table["status"] == "failed", "value"].isna().all()  # no number for a failed cell


def test_probability_outputs_are_flagged_not_trusted():
    table = rw.benchmark(BreaksAfter(0, lambda z: z.softmax(1)), name="probs", **SMALL)
    assert set(table["status"]) == {"ok"}
    flags = unreliable(table).set_index("model")
    assert flags.loc["probs", "unreliable"] and "probabilities" in flags.loc["probs", "unreliable_reason"]


def test_a_full_disk_stops_the_run_with_a_clear_error_and_the_store_stays_readable(cli, tmp_path, monkeypatch,
                                                                                       tiny_cards):
    import errno

    import robustbench_wbc.bench.store as store_module
    from robustbench_wbc.cli import app

    real, calls = store_module.stage_parquet, []

    def disk_fills_up(df, path):
        calls.append(path)
        if len(calls) > 4:  # two cells (rows and samples each) fit, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(df, path)

    monkeypatch.setattr(store_module, "stage_parquet", disk_fills_up)
    out = tmp_path / "out"
    args = ["run", *MATRIX, "--out", str(out)]
    result = cli.invoke(app, args)
    text = " ".join(cli_text(result).split())
    assert result.exit_code == 1, text
    assert "No space left on device" in text and "run the same command again" in text
    stored = ResultStore(out).table()  # readable, and holds exactly the cells committed before the failure
    assert stored["cell_id"].nunique() == 2 and stored.groupby(["cell_id", "metric"]).size().max() == 1
    assert not list(out.rglob("*.tmp"))
    monkeypatch.setattr(store_module, "stage_parquet", real)  # space freed: the same command resumes
    again = cli.invoke(app, args)
    assert again.exit_code == 0 and "2 already done" in " ".join(cli_text(again).split())
