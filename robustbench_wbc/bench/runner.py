"""Running a matrix of cells: plan, skip what is done, evaluate, commit each cell atomically."""

from __future__ import annotations

import logging
import math
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pandas as pd
import torch

from robustbench_wbc.attacks.base import ATTACKS, BuiltAttack, ThreatModelViolation, build_attack, perturbation_norms
from robustbench_wbc.bench import provenance
from robustbench_wbc.bench.batching import map_batches
from robustbench_wbc.bench.cells import CLEAN, Cell
from robustbench_wbc.bench.diagnostics import CHECK_IMAGES, model_checks
from robustbench_wbc.bench.store import ResultStore
from robustbench_wbc.data.splits import SPLITS, SplitData
from robustbench_wbc.device import model_device
from robustbench_wbc.metrics import correct, segmentation_scores
from robustbench_wbc.models.card import ModelCard
from robustbench_wbc.models.hub import CheckpointError, load_model, read_card
from robustbench_wbc.models.zoo import MODELS, base_id
from robustbench_wbc.stats import Measure, balanced, mean, proportion

logger = logging.getLogger(__name__)

BATCH_SIZE = 128


FAMILY_TARGETS = {"classifier": ("cls",), "unet": ("seg",), "multitask": ("cls", "seg", "joint")}


def default_targets(family: str) -> tuple[str, ...]:
    """The heads attacked by default: the class logits, the masks, or (multitask) each and both.

    A multitask model is attacked through each head so that its Dice under a segmentation
    attack compares with the U-Net's, and its accuracy under a classification attack with the
    classifier's; each attack also records the other head's damage (the cross-task matrix), and
    the joint attack shows whether a head that looks protective under a single-task attack stays
    so when both are attacked at once (Ghamizi et al., AAAI 2022).
    """
    return FAMILY_TARGETS[family]


