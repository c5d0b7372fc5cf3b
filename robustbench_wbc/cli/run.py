"""``wbc-robust run``: the matrix of models × splits × attacks × eps."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from robustbench_wbc.attacks.base import ATTACKS, NORMS, TARGETS, EpsError, parse_eps, with_backend
from robustbench_wbc.bench.cells import CLEAN
from robustbench_wbc.bench.profiles import RUN_PROFILES, get_run_profile
from robustbench_wbc.bench.runner import LocalExecutor, ensure_trained, execute, plan_profile
from robustbench_wbc.bench.runner import run as run_matrix
from robustbench_wbc.bench.store import ResultStore
from robustbench_wbc.cli._common import (
    EXIT_FAILED,
    EXIT_USAGE,
    MODEL_PLUGIN_HELP,
    PLUGIN_HELP,
    PROFILE_HELP,
    console,
    err_console,
    handle_errors,
    load_attack_plugins,
    load_model_plugins,
    make_progress,
    print_error,
    setup_logging,
    training_progress,
    use_profile,
)
from robustbench_wbc.data.real import parse_data_option, register_dataset
from robustbench_wbc.data.splits import DEFAULT_EVAL_SPLITS, SPLITS
from robustbench_wbc.device import resolve_device
from robustbench_wbc.models.zoo import MODELS, with_seeds

DEFAULT_OUT = Path("wbc-robust-out")


def parse_ints(text: str, option: str, example: str = "0,1,2") -> list[int]:
    """Parses ``"0,1,2"`` into non-negative integers; anything else is a usage error naming ``option``."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise typer.BadParameter(f"malformed {text!r}: write non-negative integers, e.g. {example}", param_hint=option)
    return [int(p) for p in parts]


def parse_seeds(text: str) -> list[int]:
    """Parses ``--seeds 0,1,2``."""
    return parse_ints(text, "--seeds")


def parse_targets(text: str | None) -> list[str] | None:
    """Parses ``--target cls,joint``; ``None`` keeps each family's default targets."""
    if text is None:
        return None
    parts = [p.strip().lower() for p in text.split(",") if p.strip()]
    bad = [p for p in parts if p not in TARGETS]
    if not parts or bad:
        raise typer.BadParameter(f"unknown target(s) {bad or [text]}; expected one or more of {', '.join(TARGETS)}",
                                 param_hint="--target")
    return parts


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"


class ExecutorKind(str, Enum):
    local = "local"
    dask = "dask"


class Track(str, Enum):
    clean = "clean"
    ablation = "ablation"
    confounded = "confounded"


def register_data_options(data: list[str] | None, skip_bad: bool) -> list[str]:
    """Registers each ``--data NAME=PATH`` dataset's splits; gives their ids."""
    ids: list[str] = []
    for option in data or []:
        ids += register_dataset(*parse_data_option(option), skip_bad=skip_bad)
    return ids


def check_executor_options(executor: ExecutorKind | None, workers: int | None,
                           scheduler: str | None) -> ExecutorKind:
    """Gives the executor: ``--workers`` or ``--scheduler`` imply dask; with ``--executor local`` they are an error."""
    given = [opt for opt, value in (("--workers", workers), ("--scheduler", scheduler)) if value is not None]
    if len(given) == 2:
        raise typer.BadParameter("give --workers (a cluster on this machine) or --scheduler (an existing one), "
                                 "not both", param_hint="--workers")
    if executor is None:
        return ExecutorKind.dask if given else ExecutorKind.local
    if executor is ExecutorKind.local and given:
        raise typer.BadParameter(f"{given[0]} is for --executor dask; leave it out to run cells in this process",
                                 param_hint=given[0])
    return executor


