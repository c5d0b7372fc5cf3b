"""AutoAttack run directly and through the suite, side by side: wall time, robust accuracy, passes. Not a test.

    .venv/bin/python benchmarks/bench_autoattack_cost.py                          # fast version, 64 images, resnet10t_cls
    .venv/bin/python benchmarks/bench_autoattack_cost.py --version standard --n-images 16
    .venv/bin/python benchmarks/bench_autoattack_cost.py --model tiny_cls         # a quick run (a barely trained model)
    .venv/bin/python benchmarks/bench_autoattack_cost.py --device cuda            # both on the GPU

On the same images (SynthWBC ``synth:test``) and the same model, in one process:

(a) ``pyautoattack`` as its README runs it: ``AutoAttack(HeadView(model, "logits"), ...)`` and
    ``run_standard_evaluation``, set as the suite sets it (seed, one restart, ``C − 1`` targets);
(b) the suite's ``build_attack(spec, model)(images, labels, None, active=clean_correct)`` of
    ``autoattack-fast`` (APGD-CE + APGD-T) or ``autoattack`` (standard).

Prints a markdown table: wall time and robust accuracy of each, the forward and backward passes
(images) the suite counted, whether both gave the same adversarial images, and the ratio of the
suite's time to the direct one's. The model is trained on first use (resnet10t_cls: about 20 s) and
cached. One warm-up pass runs first; with ``--repeats`` the two alternate which goes first and the
median time is reported. On a shared machine, ``--threads 1`` keeps OpenMP threads from fighting
other processes for the cores.
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
from robustbench_wbc.attacks import ATTACKS, build_attack, parse_eps
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
    t_direct, t_suite = [], []
    for r in range(a.repeats):
        for which in ("direct", "suite") if r % 2 == 0 else ("suite", "direct"):
            if which == "direct":
                t0 = now()
                adv_direct = run_direct(model, images, labels, eps, a.version, a.seed, n_classes)
                t_direct.append(now() - t0)
            else:
                attack = build_attack(spec, model)
                t0 = now()
                adv_suite = attack(images, labels, None, active=clean)
                t_suite.append(now() - t0)
    with torch.no_grad():
        robust_direct = (model(adv_direct)["logits"].argmax(1) == labels).float().mean().item()
        robust_suite = (model(adv_suite)["logits"].argmax(1) == labels).float().mean().item()
    forward, backward = attack.passes
    td, ts = statistics.median(t_direct), statistics.median(t_suite)

    print(f"## AutoAttack ({a.version}) directly vs through the suite\n")
    print(f"- machine: {_common.cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
          f"device {images.device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"- torch {torch.__version__}, pyautoattack {pyautoattack.__version__}")
    print(f"- model {a.model} ({n_classes} classes, {card.image_size} px), {a.n_images} images of synth:test, "
          f"eps {a.eps} L∞, seed {a.seed}, repeats {a.repeats} (median time)")
    print(f"- clean accuracy {clean.float().mean().item():.1%} ({int(clean.sum())} images attacked)\n")
    print("| run | wall time (s) | robust accuracy | forward passes | backward passes |")
    print("|---|---:|---:|---:|---:|")
    print(f"| pyautoattack directly | {td:.2f} | {robust_direct:.1%} | – | – |")
    print(f"| suite `build_attack({spec.name})` | {ts:.2f} | {robust_suite:.1%} | {forward} | {backward} |")
    print(f"\nsuite / direct time: {ts / td:.3f}; same adversarial images: "
          f"{'yes' if torch.equal(adv_direct, adv_suite) else 'no'}")


if __name__ == "__main__":
    main()