def git_sha() -> str:
    """Gives the source tree's git commit, ``<sha>-dirty`` where tracked files differ from it (the code that
    ran is then not that commit's), or ``""`` outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             cwd=here, timeout=5, check=False)
        if out.returncode != 0:
            return ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=here, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def plan(models: Sequence[str], splits: Sequence[str], attacks: Sequence[str],
         eps: Sequence[float] | None, n_images: int | None, seed: int,
         cards: dict[str, ModelCard], targets: Sequence[str] | None = None,
         precision: str = "fp32") -> list[Cell]:
    """Gives every cell of the matrix: a clean cell per (model, split), then attack × eps × target.

    ``targets`` narrows the heads attacked (default: each family's, :func:`default_targets`); a
    target a model does not have, or an attack does not support, is left out for that pair.
    ``precision="bf16"`` crafts every attack under bfloat16 autocast (a parameter of its cells,
    so they are other cells than the fp32 ones; the verdicts stay fp32).
    """
    extra = {} if precision == "fp32" else {"precision": precision}
    cells: list[Cell] = []
    for m in models:
        card = cards[m]
        for s in splits:
            split_def = SPLITS.get(s)
            if card.family == "unet" and not split_def.has_masks:
                logger.warning("%s is left out on %s: a U-Net is scored on masks, and the split has none", m, s)
                continue
            # a head is attacked only where the split has its labels: no masks, no Dice
            heads = [t for t in default_targets(card.family) if targets is None or t in targets]
            heads = [t for t in heads if t == "cls" or split_def.has_masks]
            n = split_def.default_n if n_images is None else min(n_images, split_def.default_n)
            cells.append(Cell(m, s, CLEAN, 0.0, "none", seed, n, card.weights_sha256))
            for a in attacks:
                entry = ATTACKS.get(a)
                for target in heads:
                    if target not in entry.targets:
                        continue
                    for e in (entry.default_eps if eps is None else eps):
                        spec = entry.spec(e, target, **extra)
                        cells.append(Cell(m, s, a, spec.eps, spec.target, seed, n, card.weights_sha256,
                                          spec.norm, spec.backend, dict(spec.params)))
    return cells


@dataclass
class CellResult:
    """What evaluating a cell gives: tidy rows and per-sample outcomes."""

    cell: Cell
    status: str
    rows: pd.DataFrame
    samples: pd.DataFrame | None = None
    reason: str = ""


@dataclass
class Context:
    """What a worker keeps between cells: loaded models and splits, clean outputs."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    models: dict[str, tuple[torch.nn.Module, ModelCard]] = field(default_factory=dict)
    splits: dict[tuple[str, int, int], SplitData] = field(default_factory=dict)
    clean: dict[tuple[str, str, int], dict[str, torch.Tensor]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=lambda: provenance.library_versions())
    git_sha: str = field(default_factory=git_sha)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def model(self, model_id: str):
        if model_id not in self.models:
            model, card = load_model(model_id)
            self.models[model_id] = (model.to(self.device), card)
        return self.models[model_id]

    def split(self, name: str, n: int, size: int) -> SplitData:
        key = (name, n, size)
        if key not in self.splits:
            self.splits[key] = SPLITS.get(name).load(n, size)
        return self.splits[key]


@torch.no_grad()
def _predict(model: torch.nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The model's outputs on ``images`` in fp32 and eval mode, by batches on the model's device, on the CPU."""
    model.eval()  # never score with batch statistics, whatever an attack library left behind
    dev = model_device(model)
    outs: dict[str, list[torch.Tensor]] = {}

    def batch(start: int, stop: int) -> dict[str, torch.Tensor]:
        return {k: v.float().cpu() for k, v in model(images[start:stop].to(dev)).items()}

    for out in map_batches(batch, len(images), BATCH_SIZE, "predictions"):
        for k, v in out.items():
            outs.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in outs.items()}


def _check_outputs(out: dict[str, torch.Tensor], n: int, num_classes: int, size: int) -> None:
    """Refuses outputs that cannot be scored: wrong shape, or non-finite."""
    for head, v in out.items():
        if head == "logits" and tuple(v.shape) != (n, num_classes):
            raise ValueError(f"head 'logits' has shape {tuple(v.shape)}, expected {(n, num_classes)}")
        if head == "mask" and (v.ndim != 4 or v.shape[0] != n or tuple(v.shape[-2:]) != (size, size)):
            raise ValueError(f"head 'mask' has shape {tuple(v.shape)}, expected ({n}, 3, {size}, {size})")
        if not torch.isfinite(v).all():
            raise ValueError(f"head {head!r} returned non-finite values")


def _head_sizes(clean: dict[str, torch.Tensor]) -> tuple[int, int]:
    """The number of classes and the image size the clean outputs had (what every later output must have)."""
    n_classes = clean["logits"].shape[1] if "logits" in clean else 0
    size = clean["mask"].shape[-1] if "mask" in clean else 0
    return n_classes, size


def evaluate_cell(cell: Cell, ctx: Context) -> CellResult:
    """Evaluates one cell; attack failures and budget violations become its status, not a crash."""
    t0 = time.perf_counter()
    model, card = ctx.model(cell.model)
    data = ctx.split(cell.split, cell.n_images, card.image_size)
    key = (cell.model, cell.split, cell.n_images)
    passes = {"forward_passes": 0, "backward_passes": 0}
    try:
        if key not in ctx.clean:  # clean predictions once per (model, split), reused by every attack
            ctx.clean[key] = _predict(model, data.images)
            _check_outputs(ctx.clean[key], len(data), len(card.classes), card.image_size)
        clean = ctx.clean[key]
        samples = {"index": torch.arange(len(data)), "label": data.labels}
        metrics: dict[str, Measure] = {}
        if "logits" in clean:
            clean_ok = correct(clean["logits"], data.labels)
            samples["clean_pred"] = clean["logits"].argmax(1)
            metrics["accuracy"] = proportion(clean_ok)
            metrics["balanced_accuracy"] = balanced(clean_ok, data.labels)
            for c, name in enumerate(card.classes):  # each class's recall, over its own images
                if (data.labels == c).any():
                    metrics[f"recall_{name}"] = proportion(clean_ok[data.labels == c])
        if "mask" in clean and data.masks is not None:  # real splits may come without masks
            for k, v in segmentation_scores(clean["mask"], data.masks.long()).items():
                samples[f"clean_{k}"] = v
                metrics[k] = mean(v)
        if cell.is_clean:
            checked = min(len(data), CHECK_IMAGES)
            metrics.update({k: Measure(v, checked, math.nan, math.nan)
                            for k, v in model_checks(model, data.images, data.labels, data.masks).items()})
            passes["forward_passes"] = len(data)
        else:
            metrics, passes = _attack_metrics(cell, model, data, clean, samples)
    except ThreatModelViolation as exc:
        return _failed(cell, card, ctx, "invalid", f"threat model violated: {exc}", t0)
    except Exception as exc:  # a failing model or attack plugin must not stop the run
        logger.exception("cell %s failed", cell.id)
        return _failed(cell, card, ctx, "failed", f"{type(exc).__name__}: {exc}", t0)
    rows = _rows(cell, card, ctx, metrics, "ok", "", time.perf_counter() - t0, passes)
    return CellResult(cell, "ok", rows, pd.DataFrame({k: v.numpy() for k, v in samples.items()}))


def attack_images(attack: BuiltAttack, images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None,
                  active: torch.Tensor, batch_size: int | None = None, what: str = "attack") -> torch.Tensor:
    """Gives the adversarial images of a split, attacked in chunks (:meth:`BuiltAttack.chunk_size`).

    Passes of at most ``batch_size`` images (default :data:`BATCH_SIZE`); an attack that batches
    itself (AutoAttack) gets the whole split in one call. A chunk that runs out of memory is halved
    and retried, and its passes shrink with it (:func:`map_batches`).
    """
    batch_size = batch_size or BATCH_SIZE
    chunk = attack.chunk_size(batch_size, images[:1].nelement() * images.element_size(), len(images))

    def run(start: int, stop: int) -> torch.Tensor:
        return attack(images[start:stop], labels[start:stop], None if masks is None else masks[start:stop],
                      active[start:stop], batch_size=min(batch_size, stop - start))

    return torch.cat(map_batches(run, len(images), chunk, what))


def _attack_metrics(cell, model, data, clean, samples) -> tuple[dict[str, Measure], dict[str, int]]:
    """Attacks the split and scores the adversarials; gives the metrics and the passes it cost.

    Against ``cls`` only the images still classified correctly are attacked (a miss stays a miss,
    RobustBench's convention); against ``seg`` and ``joint`` every image is.
    """
    spec = ATTACKS.get(cell.attack).spec(cell.eps, cell.target, **cell.params)
    attack = build_attack(spec, model)
    torch.manual_seed(cell.seed)
    clean_ok = correct(clean["logits"], data.labels) if "logits" in clean else None
    active = clean_ok if cell.target == "cls" else torch.ones(len(data), dtype=torch.bool)
    masks = data.masks

    adv_images = attack_images(attack, data.images, data.labels, masks, active, what=f"{cell.attack} on {cell.model}")
    adv = _predict(model, adv_images)
    # the verdicts are checked as the clean outputs are: a model that breaks on adversarial inputs fails the cell
    if set(adv) != set(clean):
        raise ValueError(f"the model returned heads {sorted(adv)} on the adversarial images, {sorted(clean)} on the clean ones")
    _check_outputs(adv, len(data), *_head_sizes(clean))
    metrics: dict[str, Measure] = {}
    if "logits" in adv:
        adv_ok = correct(adv["logits"], data.labels)
        robust = clean_ok & adv_ok  # RobustBench's convention: a miss stays a miss
        samples["adv_pred"] = adv["logits"].argmax(1)
        samples["robust"] = robust
        metrics["robust_accuracy"] = proportion(robust)
        metrics["attack_success_rate"] = proportion(~adv_ok[clean_ok])  # of the images right before the attack
    if "mask" in adv and data.masks is not None:
        for k, v in segmentation_scores(adv["mask"], data.masks.long()).items():
            samples[f"adv_{k}"] = v
            metrics[k] = mean(v)
    for norm, v in perturbation_norms(data.images, adv_images).items():
        samples[f"perturbation_{norm}"] = v
        metrics[f"mean_perturbation_{norm}"] = mean(v)
    fwd, bwd = attack.passes
    return metrics, {"forward_passes": fwd + len(data), "backward_passes": bwd}


COLUMNS = ["run_id", "cell_id", "model", "family", "encoder", "recipe", "model_seed", "split",
           "domain", "corruption", "severity", "attack", "backend", "target", "norm", "eps", "seed", "metric", "value",
           "n", "ci_low", "ci_high", "status", "reason", "time_s", "forward_passes", "backward_passes", "finished_at",
           "labelled_images", "masked_images", "model_params", "params", "model_sha256", "git_sha",
           "v_robustbench_wbc", "v_torch", "v_timm", "v_torchattacks", "v_art", "v_pyautoattack", *provenance.COLUMNS]


def cell_provenance(cell: Cell, image_size: int, versions: dict[str, str] | None = None) -> provenance.Provenance:
    """Gives what the current code records as the cell's provenance (:mod:`~robustbench_wbc.bench.provenance`)
    for a model of ``image_size`` pixels, with this process's library ``versions`` by default."""
    return provenance.cell_provenance(cell, image_size, versions or provenance.library_versions(), BATCH_SIZE)


def _rows(cell: Cell, card: ModelCard, ctx: Context, metrics: dict[str, Measure], status: str,
          reason: str, time_s: float, passes: dict[str, int] | None = None) -> pd.DataFrame:
    split = SPLITS.get(cell.split)
    synth = split.synth
    base = {
        "run_id": ctx.run_id, "cell_id": cell.id, "model": base_id(cell.model), "family": card.family,
        "encoder": card.encoder, "recipe": card.recipe, "model_seed": card.seed, "split": cell.split,
        "domain": split.domain, "corruption": synth.corruption if synth and synth.corruption else "none",
        "severity": synth.severity if synth else 0, "attack": cell.attack, "backend": cell.backend,
        "target": cell.target, "norm": cell.norm, "eps": float(cell.eps), "seed": cell.seed,
        "status": status, "reason": reason, "time_s": round(time_s, 4),
        **(passes or {"forward_passes": 0, "backward_passes": 0}),
        "finished_at": pd.Timestamp.now(tz="UTC"),
        "labelled_images": card.labelled_images, "masked_images": card.masked_images, "model_params": card.params,
        "params": ";".join(f"{k}={v}" for k, v in sorted(cell.params.items())),
        "model_sha256": cell.model_sha256, "git_sha": ctx.git_sha,
        **{f"v_{k}": v for k, v in ctx.versions.items()},
        **cell_provenance(cell, card.image_size, ctx.versions).columns(),
    }
    nan = Measure(math.nan, cell.n_images, math.nan, math.nan)
    items = list(metrics.items()) if metrics else [("status", nan)]
    # column by column: half the cost of a dict per row, which a matrix of many small cells pays per cell
    cols = {k: [v] * len(items) for k, v in base.items()}
    cols.update(metric=[k for k, _ in items], value=[float(m.value) for _, m in items], n=[int(m.n) for _, m in items],
                ci_low=[float(m.ci_low) for _, m in items], ci_high=[float(m.ci_high) for _, m in items])
    return pd.DataFrame({c: cols[c] for c in COLUMNS})


def _failed(cell, card, ctx, status, reason, t0) -> CellResult:
    logger.error("cell %s (%s on %s, %s eps=%.5g) %s: %s", cell.id, cell.model, cell.split,
                 cell.attack, cell.eps, status, reason)
    return CellResult(cell, status, _rows(cell, card, ctx, {}, status, reason,
                                          time.perf_counter() - t0), None, reason)


def lost_cell(cell: Cell, reason: str, ctx: Context, time_s: float = 0.0) -> CellResult:
    """Gives a ``failed`` result for a cell that gave no result of its own (its worker died, or it
    raised outside :func:`evaluate_cell`): its rows, from the model's card in this process's cache."""
    card = read_card(cell.model)
    if card is None:
        raise CheckpointError(f"cell {cell.id} failed ({reason}), and {cell.model!r} has no card in "
                              f"this process's cache to record it with")
    return _failed(cell, card, ctx, "failed", reason, time.perf_counter() - time_s)


class Executor(Protocol):
    """Evaluates cells and gives their results, in any order, each as soon as it is done.

    A result is committed by the caller (:func:`execute`), never by the executor, so a cell is
    stored once however often an executor had to retry it.
    """

    def map(self, cells: Sequence[Cell]) -> Iterable[CellResult]: ...


class LocalExecutor:
    """Runs cells one after another in this process, keeping models and splits loaded (on ``device``)."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.ctx = Context(device=torch.device(device))

    def map(self, cells: Iterable[Cell]) -> Iterable[CellResult]:
        for cell in cells:
            yield evaluate_cell(cell, self.ctx)


@dataclass
class RunSummary:
    """What a run did: cells planned, skipped (already done), ok, failed or invalid, and stale.

    ``stale`` counts the cells stored ``ok`` by other code (another fingerprint, or none: an older
    store), recomputed by this run; ``stale_reasons`` says why, a phrase per differing component
    with the number of stale cells it applies to (a cell that differs in two components counts
    under both), e.g. ``{"engine 3→4": 40, "torch 2.14.0→2.14.1": 12, "no fingerprint (older store)": 7}``.
    """

    planned: int = 0
    skipped: int = 0  # done before the run began, or by another writer of the store while it ran
    ok: int = 0
    failed: list[CellResult] = field(default_factory=list)
    stale: int = 0
    stale_reasons: dict[str, int] = field(default_factory=dict)


def ensure_trained(models: Sequence[str], on_train: Callable[[str], object] | None = None,
                   device: torch.device | str = "cpu") -> dict[str, ModelCard]:
    """Gives each model's card, training (and caching) the models not trained yet, on ``device``."""
    cards = {}
    for m in models:
        MODELS.get(m)
        card = read_card(m)
        if card is None:
            progress = on_train(m) if on_train else None
            _, card = load_model(m, progress=progress, device=device)
        cards[m] = card
    return cards


def run(models: Sequence[str], splits: Sequence[str], attacks: Sequence[str], out: str | Path,
        eps: Sequence[float] | None = None, n_images: int | None = 256, seed: int = 0,
        executor: Executor | None = None,
        on_train: Callable[[str], object] | None = None,
        on_cell: Callable[[CellResult, int, int], None] | None = None,
        targets: Sequence[str] | None = None, device: torch.device | str = "cpu",
        precision: str = "fp32") -> RunSummary:
    """Runs the matrix models × splits × attacks × eps (× targets) into the store at ``out``.

    Cells already stored with status ``ok`` are skipped; each finished cell is committed
    atomically, so a killed run loses only the cells in flight. Models train and run on ``device``
    (unless an ``executor`` says otherwise); they are trained here, before any cell is handed to
    the ``executor``.
    """
    cards = ensure_trained(models, on_train, device)
    cells = plan(models, splits, attacks, eps, n_images, seed, cards, targets, precision)
    return execute(ResultStore(out), cells, executor or LocalExecutor(device), on_cell)


def plan_profile(profile, model_ids: Sequence[str], cards: dict[str, ModelCard], seed: int = 0,
                 n_images: int | None = None, precision: str = "fp32") -> list[Cell]:
    """Gives the cells of a run profile: clean cells on all its splits, then each attack at its own budgets."""
    n = profile.n_images if n_images is None else n_images
    cells = {c.id: c for c in plan(model_ids, profile.splits, [], None, n, seed, cards)}
    for attack, eps in profile.attacks.items():
        for c in plan(model_ids, profile.attack_splits, [attack], list(eps) or None, n, seed, cards,
                      precision=precision):
            cells.setdefault(c.id, c)
    return list(cells.values())


def _image_sizes(cells: Sequence[Cell], executor: Executor) -> dict[str, int]:
    """Gives each model's image size: from the executor's loaded models (a custom model's card is only
    there), else from its card in the cache."""
    loaded = getattr(getattr(executor, "ctx", None), "models", {})
    sizes: dict[str, int] = {}
    for model in {c.model for c in cells}:
        card = loaded[model][1] if model in loaded else read_card(model)
        if card is None:
            raise CheckpointError(f"{model!r} has no card in this process's cache (is it trained?): its cells' "
                                  f"fingerprints need its image size")
        sizes[model] = card.image_size
    return sizes


def execute(store: ResultStore, cells: Sequence[Cell], executor: Executor | None = None,
            on_cell: Callable[[CellResult, int, int], None] | None = None) -> RunSummary:
    """Evaluates the ``cells`` not yet done in ``store``, committing each as it finishes; exports the table.

    A cell is done when it is stored ``ok`` with the fingerprint the current code gives it
    (:mod:`~robustbench_wbc.bench.provenance`: code and library versions, data, precision, batching);
    one stored ``ok`` with another fingerprint, or none (an older store), is stale: recomputed, its
    new result replacing the old under the same cell id, and counted in the summary's ``stale``.
    Only this function writes the store, one cell as each result arrives, whatever the executor:
    a killed run loses only the cells in flight.
    """
    executor = executor or LocalExecutor()
    # the versions the executor's rows record (a Dask worker records its own: if they differ, its cells read as stale)
    versions = getattr(getattr(executor, "ctx", None), "versions", None) or provenance.library_versions()
    sizes = _image_sizes(cells, executor)
    todo: list[Cell] = []
    stale, reasons = 0, Counter()
    for c in cells:
        status, stored_fp = store.stored(c.id)  # two columns of one file: a resumed run asks this of every cell
        if status != "ok":
            todo.append(c)
            continue
        current = cell_provenance(c, sizes[c.model], versions)
        if stored_fp == current.fingerprint:
            continue
        todo.append(c)
        stale += 1
        reasons.update(provenance.stale_reasons(c, current, store.provenance(c.id) if stored_fp else None))
    summary = RunSummary(planned=len(cells), skipped=len(cells) - len(todo), stale=stale, stale_reasons=dict(reasons))
    if stale:
        logger.info("recomputing %d cells computed by other code: %s", stale,
                    ", ".join(f"{k} ({v})" for k, v in reasons.most_common()))
    # group by model and split so a worker reuses what it loaded; clean cells first in each group
    todo.sort(key=lambda c: (c.model, c.split, not c.is_clean, -c.cost()))
    for i, result in enumerate(executor.map(todo), 1):
        if not store.put(result.cell.id, result.rows, result.samples):
            logger.info("cell %s: another writer stored it ok meanwhile; its %s here is dropped", result.cell.id,
                        result.status)
            summary.skipped += 1
        elif result.status == "ok":
            summary.ok += 1
        else:
            summary.failed.append(result)
        if on_cell:
            on_cell(result, i, len(todo))
    store.export()
    return summary
