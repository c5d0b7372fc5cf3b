"""``wbc-robust show``: figures (PNG): the segmentation panel, and the figures of a run's results."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from robustbench_wbc.cli._common import (
    EXIT_FAILED,
    EXIT_USAGE,
    console,
    err_console,
    handle_errors,
    make_progress,
    open_results_or_exit,
    print_error,
    training_progress,
)
from robustbench_wbc.cli.run import DEFAULT_OUT, register_data_options

show_app = typer.Typer(help="Draw figures (PNG): the segmentation panel, and a run's figures.", no_args_is_help=True)


def _usage_error(exc: Exception) -> typer.Exit:
    print_error(exc)
    return typer.Exit(EXIT_USAGE)


def attack_eps(text: str) -> float | None:
    """Reads ``--eps``: one L∞ budget (``8/255``), or ``0``/``none`` for no attack rows."""
    from robustbench_wbc.attacks import EpsError, parse_eps

    if text.strip().lower() in ("none", ""):
        return None
    values = parse_eps(text, norm="linf")
    if len(values) != 1:
        raise EpsError(f"--eps takes one budget, got {text!r}")
    return values[0] or None


@show_app.command("segmentation")
@handle_errors
def segmentation(
    unet: Annotated[str, typer.Option(help="The U-Net (any model with a mask head) of the first mask column.")]
    = "resnet10t_unet",
    multitask: Annotated[str, typer.Option(help="The multitask model of the second mask column.")]
    = "resnet10t_multitask",
    split: Annotated[str, typer.Option(help="A split with masks (see `splits list`).")] = "synth:test",
    eps: Annotated[str, typer.Option(
        help="Budget (L∞) of the pgd attack on the mask head for the lower rows; 0 or 'none' for none.")] = "8/255",
    n_images: Annotated[int, typer.Option(min=1, help="Images to pick one of each class from (the first).")] = 64,
    out: Annotated[Path, typer.Option(help="The PNG to write.")] = Path("segmentation.png"),
    data: Annotated[list[str] | None, typer.Option(metavar="NAME=PATH", help="A real dataset as NAME=PATH.")] = None,
) -> None:
    """Draw the masks of a U-Net and a multitask model beside the truth, clean and under a segmentation attack.

    Rows: an eosinophil, a lymphocyte and a basophil; columns: the image, each model's mask and
    the ground truth (background, cytoplasm, nucleus), with each mask's nucleus Dice. With --eps,
    the same again with each model under pgd on its own mask head. Models not trained yet are
    trained first.
    """
    from robustbench_wbc.data.splits import SPLITS
    from robustbench_wbc.models.hub import load_model, read_card
    from robustbench_wbc.report.figures import segmentation_panel

    budget = attack_eps(eps)
    register_data_options(data, False)
    split_def = SPLITS.get(split)
    if not split_def.has_masks:
        raise typer.BadParameter(f"{split!r} has no masks; choose a split with masks", param_hint="--split")
    models, sizes = {}, set()
    with make_progress() if not (read_card(unet) and read_card(multitask)) else nullcontext() as progress:
        on_train = training_progress(progress) if progress is not None else None
        for title, mid in (("U-Net", unet), ("multitask", multitask)):
            model, card = load_model(mid, progress=None if read_card(mid) else on_train(mid))
            models[f"{title}\n{mid}"] = model
            sizes.add(card.image_size)
    if len(sizes) > 1:
        raise typer.BadParameter(f"{unet} and {multitask} take different image sizes {sorted(sizes)}; "
                                 f"give two models of the same size")
    images = split_def.load(n_images, sizes.pop())
    try:
        segmentation_panel(models, images, out, attack_eps=budget)
    except ValueError as exc:
        raise _usage_error(exc) from None
    under = "" if budget is None else f", clean and under pgd (seg) at eps {eps}"
    console.print(f"wrote {out}: {unet} and {multitask} on {split}{under}", markup=False, highlight=False)


FIGURES = (
    ("robust_vs_eps.png", "robust accuracy against eps", "robust_vs_eps", {}),
    ("nucleus_dice_vs_eps.png", "nucleus Dice against eps (attacks on the masks)", "robust_vs_eps", {"target": "seg"}),
    ("ood_by_shift.png", "clean accuracy per shift and severity", "ood_by_shift", {}),
    ("id_vs_ood.png", "in-distribution vs OOD accuracy", "id_vs_ood", {}),
)


@show_app.command("figures")
@handle_errors
def figures(
    out: Annotated[Path, typer.Option(
        help="The run's output directory (as given to `run --out`), or a published table (a directory with "
             "results.parquet, or the file).")] = DEFAULT_OUT,
    to: Annotated[Path | None, typer.Option(help="Directory for the PNGs. Default: <out>/figures.")] = None,
) -> None:
    """Draw the figures of the results in --out: robust accuracy against eps (and nucleus Dice, where the masks
    were attacked), clean accuracy per shift and severity, and in-distribution vs OOD accuracy.

    A figure the results cannot make (no OOD splits, no attacks) is skipped with the reason.
    """
    from robustbench_wbc.report import figures as figs

    results, table = open_results_or_exit(out)
    to = results.root / "figures" if to is None else to
    written = []
    for name, what, fn, kwargs in FIGURES:
        if name == "nucleus_dice_vs_eps.png" and not (table["target"] == "seg").any():
            continue  # only where the masks were attacked
        try:
            getattr(figs, fn)(table, to / name, **kwargs)
        except ValueError as exc:
            err_console.print(f"skipped {name} ({what}): {exc}", markup=False, highlight=False)
            continue
        written.append(to / name)
        console.print(f"wrote {to / name}: {what}", markup=False, highlight=False)
    if not written:
        print_error(f"the results in {out} make none of the figures")
        raise typer.Exit(EXIT_FAILED)
