"""AutoAttack run directly and through the suite, side by side: wall time, robust accuracy, passes. Not a test.

    .venv/bin/python benchmarks/bench_autoattack_cost.py                          # fast version, 64 images, resnet10t_cls
    .venv/bin/python benchmarks/bench_autoattack_cost.py --version standard --n-images 16
    .venv/bin/python benchmarks/bench_autoattack_cost.py --model tiny_cls         # a quick run (a barely trained model)
    .venv/bin/python benchmarks/bench_autoattack_cost.py --device cuda            # both on the GPU

On the same images (SynthWBC ``synth:test``) and the same model, in one process:

(a) ``pyautoattack`` as its README runs it: ``AutoAttack(HeadView(model, "logits"), ...)`` and
    ``run_standard_evaluation``, set as the suite sets it (seed, one restart, ``C − 1`` targets);
(b) the suite's ``build_attack(spec, model)(images, labels, None, active=clean_correct)`` of
    ``autoattack-fast`` (APGD-CE + APGD-T) or ``autoattack`` (standard), which crafts through the
    suite's crafting copy of the model (``attacks/fusion.py``);
(c) the same with crafting copies off (``fusion.ENABLED = False``): AutoAttack on the model itself.

Prints a markdown table: wall time and robust accuracy of each, the fraction of images whose verdict
differs from the direct run's, whether the adversarial images are the same bit for bit, the forward
and backward passes (images) the suite counted, and each run's speed relative to the direct one's.
The model is trained on first use (resnet10t_cls: about 20 s) and cached. One warm-up pass runs
first, and the suite's crafting copy is made before the timing (once per model, as the runner
does); with ``--repeats`` the runs go in a new order each repeat and the median time is reported.
On a shared machine, ``--threads 1`` keeps OpenMP threads from fighting other processes for the cores.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
from pathlib import Path

import pyautoattack
import torch
from pyautoattack import AutoAttack

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import robustbench_wbc.attacks.autoattack_backend  # noqa: F401  (registers the backend)
from robustbench_wbc.attacks import ATTACKS, build_attack, fusion, parse_eps
from robustbench_wbc.data import SPLITS
from robustbench_wbc.models.hub import load_model
from robustbench_wbc.models.networks import HeadView

ATTACK_IDS = {"fast": "autoattack-fast", "standard": "autoattack"}



def run_direct(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, version: str,
               seed: int, n_classes: int) -> torch.Tensor:
    """pyautoattack as a user runs it, with the settings the suite uses."""
    if version == "fast":
        adversary = AutoAttack(HeadView(model, "logits"), attacks=["apgd-ce", "apgd-t"], device=images.device, eps=eps,
                               norm="Linf", seed=seed, version="custom")
        adversary.apgd.n_restarts = 1
    else:
        adversary = AutoAttack(HeadView(model, "logits"), device=images.device, eps=eps, norm="Linf", seed=seed,
                               version="standard")
    adversary.verbose = False
    adversary.apgd_targeted.n_target_classes = adversary.fab.n_target_classes = n_classes - 1
    adv, _ = adversary.run_standard_evaluation(images, labels)
    return adv


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-images", type=int, default=64)
    p.add_argument("--eps", default="8/255", help="L∞ budget (default 8/255)")
    p.add_argument("--version", choices=tuple(ATTACK_IDS), default="fast")
    p.add_argument("--model", default="resnet10t_cls", help="a classifier or multitask model id (tiny_cls for a quick run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="runs of each, alternating which goes first; median time")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto: where both run")
    a = p.parse_args()
    eps = parse_eps(a.eps)[0]
    device = _common.parse_device(p, a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    now = _common.timer(device)

    model, card = load_model(a.model, device=device)
    data = SPLITS.get("synth:test").load(a.n_images, card.image_size)
    images = data.images.contiguous().to(device)  # the split's tensors are channels-last; AutoAttack .view()s gradients
    labels = data.labels.to(device)
    with torch.no_grad():
        logits = model(images)["logits"]
    n_classes = logits.shape[1]
    clean = logits.argmax(1) == labels
    x = images[:1].clone().requires_grad_(True)  # warm-up: one forward and backward
    torch.autograd.grad(model(x)["logits"].sum(), x)

    spec = ATTACKS.get(ATTACK_IDS[a.version]).spec(eps, "cls", seed=a.seed)
    fusion.crafting_copy(model.eval(), images[:8])  # made once per model, as the runner does for all its cells
    runs = {"direct": "pyautoattack directly", "suite": f"suite `build_attack({spec.name})`",
            "suite-nocopy": f"suite `build_attack({spec.name})`, no crafting copy"}
    times: dict[str, list[float]] = {k: [] for k in runs}
    adv: dict[str, torch.Tensor] = {}
    passes: dict[str, tuple[int, int]] = {}
    for r in range(a.repeats):
        for which in _common.order(list(runs), r):
            if which == "direct":
                t0 = now()
                adv[which] = run_direct(model, images, labels, eps, a.version, a.seed, n_classes)
                times[which].append(now() - t0)
                continue
            attack = build_attack(spec, model)
            enabled, fusion.ENABLED = fusion.ENABLED, which == "suite"
            try:
                t0 = now()
                adv[which] = attack(images, labels, None, active=clean)
                times[which].append(now() - t0)
            finally:
                fusion.ENABLED = enabled
            passes[which] = attack.passes
    with torch.no_grad():
        robust = {k: model(v)["logits"].argmax(1) == labels for k, v in adv.items()}
    med = {k: statistics.median(v) for k, v in times.items()}

    print(f"## AutoAttack ({a.version}) directly vs through the suite\n")
    print(f"- machine: {_common.cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
          f"device {images.device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"- torch {torch.__version__}, pyautoattack {pyautoattack.__version__}")
    print(f"- model {a.model} ({n_classes} classes, {card.image_size} px), {a.n_images} images of synth:test, "
          f"eps {a.eps} L∞, seed {a.seed}, repeats {a.repeats} (median time; the runs in a new order each repeat)")
    print(f"- clean accuracy {clean.float().mean().item():.1%} ({int(clean.sum())} images attacked)\n")
    print("| run | wall time (s) | × direct | robust accuracy | verdicts ≠ direct | same images as direct "
          "| forward passes | backward passes |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for k, label in runs.items():
        fwd, bwd = passes.get(k, ("–", "–"))
        diff = (robust[k] != robust["direct"]).float().mean().item()
        print(f"| {label} | {med[k]:.2f} | {med['direct'] / med[k]:.2f} | {robust[k].float().mean().item():.1%} | "
              f"{diff:.1%} | {'yes' if torch.equal(adv[k], adv['direct']) else 'no'} | {fwd} | {bwd} |")
    print("\n× direct: the direct run's median time ÷ this run's. The suite crafts through its crafting copy of the "
          "model (BatchNorm folded, convolutions rewritten, channels-last: `attacks/fusion.py`), the same function up "
          "to float rounding, so its adversarial images may differ from the direct run's in the last bits; verdicts "
          "are the model's own either way. Without the copy the suite runs AutoAttack on the model itself: the same "
          "images as the direct run, bit for bit.")


if __name__ == "__main__":
    main()
