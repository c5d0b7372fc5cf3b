"""Published results read back as a store does: `publish`, then `leaderboard` and `report` on the table alone."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from conftest import WIDE, cli_text

from robustbench_wbc.bench import provenance
from robustbench_wbc.bench.results import TableResults, open_results
from robustbench_wbc.bench.store import CELLS, ResultStore
from robustbench_wbc.cli import app

CLEAN_SHA = "0123456789ab"


def _md(text: str) -> dict[str, dict[str, str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return {row[1]: dict(zip(head, row)) for row in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}


@pytest.fixture(scope="module")
def store_copy(bench_run, tmp_path_factory):
    """The bench run's store, its cells marked as computed at a clean commit (the suite's own checkout may be dirty)."""
    src, _ = bench_run
    out = tmp_path_factory.mktemp("published_src") / "run"
    shutil.copytree(src, out)
    for f in (out / CELLS).glob("*.parquet"):
        pd.read_parquet(f).assign(git_sha=CLEAN_SHA).to_parquet(f)
    (out / "runs.jsonl").write_text(json.dumps({"command": "wbc-robust run --models tiny_cls", "started": "x",
                                                "git_sha": CLEAN_SHA, "version": "0"}) + "\n")
    return out


@pytest.fixture(scope="module")
def published(store_copy, tmp_path_factory):
    from typer.testing import CliRunner

    dest = tmp_path_factory.mktemp("published") / "reference"
    result = CliRunner().invoke(app, ["publish", "--out", str(store_copy), "--to", str(dest)])
    assert result.exit_code == 0, cli_text(result)
    return dest


def test_publish_writes_the_table_the_samples_and_where_they_come_from(published, store_copy):
    assert {p.name for p in published.iterdir()} == {"results.parquet", "samples.parquet", "provenance.json"}
    p = json.loads((published / "provenance.json").read_text())
    table = ResultStore(store_copy).table()
    assert p["commits"] == [CLEAN_SHA] and p["cells"] == table["cell_id"].nunique()
    assert p["cells_per_commit"] == {CLEAN_SHA: table["cell_id"].nunique()}
    assert p["command"] == "wbc-robust run --models tiny_cls" and "cores of" in p["machine"]
    back = open_results(published)
    assert isinstance(back, TableResults)
    pd.testing.assert_frame_equal(back.table(), table)
    from robustbench_wbc.bench.results import PUBLISHED_SAMPLES

    for some in table["cell_id"].unique():  # what the reports read, each cell's own columns only
        mine = ResultStore(store_copy).samples(some)
        kept = [c for c in PUBLISHED_SAMPLES if c in mine]
        pd.testing.assert_frame_equal(back.samples(some), mine[kept], check_dtype=False, atol=1e-6)


def test_leaderboard_and_report_read_a_published_table_as_they_read_the_store(cli, published, store_copy, tmp_path):
    from_store = cli.invoke(app, ["leaderboard", "--out", str(store_copy)], env=WIDE)
    for where in (published, published / "results.parquet"):
        board = cli.invoke(app, ["leaderboard", "--out", str(where)], env=WIDE)
        assert board.exit_code == 0, cli_text(board)
        assert board.stdout == from_store.stdout  # paired ranks included: samples.parquet travels with the table
    assert "compared paired on the same cells" in from_store.stdout
    report = cli.invoke(app, ["report", "--results", str(published), "--out", str(tmp_path / "r.html")])
    assert report.exit_code == 0, cli_text(report)
    assert "tiny_multitask" in (tmp_path / "r.html").read_text()
    # a CSV alone: the same numbers, ranked by intervals (no per-sample outcomes beside it), and it says so
    csv = tmp_path / "alone" / "results.csv"
    csv.parent.mkdir()
    ResultStore(store_copy).table().to_csv(csv, index=False)
    board = cli.invoke(app, ["leaderboard", "--out", str(csv)], env=WIDE)
    assert board.exit_code == 0, cli_text(board)
    assert "wholly above" in board.stdout
    assert "no ensemble column: the per-sample outcomes could not be read" in board.stdout.lower()
    assert _md(board.stdout)["tiny_cls"]["clean acc ID %"] == _md(from_store.stdout)["tiny_cls"]["clean acc ID %"]


def test_what_holds_no_results_or_a_broken_table_is_refused(cli, tmp_path):
    empty = cli.invoke(app, ["leaderboard", "--out", str(tmp_path)])
    assert empty.exit_code == 1 and "no results in" in cli_text(empty)
    broken = tmp_path / "results.parquet"
    broken.write_bytes(b"not a parquet file")
    bad = cli.invoke(app, ["leaderboard", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "cannot read the results table" in cli_text(bad) and "results.parquet" in cli_text(bad)
    other = tmp_path / "x.csv"
    other.write_text("a,b\n1,2\n")
    bad = cli.invoke(app, ["report", "--results", str(other)])
    assert bad.exit_code == 2 and "not a tidy results table" in cli_text(bad)


def test_publish_refuses_cells_of_uncommitted_code(cli, store_copy, tmp_path):
    dirty = tmp_path / "dirty"
    shutil.copytree(store_copy, dirty)
    one = next((dirty / CELLS).glob("*.parquet"))
    pd.read_parquet(one).assign(git_sha=f"{CLEAN_SHA}-dirty").to_parquet(one)
    result = cli.invoke(app, ["publish", "--out", str(dirty), "--to", str(tmp_path / "pub")])
    assert result.exit_code == 1 and "uncommitted changes" in cli_text(result)
    assert not (tmp_path / "pub").exists()  # nothing half-written


def test_publish_refuses_a_store_whose_per_sample_outcomes_are_missing(cli, store_copy, tmp_path):
    gap = tmp_path / "gap"
    shutil.copytree(store_copy, gap)
    next((gap / "samples").glob("*.parquet")).unlink()
    result = cli.invoke(app, ["publish", "--out", str(gap), "--to", str(tmp_path / "pub")])
    assert result.exit_code == 1 and "have no per-sample outcomes" in cli_text(result)
    assert not (tmp_path / "pub" / "results.parquet").exists()


def test_run_records_its_command_and_says_how_many_stale_cells_it_recomputed(cli, tiny_cards, tmp_path, monkeypatch):
    out = tmp_path / "run"
    args = ["run", "--models", "tiny_cls", "--splits", "synth:test", "--attacks", "fgsm", "--eps", "8/255",
            "--n-images", "8", "--out", str(out)]
    first = cli.invoke(app, args, env=WIDE)
    assert first.exit_code == 0, cli_text(first)
    log = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert log[0]["command"] == ("wbc-robust run --models tiny_cls --attacks fgsm --splits synth:test --eps 8/255 "
                                 f"--n-images 8 --out {out}")
    monkeypatch.setitem(provenance.VERSIONS, "engine", provenance.VERSIONS["engine"] + 1)
    again = cli.invoke(app, args, env=WIDE)
    assert again.exit_code == 0, cli_text(again)
    engine = provenance.VERSIONS["engine"]
    assert f"recomputed 1 cells computed by other code (engine {engine - 1}→{engine}: 1)" in cli_text(again)
    assert len((out / "runs.jsonl").read_text().splitlines()) == 2
