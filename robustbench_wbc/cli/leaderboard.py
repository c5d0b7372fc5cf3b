"""``wbc-robust leaderboard``: the leaderboard of a run's results."""

from __future__ import annotations

import difflib
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from robustbench_wbc.cli._common import EXIT_FAILED, console, handle_errors, open_results_or_exit, print_error
from robustbench_wbc.cli.run import DEFAULT_OUT
from robustbench_wbc.report.by_class import by_class as class_table
from robustbench_wbc.report.by_class import by_class_markdown
from robustbench_wbc.report.ensemble import cross_task as cross_task_table
from robustbench_wbc.report.ensemble import cross_task_markdown, ensemble_or_reason
from robustbench_wbc.report.html import leaderboard_html
from robustbench_wbc.report.leaderboard import BY, to_csv, to_markdown
from robustbench_wbc.report.leaderboard import leaderboard as make_board
from robustbench_wbc.report.shift import shift_report


class Format(str, Enum):
    md = "md"
    csv = "csv"
    html = "html"


@handle_errors
def leaderboard(
    out: Annotated[Path, typer.Option(
        help="The run's output directory (as given to `run --out`), or a published table: a directory with "
             "results.parquet (and samples.parquet), or the .parquet / .csv file.")] = DEFAULT_OUT,
    format: Annotated[Format, typer.Option(help="Output format.")] = Format.md,
    write: Annotated[Path | None, typer.Option(help="Also write it to this file.")] = None,
    by_class: Annotated[bool, typer.Option(
        help="Instead, per class (ID and OOD): clean accuracy, nucleus Dice and cytoplasm Dice.")] = False,
    by: Annotated[str | None, typer.Option(metavar="linf|l2|ood|seg|seg-l2|real",
        help="Rank by the worst robust accuracy under L∞ (default when L∞ attacks ran) or L2 attacks, by clean "
             "OOD accuracy, by nucleus Dice under L∞ (seg) or L2 (seg-l2) attacks on the masks, or by balanced "
             "accuracy on real cells (real). Models are "
             "compared paired on the same images; one not shown behind another at 95 % shares its rank.")] = None,
    shift: Annotated[bool, typer.Option(
        help="Instead, distribution shift: the ID→OOD line of the standard-trained models with each model's "
             "effective robustness, and the corruption error (mCE) against the classifier of its encoder.")] = False,
    cross_task: Annotated[bool, typer.Option(
        help="Instead, the cross-task matrix: each head's damage under cls, seg and joint attacks.")] = False,
    metric: Annotated[str, typer.Option(
        help="With --shift: the clean metric to analyse, e.g. accuracy, balanced_accuracy, nucleus_dice.")] = "accuracy",
    mce_baseline: Annotated[str | None, typer.Option(metavar="MODEL",
        help="With --shift: one baseline model for every model's corruption error (comparable across encoders); "
             "by default each model's is the classifier-only model of its encoder.")] = None,
) -> None:
    """Print the leaderboard of the results in --out (markdown by default)."""
    if format is Format.html and (by_class or shift or cross_task):
        raise typer.BadParameter("html is for the leaderboard itself; `wbc-robust report` renders every view as one HTML "
                                 "page", param_hint="--format")
    store, table = open_results_or_exit(out)
    if by_class:
        try:
            per_class = class_table(store, table)
        except (OSError, KeyError) as exc:
            print_error(f"--by-class reads the per-sample outcomes, and they could not be read: {exc}")
            raise typer.Exit(EXIT_FAILED) from None
        if format is Format.md:
            text = "\n".join(f"**{title}**, % per class\n\n{by_class_markdown(per_class, metric)}"
                             for metric, title in (("accuracy", "Clean accuracy"), ("nucleus_dice", "Nucleus Dice"),
                                                   ("cytoplasm_dice", "Cytoplasm Dice")))
        else:
            text = per_class.to_csv(index=False)
    elif shift:
        if mce_baseline is not None and mce_baseline not in set(table["model"]):
            raise typer.BadParameter(f"unknown model {mce_baseline!r}; the results have "
                                     f"{', '.join(sorted(table['model'].unique()))}", param_hint="--mce-baseline")
        known = sorted(set(table["metric"]))
        if metric not in known:
            close = difflib.get_close_matches(metric, known, n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise typer.BadParameter(f"unknown metric {metric!r}.{hint} The results have {', '.join(known)}",
                                     param_hint="--metric")
        text = shift_report(table, format is Format.md, mce_baseline, metric)
    elif cross_task:
        matrix = cross_task_table(table)
        text = cross_task_markdown(matrix) if format is Format.md else matrix.to_csv(index=False)
    else:
        if by is not None and by not in BY:
            raise typer.BadParameter(f"unknown ranking {by!r}; expected one of {', '.join(BY)}", param_hint="--by")
        try:
            ens, why = ensemble_or_reason(store, table)
            board = make_board(table, ens, by=by, samples=store.samples)
            if why:
                board.attrs["notes"].append(why)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--by") from None
        text = {Format.md: to_markdown, Format.csv: to_csv, Format.html: leaderboard_html}[format](board)
    if write is not None:
        write.parent.mkdir(parents=True, exist_ok=True)
        write.write_text(text)
    console.print(text, markup=False, highlight=False, soft_wrap=True)
