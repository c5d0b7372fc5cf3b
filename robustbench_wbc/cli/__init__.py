"""The ``wbc-robust`` command line: thin commands that parse, call the stages, and print."""

from __future__ import annotations

from typing import Annotated

import typer

from robustbench_wbc._version import __version__
from robustbench_wbc.cli.data import data_app
from robustbench_wbc.cli.finetune import finetune
from robustbench_wbc.cli.leaderboard import leaderboard
from robustbench_wbc.cli.listing import attacks_app, models_app, splits_app, train
from robustbench_wbc.cli.publish import publish
from robustbench_wbc.cli.report import report
from robustbench_wbc.cli.run import run
from robustbench_wbc.cli.show import show_app

app = typer.Typer(name="wbc-robust", no_args_is_help=True, add_completion=False,
                  help="How robust are white-blood-cell models to distribution shift and attack?")
app.command()(run)
app.command()(leaderboard)
app.command()(report)
app.command()(publish)
app.command()(train)
app.command()(finetune)
app.add_typer(models_app, name="models")
app.add_typer(attacks_app, name="attacks")
app.add_typer(splits_app, name="splits")
app.add_typer(data_app, name="data")
app.add_typer(show_app, name="show")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"robustbench-wbc {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Show the version and exit.")] = False) -> None:
    """How robust are white-blood-cell models to distribution shift and attack?"""
    keep_writes_in_cache()


def keep_writes_in_cache() -> None:
    """The suite writes only under the output and cache directories it is given: matplotlib's font
    cache goes to ``$WBC_ROBUST_HOME/matplotlib`` unless the user set ``MPLCONFIGDIR``."""
    import os

    from robustbench_wbc import paths

    os.environ.setdefault("MPLCONFIGDIR", str(paths.home() / "matplotlib"))
