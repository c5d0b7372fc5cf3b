"""``wbc-robust publish``: a run's results as published tables, with where, when and how they were made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from robustbench_wbc.atomic import atomic_write_text
from robustbench_wbc.bench.results import PROVENANCE, RUNS_LOG, ResultsError
from robustbench_wbc.bench.results import publish as publish_tables
from robustbench_wbc.bench.store import ResultStore
from robustbench_wbc.cli._common import EXIT_FAILED, console, handle_errors, print_error
from robustbench_wbc.device import describe_machine


@handle_errors
def publish(
    out: Annotated[Path, typer.Option(help="The run's output directory (as given to `run --out`).")],
    to: Annotated[Path, typer.Option(help="The directory to publish into (e.g. results/reference).")],
    command: Annotated[str | None, typer.Option(
        help="The command that made the results, as a reader should run it (default: the `wbc-robust run` "
             "commands recorded in --out).")] = None,
) -> None:
    """Publish a run: its tidy table (results.parquet), every cell's per-sample outcomes (samples.parquet),
    and provenance.json (the dates, the machine, the commits and the command that made them), so that
    `leaderboard --out DIR` and `report --results DIR` re-render it, and the READMEs quote it."""
    store = ResultStore(out)
    table = store.table()
    if table.empty:
        print_error(f"no results in {out}. Run `wbc-robust run --out {out}` first.")
        raise typer.Exit(EXIT_FAILED)
    if not (table["status"] == "ok").all():
        bad = table.loc[table["status"] != "ok", "cell_id"].nunique()
        print_error(f"{out} holds {bad} cells that failed or broke their threat model; fix them (or re-run) "
                    f"before publishing: a published table is complete.")
        raise typer.Exit(EXIT_FAILED)
    dirty = sorted({s for s in table["git_sha"].astype(object).fillna("").astype(str) if s.endswith("-dirty")})
    if dirty:
        print_error(f"{out} holds cells computed from a checkout with uncommitted changes ({', '.join(dirty)}): which "
                    f"code made them cannot be named. Commit, then run again into a fresh --out.")
        raise typer.Exit(EXIT_FAILED)
    runs = []
    log = out / RUNS_LOG
    if log.is_file():
        runs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    commands = list(dict.fromkeys(r["command"] for r in runs))
    cells = table.drop_duplicates("cell_id")
    shas = cells["git_sha"].astype(object).fillna("").astype(str).replace("", "unknown").value_counts().sort_index()
    when = table["finished_at"]
    provenance = {
        "date": f"{when.min():%Y-%m-%d %H:%M} – {when.max():%Y-%m-%d %H:%M} UTC",
        "machine": describe_machine(),
        "commits": list(shas.index),
        "cells_per_commit": {k: int(v) for k, v in shas.items()},
        "cells": int(table["cell_id"].nunique()),
        "command": command or "; ".join(commands) or "not recorded",
        "runs": runs,
        "versions": {c[2:]: sorted(set(table[c].dropna().astype(str))) for c in table.columns if c.startswith("v_")},
    }
    try:
        paths = publish_tables(store, to)
    except ResultsError as exc:
        print_error(exc)
        raise typer.Exit(EXIT_FAILED) from None
    atomic_write_text(json.dumps(provenance, indent=2, ensure_ascii=False) + "\n", to / PROVENANCE)
    for p in (*paths, to / PROVENANCE):
        console.print(str(p), markup=False, highlight=False, soft_wrap=True)
