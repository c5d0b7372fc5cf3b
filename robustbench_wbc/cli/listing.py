"""``wbc-robust models|attacks|splits list``: what the registries hold."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Column, Table

from robustbench_wbc.attacks.base import ATTACKS
from robustbench_wbc.cli._common import console, handle_errors, setup_logging
from robustbench_wbc.data.splits import SPLITS
from robustbench_wbc.models.hub import CheckpointError, load_model, read_card
from robustbench_wbc.models.zoo import MODELS, list_models
from robustbench_wbc.report.leaderboard import eps_label

models_app = typer.Typer(help="List, train and describe the registered models.", no_args_is_help=True)
attacks_app = typer.Typer(help="List the registered attacks.", no_args_is_help=True)
splits_app = typer.Typer(help="List the registered data splits.", no_args_is_help=True)


@models_app.command("list")
@handle_errors
def models_list(
    filter: Annotated[str, typer.Argument(help="A wildcard, e.g. 'resnet*'.")] = "",
    tiny: Annotated[bool, typer.Option(help="Include the tiny test models.")] = False,
) -> None:
    """List registered models, and whether each is trained in the cache."""
    ids = list_models(filter, include_tiny=tiny)
    table = Table("family", "encoder", "recipe", "track", "seed", "trained", "description")
    table.columns.insert(0, Column("model", no_wrap=True, min_width=max(map(len, ids), default=5)))
    for mid in ids:
        e = MODELS.get(mid)
        try:
            trained = "yes" if read_card(mid) else "no"
        except CheckpointError:
            trained = "corrupt"
        table.add_row(mid, e.family, e.encoder, e.recipe, e.track, str(e.seed), trained, e.description)
    console.print(table)


@models_app.command("train")
@handle_errors
def models_train(
    models: Annotated[str, typer.Argument(help="Model ids, comma-separated; wildcards; 'all'.")],
    force: Annotated[bool, typer.Option(help="Retrain even if a checkpoint exists.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train models by their recipes and cache them (done automatically on first use)."""
    setup_logging(verbose)
    for mid in MODELS.resolve(models, all_filter=lambda e: not e.tiny):
        _, card = load_model(mid, force=force)
        console.print(f"{mid}: val {card.val_metrics} in {card.train_time_s:.1f} s, "
                      f"weights sha256 {card.weights_sha256[:12]}…")


def zoo_card(mid: str) -> dict:
    """The reviewed definition of a zoo model, as written to the top-level ``models/`` folder."""
    e = MODELS.get(mid)
    r = e.recipe_spec
    return {"id": mid, "family": e.family, "encoder": e.encoder, "description": e.description,
            "track": e.track, "seed": e.seed, "recipe": {"name": r.name, **{k: v for k, v in r.__dict__.items() if k != "name"}}}


@models_app.command("cards")
@handle_errors
def models_cards(
    out: Annotated[Path, typer.Option(help="Directory to write one YAML card per zoo model.")] = Path("models"),
) -> None:
    """Write the zoo's definition cards (YAML), derived from the registry."""
    out.mkdir(parents=True, exist_ok=True)
    for mid in list_models():
        header = "# Written from the model registry by `wbc-robust models cards --out models`; do not edit.\n"
        (out / f"{mid}.yaml").write_text(header + yaml.safe_dump(zoo_card(mid), sort_keys=False))
        console.print(f"wrote {out / (mid + '.yaml')}")


@attacks_app.command("list")
@handle_errors
def attacks_list(filter: Annotated[str, typer.Argument(help="A wildcard.")] = "") -> None:
    """List registered attacks with their norm, backend, default eps and targets."""
    table = Table("attack", "norm", "backend", "default eps", "targets", "params", "description")
    for aid in ATTACKS.list(filter):
        a = ATTACKS.get(aid)
        table.add_row(aid, a.norm, a.backend, ", ".join(eps_label(e, a.norm) for e in a.default_eps),
                      ",".join(a.targets), " ".join(f"{k}={v}" for k, v in a.params.items()),
                      a.description)
    console.print(table)


@splits_app.command("list")
@handle_errors
def splits_list(
    filter: Annotated[str, typer.Argument(help="A wildcard.")] = "",
    data: Annotated[list[str] | None, typer.Option(help="Also list a real dataset's splits: NAME=PATH.")] = None,
    skip_bad: Annotated[bool, typer.Option(help="Skip unreadable files in --data instead of stopping.")] = False,
) -> None:
    """List registered splits, one line each: role, domain, size, description."""
    from robustbench_wbc.cli.run import register_data_options

    register_data_options(data, skip_bad)
    for sid in SPLITS.list(filter):
        s = SPLITS.get(sid)
        console.print(f"{sid:<28} {s.role:<10} {s.domain:<12} n={s.default_n:<6} {s.description}",
                      highlight=False, soft_wrap=True)