def record_run(out: Path, ctx: typer.Context | None = None) -> None:
    """Appends this invocation to ``out``'s run log (``runs.jsonl``): the command as a reader would type it
    (the options that differ from their defaults), when it started, the commit and the suite's version.
    ``wbc-robust publish`` names the command that made a table from it. Written before the run starts, so a
    run that is stopped is in the log too (its cells are what it committed)."""
    import json
    import shlex

    import pandas as pd

    from robustbench_wbc._version import __version__
    from robustbench_wbc.bench.results import RUNS_LOG
    from robustbench_wbc.bench.runner import git_sha

    words = ["wbc-robust", "run"]
    if ctx is not None:
        for param in ctx.command.params:
            value = ctx.params.get(param.name)
            if value is None or value == param.default or not param.opts:
                continue
            flag = max(param.opts, key=len)
            if isinstance(value, bool):
                if value or param.secondary_opts:
                    words.append(flag if value else param.secondary_opts[0])
                continue
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                words += [flag, str(getattr(v, "value", v))]
    line = {"command": shlex.join(words), "started": pd.Timestamp.now(tz="UTC").isoformat(), "git_sha": git_sha(),
            "version": __version__}
    out.mkdir(parents=True, exist_ok=True)
    with open(out / RUNS_LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


@contextmanager
def open_executor(kind: ExecutorKind, device, workers: int | None, scheduler: str | None, data: list[str] | None,
                  skip_bad: bool, model_plugins: list[Path] | None, attack_plugins: list[Path] | None) -> Iterator:
    """Gives the executor of ``--executor`` (started; a Dask cluster is stopped on exit). Dask is imported only here."""
    if kind is ExecutorKind.local:
        yield LocalExecutor(device)
        return
    from robustbench_wbc.bench.dask_executor import DaskExecutor, SchedulerError, WorkerSetup

    options = [parse_data_option(d) for d in data or []]
    setup = WorkerSetup(run_id="", data=tuple(f"{name}={path.resolve()}" for name, path in options), skip_bad=skip_bad,
                        model_plugins=tuple(str(p.resolve()) for p in model_plugins or []),
                        attack_plugins=tuple(str(p.resolve()) for p in attack_plugins or []))
    if workers is None and scheduler is None:
        workers = os.cpu_count() or 1
    try:
        dask_executor = DaskExecutor(device, workers=workers, scheduler=scheduler, setup=setup)
        dask_executor.start()
    except SchedulerError as exc:
        print_error(exc)
        raise typer.Exit(EXIT_USAGE) from None
    with dask_executor:
        yield dask_executor


@handle_errors
def run(
    ctx: typer.Context,
    models: Annotated[str, typer.Option(help="Model ids, comma-separated; wildcards; 'all' (the zoo of --track).")] = "all",
    track: Annotated[Track, typer.Option(
        help="Which zoo 'all' means: clean, ablation (the λ sweep), or confounded (stain predicts class).")] = Track.clean,
    attacks: Annotated[str, typer.Option(
        help="Attack ids, comma-separated (see `attacks list`); 'none' for clean cells only.")] = "pgd",
    splits: Annotated[str, typer.Option(help="Split ids, comma-separated (see `splits list`).")] = ",".join(DEFAULT_EVAL_SPLITS),
    eps: Annotated[str | None, typer.Option(help="Budgets, e.g. '1/255,8/255'. Default: each attack's own.")] = None,
    target: Annotated[str | None, typer.Option(metavar="cls|seg|joint",
        help="The loss the attacks climb, comma-separated: class cross-entropy (cls), the masks' SegPGD loss "
             "(seg), or both heads with balanced gradients (joint). Default: each family's "
             "(classifier cls; U-Net seg; multitask all three).")] = None,
    backend: Annotated[str | None, typer.Option(metavar="LIB",
        help="Run every attack through this library: wbc (the suite's engine), torchattacks, art, autoattack. "
             "Or name one per attack: pgd@art.")] = None,
    plugin: Annotated[list[Path] | None, typer.Option(metavar="FILE", help=PLUGIN_HELP)] = None,
    seeds: Annotated[str | None, typer.Option(
        help="Training seeds, e.g. '0,1,2': each model also at these seeds (as MODEL@SEED); the "
             "leaderboard averages them. Default: each model's own seed.")] = None,
    n_images: Annotated[int, typer.Option(min=1, help="Images per split (the first n; class-balanced).")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the attacks' randomness (random starts).")] = 0,
    out: Annotated[Path, typer.Option(help="Output directory: the result store and tables.")] = DEFAULT_OUT,
    data: Annotated[list[str] | None, typer.Option(metavar="NAME=PATH",
        help="A real dataset as NAME=PATH (Raabin-WBC, PBC, LISC, BloodMNIST .npz, or class folders); "
             "its splits are then NAME:SUB (see `splits list --data`). Repeatable.")] = None,
    skip_bad: Annotated[bool, typer.Option(help="Skip (and count) unreadable images or masks instead of stopping.")] = False,
    force: Annotated[bool, typer.Option(help="Allow eps beyond the norm's sensible range.")] = False,
    model_plugin: Annotated[list[Path] | None, typer.Option(metavar="FILE.py", help=MODEL_PLUGIN_HELP)] = None,
    profile: Annotated[str | None, typer.Option(metavar="default|paper|reference",
        help=PROFILE_HELP + " 'reference': the published matrix (results/): the zoo at seeds 0-2 (or --seeds), "
             "ID, domain-shift and corruption splits, FGSM, PGD, PGD-L2 and AutoAttack-fast; see "
             "robustbench_wbc/bench/profiles.py.")] = None,
    device: Annotated[str, typer.Option(metavar="auto|cpu|cuda",
        help="Where models train and attacks run: auto takes a CUDA GPU when torch sees one, else the CPU. "
             "Results agree up to floating-point noise.")] = "auto",
    precision: Annotated[Precision, typer.Option(
        help="The arithmetic attacks craft in: fp32, or bf16 (bfloat16 autocast, channels-last: about 2x on a "
             "CPU with bf16 units). Verdicts are taken in fp32 either way; bf16 cells are stored apart "
             "(their params say precision=bf16). See benchmarks/README.md for how often verdicts differ.")]
        = Precision.fp32,
    executor: Annotated[ExecutorKind | None, typer.Option(
        help="Where cells run: local (in this process; the default) or dask (worker processes: --workers N on "
             "this machine, or --scheduler ADDRESS). Either way this process trains what is missing and writes "
             "--out. Default: dask when --workers or --scheduler is given, else local.")] = None,
    workers: Annotated[int | None, typer.Option(min=1, metavar="N",
        help="Dask: start a cluster of N worker processes on this machine (loopback only; one thread each, "
             "torch threads cores // N). Default with --executor dask: one per core.")] = None,
    scheduler: Annotated[str | None, typer.Option(metavar="tcp://HOST:PORT",
        help="Dask: join the cluster of this scheduler. Its workers need this package, and the same "
             "$WBC_ROBUST_HOME with the trained models (see the README).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log training and cell details.")] = False,
) -> None:
    """Run models × splits × attacks × eps; skip cells already done in --out.

    Models not trained yet are trained first (nothing is downloaded) and cached in
    $WBC_ROBUST_HOME. Each finished cell is committed atomically to --out, so an interrupted run
    resumes where it stopped.
    """
    setup_logging(verbose)
    try:
        dev = resolve_device(device)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--device") from None
    executor = check_executor_options(executor, workers, scheduler)
    register_data_options(data, skip_bad)
    run_profile = None
    if profile in RUN_PROFILES:
        changed = [opt for opt, value, default in (("--models", models, "all"), ("--attacks", attacks, "pgd"),
                                                   ("--splits", splits, ",".join(DEFAULT_EVAL_SPLITS)),
                                                   ("--eps", eps, None), ("--target", target, None),
                                                   ("--backend", backend, None)) if value != default]
        if changed:
            raise typer.BadParameter(f"--profile {profile} fixes the matrix; leave out {', '.join(changed)} "
                                     f"(--seeds, --n-images and --out may change)", param_hint="--profile")
        run_profile, profile = get_run_profile(profile), "default"
    use_profile(profile)
    load_model_plugins(model_plugin)
    load_attack_plugins(plugin)
    model_ids = MODELS.resolve(models, all_filter=lambda e: not e.tiny and e.track == track.value)
    if seeds is not None:
        model_ids = with_seeds(model_ids, parse_seeds(seeds))
    attack_ids = [] if attacks.strip().lower() == CLEAN else ATTACKS.resolve(attacks)
    if backend is not None:
        try:
            attack_ids = with_backend(attack_ids, backend)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--backend") from None
    targets = parse_targets(target)
    split_ids = SPLITS.resolve(splits)
    eps_values = None
    if eps is not None:
        norms = {ATTACKS.get(a).norm for a in attack_ids}
        if len(norms) > 1:
            raise EpsError(f"--eps applies to every attack, but they mix norms {sorted(norms)}; "
                           f"run them separately or leave --eps out")
        eps_values = parse_eps(eps, norm=norms.pop() if norms else NORMS[0], force=force)

    record_run(out, ctx)
    with open_executor(executor, dev, workers, scheduler, data, skip_bad, model_plugin, plugin) as cell_executor, \
            make_progress() as progress:
        on_train = training_progress(progress)
        cells_task = progress.add_task("cells", total=None)

        def on_cell(result, i: int, total: int) -> None:
            c = result.cell
            progress.update(cells_task, completed=i, total=total,
                            description=f"cells [dim]{escape(f'{c.model} {c.split} {c.attack}')}[/]")

        if run_profile is None:
            summary = run_matrix(model_ids, split_ids, attack_ids, out, eps_values, n_images, seed,
                                 executor=cell_executor, on_train=on_train, on_cell=on_cell, targets=targets,
                                 device=dev, precision=precision.value)
        else:
            if seeds is None:
                model_ids = with_seeds(model_ids, list(run_profile.seeds))
            cards = ensure_trained(model_ids, on_train, dev)
            cells = plan_profile(run_profile, model_ids, cards, seed, n_images, precision.value)
            summary = execute(ResultStore(out), cells, cell_executor, on_cell=on_cell)

    console.print(f"{summary.planned} cells: {summary.skipped} already done, {summary.ok} run, "
                  f"{len(summary.failed)} failed → {out}/results.parquet, {out}/results.csv", markup=False)
    if summary.stale:
        why = "; ".join(f"{reason}: {n}" for reason, n in sorted(summary.stale_reasons.items(), key=lambda kv: -kv[1]))
        console.print(f"recomputed {summary.stale} cells computed by other code ({why})", markup=False)
    for r in summary.failed:
        err_console.print(f"[red]{escape(r.status)}[/] {escape(f'{r.cell.model} {r.cell.split} {r.cell.attack}')} "
                          f"eps={r.cell.eps:.5g}: {escape(str(r.reason))}", highlight=False)
    if summary.failed:
        raise typer.Exit(EXIT_FAILED)
