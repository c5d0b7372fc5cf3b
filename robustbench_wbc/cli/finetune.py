"""``wbc-robust finetune``: the real-finetune recipe, cross-validated on a real dataset with masks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from robustbench_wbc.cli._common import console, handle_errors, make_progress, setup_logging
from robustbench_wbc.cli.run import parse_ints, register_data_options

DEFAULT_MODELS = "resnet10t_cls,resnet10t_cls_small,resnet10t_unet,resnet10t_multitask"
METRICS = (("accuracy", "Accuracy"), ("balanced_accuracy", "Balanced accuracy"), ("nucleus_dice", "Nucleus Dice"),
           ("cytoplasm_dice", "Cytoplasm Dice"))


@handle_errors
def finetune(
    data: Annotated[str, typer.Option(metavar="NAME=PATH", help="A real dataset with masks, e.g. zheng2018=PATH.")],
    models: Annotated[str, typer.Option(help="Zoo models, comma-separated; wildcards.")] = DEFAULT_MODELS,
    shots: Annotated[str, typer.Option(help="Real training images per fold, e.g. '0,10,30,100' (0: no fine-tuning).")]
    = "0,10,30,100",
    folds: Annotated[int, typer.Option(min=2, max=20, help="k of the k-fold cross-validation.")] = 5,
    steps: Annotated[int, typer.Option(min=1, help="Fine-tuning steps (batch 16, learning rate 2e-4).")] = 150,
    seed: Annotated[int, typer.Option(help="Seed of the folds, the shots and the fine-tuning.")] = 0,
    out: Annotated[Path, typer.Option(help="Output directory: finetune.parquet/.csv and one file per fit.")]
    = Path("runs/finetune"),
    skip_bad: Annotated[bool, typer.Option(help="Skip unreadable images or masks instead of stopping.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Fine-tune zoo models on a few real cells and score real cells they never saw (k-fold).

    Every image is scored once per (model, shots), by models that did not train on it; each family
    uses the real labels its recipe uses (classifier: classes, U-Net: masks, multitask: both).
    """
    from robustbench_wbc.data.splits import SPLITS
    from robustbench_wbc.models.finetune import FINETUNE, cross_validate, summary_markdown
    from robustbench_wbc.models.hub import load_model
    from robustbench_wbc.models.zoo import MODELS

    setup_logging(verbose)
    n_shots = parse_ints(shots, "--shots", "0,10,30")
    split_ids = register_data_options([data], skip_bad)
    model_ids = MODELS.resolve(models, all_filter=lambda e: not e.tiny and e.track == "clean")
    sizes = {load_model(m)[1].image_size for m in model_ids}
    if len(sizes) > 1:
        raise typer.BadParameter(f"the models take different input sizes {sorted(sizes)}; run them apart", param_hint="--models")
    split = next((s for s in split_ids if s.endswith(":all")), split_ids[0])
    real = SPLITS.get(split).load(None, sizes.pop())
    with make_progress() as progress:
        task = progress.add_task("fits", total=len(model_ids) * folds * len(n_shots))

        def on_fit(model_id: str, k: int, fold: int) -> None:
            progress.update(task, advance=1, description=f"fits [dim]{escape(model_id)} shots={k} fold={fold}[/]")

        recipe = replace(FINETUNE, steps=steps, val_every=max(1, steps // 3))
        table = cross_validate(model_ids, real, n_shots, folds, seed, recipe, on_fit=on_fit, store=out / "fits")
    out.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out / "finetune.parquet", index=False)
    table.to_csv(out / "finetune.csv", index=False)
    console.print(f"{split}: {len(real)} real cells, {folds}-fold; mean ± sd over folds, % → {out}/finetune.parquet\n",
                  markup=False, highlight=False)
    for metric, title in METRICS:
        if (table["metric"] == metric).any():
            console.print(f"**{title}**\n\n{summary_markdown(table, metric)}", markup=False, highlight=False)
