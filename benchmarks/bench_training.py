"""How fast the zoo trains: training images/s per family and encoder, fp32, on this machine.

    .venv/bin/python benchmarks/bench_training.py              # 20 steps per model, median of 3
    .venv/bin/python benchmarks/bench_training.py --steps 5 --repeats 1 --models resnet10t_cls

Each model is built fresh and trained by its own recipe (loss, optimiser, batch size, image
size, adversarial training where the recipe has it) for ``--steps`` steps on its own training
images, without validation; images/s = steps × batch size / wall time. The first step is a
warm-up and not timed. Prints a markdown table (machine, date, versions first).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from robustbench_wbc.data.splits import SPLITS  # noqa: E402
from robustbench_wbc.models.train import fit  # noqa: E402
from robustbench_wbc.models.zoo import MODELS  # noqa: E402

DEFAULT_MODELS = ("resnet10t_cls", "resnet10t_unet", "resnet10t_multitask", "resnet10t_multitask_at",
                  "convnext_multitask", "vit_multitask")


def train_rate(model_id: str, steps: int, repeats: int) -> tuple[float, dict]:
    entry = MODELS.get(model_id)
    r = entry.recipe_spec
    data = SPLITS.get(r.train_split).load(r.train_images, r.image_size)
    short = dataclasses.replace(r, steps=steps)

    def once():
        torch.manual_seed(0)
        model = entry.builder()
        fit(model, data, dataclasses.replace(r, steps=1), torch.Generator().manual_seed(0))  # warm-up
        t = _common.timed(lambda: fit(model, data, short, torch.Generator().manual_seed(0)), repeats=1, seed=None)
        return t.median

    times = [once() for _ in range(repeats)]
    t = sorted(times)[len(times) // 2]
    info = {"family": entry.family, "encoder": entry.encoder, "batch": r.batch_size, "size": r.image_size,
            "adv": r.adv_train or "–", "params": sum(p.numel() for p in entry.builder().parameters())}
    return steps * r.batch_size / t, info


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: the cores available)")
    args = ap.parse_args(argv)
    _common.set_threads(args.threads)
    rows = []
    for m in MODELS.resolve(args.models):
        rate, info = train_rate(m, args.steps, args.repeats)
        rows.append([m, info["family"], info["encoder"], f"{info['params'] / 1e6:.2f} M", info["adv"],
                     f"{info['batch']} × {info['size']} px", f"{rate:.0f}"])
    text = "\n".join([
        "## Training throughput", "",
        *_common.machine_lines(("robustbench_wbc", "torch", "timm")),
        f"- settings: {args.steps} steps per model after one warm-up step, median of {args.repeats}, fp32", "",
        _common.markdown_table(["model", "family", "encoder", "params", "adversarial", "batch", "train images/s"], rows,
                               align="lllrllr"),
    ])
    print(text)
    return text


if __name__ == "__main__":
    main()
