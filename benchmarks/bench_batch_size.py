"""The runner's attack cell at several batch sizes: what batch size suits this CPU. Not a test.

    .venv/bin/python benchmarks/bench_batch_size.py                          # the zoo's resnet10t trio, 512 images
    .venv/bin/python benchmarks/bench_batch_size.py --sizes 32,128 --n-images 128 --repeats 1

Runs the runner's own cell (``evaluate_cell``: the attack on the clean-correct images, the fp32
verdict pass, the output checks) for a PGD-L∞ cell at 8/255 on ``--n-images`` images of
``synth:test``, once per batch size, with the runner's ``BATCH_SIZE`` set to it for the run. The
clean outputs are computed once before the clock starts (the runner caches them per worker), so
the time is the attack cell's. Sizes are interleaved within each repeat (a new order each repeat) and
the median wall time is reported, as image-steps/s (images × steps / time: the nominal work) and as
a ratio to the runner's default batch size. Each model is attacked on the heads the runner attacks
by default (a classifier's ``cls``; a multitask model's ``cls``, ``seg`` and ``joint``).

The last column is the largest difference, across the batch sizes, of any of the cell's metrics
(robust accuracy, Dice, perturbation norms): the engine's random starts are drawn image by image in
order, so the batch size changes the numbers only as far as float rounding moves an iterate (the
convolutions' summation order depends on the batch size). Models come from the zoo's cache (trained on first
use, a few minutes each on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from robustbench_wbc.bench import runner  # noqa: E402
from robustbench_wbc.bench.runner import Context, ensure_trained, evaluate_cell, plan  # noqa: E402

DEFAULT_MODELS = ("resnet10t_cls", "resnet10t_cls_at", "resnet10t_multitask")
DEFAULT_SIZES = (16, 32, 64, 128, 256)


def measure(model_id: str, sizes: list[int], n_images: int, repeats: int, eps: float = 8 / 255) -> list[list[str]]:
    """Gives the table rows of one model: a row per (target, batch size)."""
    cards = ensure_trained([model_id])
    cells = plan([model_id], ["synth:test"], ["pgd"], [eps], n_images, 0, cards)
    ctx = Context()
    default = runner.BATCH_SIZE
    rows = []
    try:
        for cell in cells:
            if cell.is_clean:  # fills the worker's cache of clean outputs, as a run's clean cell does
                evaluate_cell(cell, ctx)
                continue
            steps = cell.params.get("steps", 1)
            times: dict[int, list[float]] = {b: [] for b in sizes}
            outcomes: dict[int, pd.Series] = {}  # metric -> value, per batch size
            for r in range(repeats):
                for b in _common.order(sizes, r):
                    runner.BATCH_SIZE = b
                    t0 = time.perf_counter()
                    res = evaluate_cell(cell, ctx)
                    times[b].append(time.perf_counter() - t0)
                    if res.status != "ok":
                        raise RuntimeError(f"{model_id} {cell.target} at batch {b}: {res.status} {res.reason}")
                    outcomes[b] = res.rows.set_index("metric")["value"]
            med = {b: _common.Timing(t).median for b, t in times.items()}
            ref = outcomes[sizes[0]]
            delta = max(float((v - ref).abs().max(skipna=True)) if len(v) else 0.0 for v in outcomes.values())
            delta = 0.0 if delta != delta else delta  # every value NaN at every size
            best = min(med, key=med.get)
            for b in sizes:
                rows.append([model_id, cell.target, str(b) + (" (default)" if b == default else ""),
                             f"{med[b]:.2f}", f"{n_images * steps / med[b]:.0f}",
                             f"{med[default] / med[b]:.2f}" if default in med else "–",
                             "fastest" if b == best else "", f"{delta:.2g}"])
    finally:
        runner.BATCH_SIZE = default
    return rows


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="comma-separated batch sizes")
    ap.add_argument("--n-images", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: the cores available)")
    args = ap.parse_args(argv)
    try:
        sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        ap.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if not sizes or min(sizes) < 1:
        ap.error(f"--sizes must be positive integers, got {args.sizes!r}")
    _common.set_threads(args.threads)
    rows = []
    for m in [m.strip() for m in args.models.split(",") if m.strip()]:
        print(f"[batch size] {m} …", file=sys.stderr, flush=True)
        rows += measure(m, sizes, args.n_images, args.repeats)
    text = "\n".join([
        "## The runner's PGD cell by batch size", "",
        *_common.machine_lines(("robustbench_wbc", "torch", "timm")),
        f"- settings: PGD-L∞ 8/255, the zoo's preset (10 steps), {args.n_images} images of synth:test, "
        f"median of {args.repeats} (sizes interleaved); the runner's default batch size is {runner.BATCH_SIZE}",
        "",
        _common.markdown_table(("model", "target", "batch", "time (s)", "image-steps/s", "× default", "",
                                "metrics: largest Δ across sizes"), rows, "lllrrrlr"),
    ])
    print(text)
    return text


if __name__ == "__main__":
    main()
