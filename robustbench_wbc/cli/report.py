"""``wbc-robust report``: the HTML report of a run's results, one self-contained file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robustbench_wbc.atomic import atomic_write_text
from robustbench_wbc.cli._common import console, handle_errors, open_results_or_exit
from robustbench_wbc.cli.run import DEFAULT_OUT
from robustbench_wbc.report.html import DEFAULT_TITLE, render_report

REPORT_NAME = "report.html"


@handle_errors
def report(
    results: Annotated[Path, typer.Option(
        help="The run's output directory (as given to `run --out`), or a published table: a directory with "
             "results.parquet (and samples.parquet), or the .parquet / .csv file.")] = DEFAULT_OUT,
    out: Annotated[Path | None, typer.Option(
        help=f"The HTML file to write (default: {REPORT_NAME} in --results).")] = None,
    title: Annotated[str, typer.Option(help="The page's title.")] = DEFAULT_TITLE,
) -> None:
    """Write the HTML report of the results in --results: one self-contained file (tables, figures, reliability
    flags, the run's parameters and versions) that opens in a browser without a server."""
    store, table = open_results_or_exit(results)
    path = out if out is not None else store.root / REPORT_NAME
    atomic_write_text(render_report(store, title=title, table=table), path)
    console.print(str(path), markup=False, highlight=False, soft_wrap=True)
