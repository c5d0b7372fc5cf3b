"""What the CLI commands share: consoles, exit codes, and turning known errors into messages."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.text import Text

from robustbench_wbc.attacks.base import EpsError
from robustbench_wbc.bench.store import StoreWriteError
from robustbench_wbc.data.real import DataError, DataOptionError
from robustbench_wbc.models.card import CardError
from robustbench_wbc.models.hub import CheckpointError
from robustbench_wbc.registry import PluginError, UnknownNameError

# what the CLI prints is paths, ids and numbers: no ``:name:`` emoji codes; markup only where a line asks for it
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
USAGE_ERRORS = (UnknownNameError, EpsError, DataOptionError, DataError)
RUN_ERRORS = (CheckpointError, CardError, PluginError, StoreWriteError)

F = TypeVar("F", bound=Callable)


def print_error(message: object) -> None:
    """Prints ``Error: <message>`` on stderr, the message exactly as it is: a path or a name that holds
    ``[…]`` (rich's markup) is shown, never read as style."""
    err_console.print(Text.assemble(("Error:", "bold red"), " ", str(message)), highlight=False)


def plain(text: object) -> Text:
    """Gives ``text`` as rich text for a table cell or a line, highlighted as the console does, never read as markup."""
    return console.render_str(str(text), markup=False)


def handle_errors(fn: F) -> F:
    """Prints known errors on stderr and exits 2 (usage) or 1 (a run that cannot go on)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USAGE_ERRORS as exc:
            print_error(exc)
            raise typer.Exit(EXIT_USAGE) from None
        except RUN_ERRORS as exc:
            print_error(exc)
            raise typer.Exit(EXIT_FAILED) from None

    return wrapper  # type: ignore[return-value]


def open_results_or_exit(path: Path):
    """Gives ``(results, table)`` for a run's ``--out`` or a published table (directory or file); exits 1 where
    ``path`` holds no results, 2 where what it holds is not a readable results table."""
    from robustbench_wbc.bench.results import ResultsError, TableResults, open_results

    try:
        results = open_results(path)
        table = results.table()
    except ResultsError as exc:
        if isinstance(exc.__context__, FileNotFoundError) or "no results" in str(exc):
            print_error(f"no results in {path}. Run `wbc-robust run --out {path}` first.")
            raise typer.Exit(EXIT_FAILED) from None
        print_error(exc)
        raise typer.Exit(EXIT_USAGE) from None
    if table.empty:
        kind = "table" if isinstance(results, TableResults) else "store"
        print_error(f"no results in {path} (an empty {kind}). Run `wbc-robust run --out {path}` first.")
        raise typer.Exit(EXIT_FAILED)
    return results, table


def load_model_plugins(paths: list[Path] | None) -> list[str]:
    """Imports each ``--model-plugin`` file (its ``@register_model`` builders join the registry); gives the new ids."""
    from robustbench_wbc.plugins import load_model_plugin

    ids: list[str] = []
    for path in paths or []:
        ids += load_model_plugin(path)
    return ids


def load_attack_plugins(paths: list[Path] | None) -> list[str]:
    """Loads each ``--plugin`` file (Python ``@register_attack`` factories or a YAML preset); gives the new ids."""
    from robustbench_wbc.plugins import load_attack_plugin

    ids: list[str] = []
    for path in paths or []:
        ids += load_attack_plugin(path)
    return ids


PLUGIN_HELP = ("An attack plugin: a Python file whose @register_attack factories join the attacks, or a YAML "
               "preset (repeatable). Plugins are code and run with your rights.")


PROFILE_HELP = ("Training profile: default (the zoo in minutes on 2 cores) or paper (10× the images, 128 px, "
                "4× the steps; cached apart). Also $WBC_ROBUST_PROFILE.")


def use_profile(profile: str | None) -> None:
    """Makes ``profile`` the training profile of this process (checked; ``None`` keeps $WBC_ROBUST_PROFILE)."""
    import os

    from robustbench_wbc.models.zoo import PROFILE_ENV, PROFILES, active_profile

    if profile is not None:
        if profile not in PROFILES:
            raise typer.BadParameter(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}",
                                     param_hint="--profile")
        os.environ[PROFILE_ENV] = profile
    try:
        active_profile()
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--profile") from None


MODEL_PLUGIN_HELP = "A Python file whose @register_model builders join the zoo (repeatable)."


def training_progress(progress):
    """Gives ``on_train(model_id) -> update(step, total, val_metrics)``: a rich bar per model trained.

    A bar's description is rich markup: the names in it are escaped."""

    def on_train(model_id: str):
        task = progress.add_task(f"train {escape(model_id)}", total=None)

        def update(step: int, total: int, metrics: dict[str, float]) -> None:
            shown = " ".join(f"{k}={v:.3f}" for k, v in metrics.items() if "iou" not in k)
            progress.update(task, completed=step, total=total,
                            description=f"train {escape(model_id)} [dim]{escape(shown)}[/]")
        return update

    return on_train


def make_progress():
    """The progress display of ``run`` and ``train``: description, bar, n/total, elapsed; on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err_console, transient=False)


def setup_logging(verbose: bool) -> None:
    """Sends library logs to stderr through rich; INFO with ``--verbose``, else WARNING."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=err_console, show_path=False)], force=True)
