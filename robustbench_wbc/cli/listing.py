"""``wbc-robust models|attacks|splits list``: what the registries hold."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Column, Table

from robustbench_wbc.attacks.base import ATTACKS, eps_label
from robustbench_wbc.cli._common import (
    MODEL_PLUGIN_HELP,
    PLUGIN_HELP,
    PROFILE_HELP,
    console,
    handle_errors,
    load_attack_plugins,
    load_model_plugins,
    make_progress,
    plain,
    setup_logging,
    training_progress,
    use_profile,
)
from robustbench_wbc.data.splits import SPLITS
from robustbench_wbc.models.hub import CheckpointError, load_model, read_card
from robustbench_wbc.models.zoo import MODELS, list_models, with_seeds
from robustbench_wbc.models.zoo_cards import zoo_card, zoo_ids

models_app = typer.Typer(help="List, train and describe the registered models.", no_args_is_help=True)
attacks_app = typer.Typer(help="List the registered attacks.", no_args_is_help=True)
splits_app = typer.Typer(help="List the registered data splits.", no_args_is_help=True)


@models_app.command("list")
@handle_errors
def models_list(
    filter: Annotated[str, typer.Argument(help="A wildcard, e.g. 'resnet*'.")] = "",
    tiny: Annotated[bool, typer.Option(help="Include the tiny test models.")] = False,
    model_plugin: Annotated[list[Path] | None, typer.Option(metavar="FILE.py", help=MODEL_PLUGIN_HELP)] = None,
    profile: Annotated[str | None, typer.Option(metavar="default|paper", help=PROFILE_HELP)] = None,
) -> None:
    """List registered models, and whether each is trained in the cache."""
    use_profile(profile)
    load_model_plugins(model_plugin)
    ids = list_models(filter, include_tiny=tiny)
    table = Table("family", "encoder", "recipe", "track", "seed", Column("params", justify="right"), "trained",
                  "description")
    table.columns.insert(0, Column("model", no_wrap=True, min_width=max(map(len, ids), default=5)))
    for mid in ids:
        e = MODELS.get(mid)
        try:
            trained = "yes" if read_card(mid) else "no"
        except CheckpointError:
            trained = "corrupt"
        params = sum(p.numel() for p in e.builder().parameters())
        table.add_row(*map(plain, (mid, e.family, e.encoder, e.recipe_spec.name, e.track, e.seed, f"{params / 1e6:.2f} M",
                                   trained, e.description)))
    console.print(table)


@handle_errors
def train(
    models: Annotated[str, typer.Argument(help="Model ids, comma-separated; wildcards; 'all' (every track).")] = "all",
    seeds: Annotated[str | None, typer.Option(help="Training seeds, e.g. '0,1,2' (each model also as MODEL@SEED).")] = None,
    force: Annotated[bool, typer.Option(help="Retrain even if a checkpoint exists.")] = False,
    model_plugin: Annotated[list[Path] | None, typer.Option(metavar="FILE.py", help=MODEL_PLUGIN_HELP)] = None,
    profile: Annotated[str | None, typer.Option(metavar="default|paper", help=PROFILE_HELP)] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train the models not trained yet, by their recipes, and cache them (done automatically on first use)."""
    from robustbench_wbc.cli.run import parse_seeds

    setup_logging(verbose)
    use_profile(profile)
    load_model_plugins(model_plugin)
    ids = MODELS.resolve(models, all_filter=lambda e: not e.tiny)
    if seeds is not None:
        ids = with_seeds(ids, parse_seeds(seeds))
    with make_progress() as progress:
        on_train = training_progress(progress)
        for mid in ids:
            cached = None if force else read_card(mid)
            _, card = (None, cached) if cached else load_model(mid, force=force, progress=on_train(mid))
            state = "cached" if cached else f"trained in {card.train_time_s:.1f} s"
            shown = " ".join(f"{k}={v:.3f}" for k, v in card.val_metrics.items() if "iou" not in k)
            console.print(f"{mid}: {state}; val {shown}; weights sha256 {card.weights_sha256[:12]}…", markup=False,
                          highlight=False)


models_app.command("train")(train)


@models_app.command("cards")
@handle_errors
def models_cards(
    out: Annotated[Path, typer.Option(help="Directory to write one YAML card per zoo model.")] = Path("models"),
) -> None:
    """Write the zoo's cards (YAML): derived from the registry, plus what training measured where trained."""
    out.mkdir(parents=True, exist_ok=True)
    for mid in zoo_ids():
        (out / f"{mid}.yaml").write_text(zoo_card(mid, read_card(mid)).to_yaml())
        console.print(f"wrote {out / (mid + '.yaml')}", markup=False)


@attacks_app.command("list")
@handle_errors
def attacks_list(
    filter: Annotated[str, typer.Argument(help="A wildcard.")] = "",
    plugin: Annotated[list[Path] | None, typer.Option(metavar="FILE", help=PLUGIN_HELP)] = None,
) -> None:
    """List registered attacks with their norm, backend, default eps and targets."""
    load_attack_plugins(plugin)
    ids = ATTACKS.list(filter)
    table = Table(Column("attack", no_wrap=True, min_width=max(map(len, ids), default=6)), "norm", "backend",
                  "default eps", "targets", "params", "description")
    for aid in ids:
        a = ATTACKS.get(aid)
        table.add_row(*map(plain, (aid, a.norm, a.backend, ", ".join(eps_label(e, a.norm) for e in a.default_eps),
                                   ",".join(a.targets), " ".join(f"{k}={v}" for k, v in a.params.items()),
                                   a.description)))
    console.print(table)


@splits_app.command("list")
@handle_errors
def splits_list(
    filter: Annotated[str, typer.Argument(help="A wildcard.")] = "",
    data: Annotated[list[str] | None, typer.Option(metavar="NAME=PATH", help="Also list a real dataset's splits.")] = None,
    skip_bad: Annotated[bool, typer.Option(help="Skip unreadable files in --data instead of stopping.")] = False,
) -> None:
    """List registered splits, one line each: role, domain, size, description."""
    from robustbench_wbc.cli.run import register_data_options

    register_data_options(data, skip_bad)
    for sid in SPLITS.list(filter):
        s = SPLITS.get(sid)
        console.print(f"{sid:<28} {s.role:<10} {s.domain:<12} n={s.default_n:<6} {s.description}",
                      markup=False, highlight=False, soft_wrap=True)
