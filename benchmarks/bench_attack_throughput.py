"""PGD-L∞ throughput side by side: the suite's PGD cell (fp32 and bf16), torchattacks, ART, a bare loop. Not a test.

    .venv/bin/python benchmarks/bench_attack_throughput.py                 # 256 images, median of 3
    .venv/bin/python benchmarks/bench_attack_throughput.py --quick         # a smoke run: 64 images, 1 repeat
    .venv/bin/python benchmarks/bench_attack_throughput.py --zoo --out throughput.md
    .venv/bin/python benchmarks/bench_attack_throughput.py --explore       # + ours without copy or rewrites, bare loops
    .venv/bin/python benchmarks/bench_attack_throughput.py --device cuda   # every variant on the GPU

On the same model, images (SynthWBC ``synth:test``, 64 px) and budget (eps 8/255, 10 steps of eps/4
from a random start, batches of 64), in one process:

1. **ours**: the runner's PGD cell path, ``build_attack(ATTACKS.get("pgd").spec(eps, "cls"), model)``
   called as ``attack(x, y, None, active=clean_correct)`` per batch (only the clean-correct images
   are attacked; the engine drops an image once it is misclassified), then the fp32 verdict pass;
2. **ours, bf16**: the same with ``precision="bf16"`` (bfloat16 autocast, channels-last crafting);
3. **torchattacks** ``PGD(HeadView(model, "logits"), eps, alpha=eps/4, steps=10, random_start=True)``
   on every image, as users run it, then the verdict pass;
4. **ART** ``ProjectedGradientDescent`` on a ``PyTorchClassifier`` (clip_values (0, 1),
   num_random_init=1, batch 64), weights not frozen, as users run it, then the verdict pass;
5. **bare loop**: 10 steps, input gradient only (weights frozen), the fp32 reference, then the verdict pass.

Throughput is in **image-steps/s** = N × 10 / wall time: the nominal work, so an early exit shows as
a higher throughput. Each variant's fraction of the fp32 roofline is given beside it: the CPU's fp32
GFLOP/s (the better of ``torch.mm`` and oneDNN's 3×3 convolutions in channels-last: on AMD CPUs
MKL's sgemm behind ``torch.mm`` runs at about half the speed the convolutions reach) over the
model's GFLOP per image-step (a forward pass and the input gradient, weights frozen, counted by
``torch.utils.flop_counter``: twice the forward pass's). Every variant's adversarials are checked
against the threat model (outside the time), and its robust accuracy is ``clean-correct & still
correct`` (RobustBench's convention, as the runner scores it). "verdicts ≠" is the fraction of images
whose verdict (robust or not) differs from ours in fp32; the noise floor beside it is the same
fraction between two fp32 runs of ours with different seeds.

Two models: a timm ``resnet18`` (5 classes, normalisation as its first layer, returning
``{"logits": ...}``) trained plainly on SynthWBC (1,450 images of ``synth:train``, early stopping on
``synth:val``), and the same fine-tuned with FGSM-RS at 8/255 (so that robust accuracy at 8/255 is
clearly above 0). Both are trained on first use with the suite's own ``fit`` (about a minute each
on 2 cores, plus half a minute to generate the images the first time) and cached under
``$WBC_ROBUST_HOME/bench/attack_throughput`` (``--cache DIR``; ``--retrain``). ``--zoo`` adds the
zoo's ``resnet10t_cls`` and ``resnet10t_cls_at`` (from the model cache, trained there on first use).
Each variant first runs once, untimed, on one batch (oneDNN builds its kernels on first use; the
suite makes its crafting copy of a model once, as the runner does for all of a model's cells).
Repeats interleave the variants (a new order each repeat) and reseed before each run, so every repeat does
the same work; the median time is reported. On a machine shared with another process, ``--threads 1``
keeps OpenMP threads from fighting it for the cores and ``--clock cpu`` times this process's CPU
time instead of the wall clock (steadier there).
``--device cuda`` (or ``auto``) runs every variant, the verdict pass and the limits on the GPU (the
models are trained on the CPU, then moved; ART gets ``device_type="gpu"``; times are read after
``torch.cuda.synchronize``); the CPU is the default.
``--explore`` adds the suite's cell crafting on the model itself in fp32 and in bf16 (no crafting
copy: what the copy gives, ``attacks/fusion.py``), on a copy whose convolutions are not rewritten
(BatchNorm folded only: what the stem and whole-map rewrites give), the suite's cell without
predicted exits (every active image gets a forward and a backward pass each step,
``engine.PREDICT_EXITS = False``: what the forward-only probe of the images whose damage trend
says they are fooled gives), and variants of the bare loop: fp32 on channels-last, with early
exit, bf16 autocast on channels-last.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from robustbench_wbc.attacks import ATTACKS, build_attack, engine, fusion  # noqa: E402
from robustbench_wbc.attacks.base import check_threat_model  # noqa: E402
from robustbench_wbc.bench.runner import attack_images  # noqa: E402
from robustbench_wbc.models.networks import HeadView, Normalize  # noqa: E402

VARIANTS = ("ours", "ours-bf16", "torchattacks", "art", "bare")
# the goals: (variant, model role) -> minimum ratio to torchattacks
SPEED_GOALS = {("ours", "standard"): 2.0, ("ours", "at"): 1.0, ("ours-bf16", "standard"): 3.0,
               ("ours-bf16", "at"): 3.0}
MAX_VERDICT_DIFF = 0.01  # bf16: at most 1 % of the verdicts differ from fp32
ROLES = {"standard": "standard-trained", "at": "adversarially trained"}
# ``cpu``: this process's CPU time, steadier than the wall clock on a machine shared with another job,
# and the same thing as long as torch runs one thread (with more, it also counts threads spinning)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CPU = torch.device("cpu")


@dataclass(frozen=True)
class Settings:
    """The attack every variant runs: PGD-L∞, ``steps`` steps of ``rel_step``·eps from a random start."""

    eps: float = 8 / 255
    steps: int = 10
    rel_step: float = 0.25
    batch: int = 64
    seed: int = 0

    @property
    def alpha(self) -> float:
        return self.eps * self.rel_step


# --- the model -------------------------------------------------------------------------------------
class DictNet(nn.Module):
    """A timm classifier under the suite's model contract: [0, 1] images in, ``{"logits": ...}`` out,
    normalisation as the first layer."""

    def __init__(self, arch: str = "resnet18", num_classes: int = 5) -> None:
        super().__init__()
        import timm

        self.normalize = Normalize()
        self.net = timm.create_model(arch, pretrained=False, num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.net(self.normalize(x))}


def recipes(image_size: int = 64):
    """The two training runs: plain, then an FGSM-RS fine-tune of it at 8/255 (about a minute each on 2 cores)."""
    from robustbench_wbc.models.zoo import Recipe

    std = Recipe("bench-resnet18", 1450, use_labels=True, use_masks=False, steps=300, batch_size=32, lr=2e-3,
                 val_images=250, val_every=50, patience=3, image_size=image_size)
    at = Recipe("bench-resnet18-at", 1450, use_labels=True, use_masks=False, steps=200, batch_size=32, lr=1e-3,
                val_images=250, val_every=50, patience=3, image_size=image_size, adv_train="fgsm-rs", adv_eps=8 / 255)
    return std, at


def _key(*parts) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def trained_pair(cache: Path, arch: str = "resnet18", image_size: int = 64, retrain: bool = False,
                 log: Callable[[str], None] = print) -> tuple[nn.Module, nn.Module, dict[str, dict]]:
    """Gives the standard and the adversarially trained model (eval mode), trained on first use and cached.

    The cache file's name carries a digest of the architecture, the recipe and the training data's
    card: a changed recipe or generator trains anew.
    """
    from robustbench_wbc.data.splits import SPLITS
    from robustbench_wbc.models.train import fit

    std_r, at_r = recipes(image_size)
    data_key = SPLITS.get(std_r.train_split).synth.key(image_size)
    keys = {"standard": _key(arch, dataclasses.asdict(std_r), data_key)}
    keys["at"] = _key(keys["standard"], dataclasses.asdict(at_r))
    cache.mkdir(parents=True, exist_ok=True)
    models, info = {}, {}
    train = val = None
    for role, r in (("standard", std_r), ("at", at_r)):
        path = cache / f"{arch}-{role}-{keys[role]}.pt"
        model = DictNet(arch)
        if path.exists() and not retrain:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(ckpt["state_dict"])
            info[role] = {**ckpt["info"], "cached": str(path)}
        else:
            if train is None:
                log(f"loading {std_r.train_images} images of {std_r.train_split} and {std_r.val_images} of synth:val")
                train = SPLITS.get(std_r.train_split).load(std_r.train_images, image_size)
                val = SPLITS.get("synth:val").load(std_r.val_images, image_size)
            if role == "at":
                model.load_state_dict(models["standard"].state_dict())
            log(f"training {arch} ({role}: recipe {r.name}, {r.steps} steps of {r.batch_size}) ...")
            torch.manual_seed(0)
            t0 = time.perf_counter()
            metrics, step = fit(model, train, r, torch.Generator().manual_seed(0), val, r.name)
            info[role] = {"recipe": r.name, "val": {k: round(v, 4) for k, v in metrics.items()}, "step": step,
                          "train_time_s": round(time.perf_counter() - t0, 1)}
            tmp = path.with_suffix(".tmp")
            torch.save({"state_dict": model.state_dict(), "info": info[role]}, tmp)
            tmp.replace(path)
            log(f"  {role}: {info[role]}; saved {path}")
        models[role] = model.eval()
    return models["standard"], models["at"], info


# --- the variants ----------------------------------------------------------------------------------
def predict(model: nn.Module, images: torch.Tensor, batch: int) -> torch.Tensor:
    """The fp32 logits in eval mode, by batches."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(images[i:i + batch])["logits"].float() for i in range(0, len(images), batch)])


def verdicts(model: nn.Module, adv: torch.Tensor, labels: torch.Tensor, clean_ok: torch.Tensor, batch: int
             ) -> torch.Tensor:
    """The verdict pass: robust = right before the attack and still right after it (fp32)."""
    return clean_ok & (predict(model, adv, batch).argmax(1) == labels)


Passes = tuple[int, int]  # the attack's forward and backward passes (images), the verdict pass not included


def run_ours(model, images, labels, clean_ok, s: Settings, precision: str = "fp32", copy: bool = True,
             rewrite: bool = True, predict: bool = True) -> tuple[torch.Tensor, Passes]:
    """The runner's PGD cell: only the clean-correct images are attacked, in the runner's chunks, passes of ``batch``.

    ``copy=False``: crafting on the model itself, not on its crafting copy (``attacks/fusion.py``: BatchNorm
    folded in fp32, weights cast once in bf16, convolutions rewritten); ``rewrite=False``: a copy without
    the convolution rewrites (``fusion.REWRITE_CONVS``); ``predict=False``: no forward-only probe of the
    images predicted to be misclassified (``engine.PREDICT_EXITS``).
    """
    spec = ATTACKS.get("pgd").spec(s.eps, "cls", steps=s.steps, rel_stepsize=s.rel_step, random_start=True,
                                   precision=precision)
    attack = build_attack(spec, model)
    switches = fusion.ENABLED, fusion.REWRITE_CONVS, engine.PREDICT_EXITS
    fusion.ENABLED, fusion.REWRITE_CONVS, engine.PREDICT_EXITS = copy, rewrite, predict
    try:
        return attack_images(attack, images, labels, None, clean_ok, batch_size=s.batch), attack.passes
    finally:
        fusion.ENABLED, fusion.REWRITE_CONVS, engine.PREDICT_EXITS = switches


def run_torchattacks(model, images, labels, clean_ok, s: Settings) -> tuple[torch.Tensor, Passes]:
    """torchattacks' PGD on every image, as its README runs it (passes: one forward and backward per step)."""
    import torchattacks

    attack = torchattacks.PGD(HeadView(model, "logits"), eps=s.eps, alpha=s.alpha, steps=s.steps, random_start=True)
    adv = torch.cat([attack(images[i:i + s.batch], labels[i:i + s.batch]) for i in range(0, len(images), s.batch)])
    return adv, (len(images) * s.steps, len(images) * s.steps)


def run_art(model, images, labels, clean_ok, s: Settings) -> tuple[torch.Tensor, Passes]:
    """ART's PGD on a PyTorchClassifier, weights not frozen (ART then computes their gradients too:
    its backward passes cost 1.5× the others')."""
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    n_classes = int(predict(model, images[:1], 1).shape[1])
    clf = PyTorchClassifier(model=HeadView(model, "logits"), loss=nn.CrossEntropyLoss(),
                            input_shape=tuple(images.shape[1:]), nb_classes=n_classes, clip_values=(0.0, 1.0),
                            device_type="gpu" if images.is_cuda else "cpu")
    pgd = ProjectedGradientDescent(clf, norm=np.inf, eps=s.eps, eps_step=s.alpha, max_iter=s.steps,
                                   num_random_init=1, batch_size=s.batch, verbose=False)
    adv = torch.from_numpy(pgd.generate(x=images.cpu().numpy(), y=labels.cpu().numpy())).to(images.device)
    model.zero_grad(set_to_none=True)  # ART leaves weight gradients behind
    return adv, (len(images) * s.steps, len(images) * s.steps)


def run_bare(model, images, labels, clean_ok, s: Settings, bf16: bool = False, early_exit: bool = False,
             cl: bool = False) -> tuple[torch.Tensor, Passes]:
    """The reference: a plain loop, input gradient only, every image (or, with ``early_exit``, the
    clean-correct ones until each is misclassified); ``bf16``: autocast on channels-last; ``cl``:
    channels-last in fp32."""
    cl = cl or bf16
    grads = [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)
    if cl:
        model.to(memory_format=torch.channels_last)
    out, fwd = [], 0
    try:
        for i in range(0, len(images), s.batch):
            x0, y = images[i:i + s.batch], labels[i:i + s.batch]
            adv = x0.clone()
            idx = clean_ok[i:i + s.batch].nonzero().flatten() if early_exit else torch.arange(len(x0))
            x0a, ya = x0[idx], y[idx]
            if cl:
                x0a = x0a.contiguous(memory_format=torch.channels_last)
            lo, hi = (x0a - s.eps).clamp_min(0), (x0a + s.eps).clamp_max(1)
            x = torch.minimum(torch.maximum(x0a + torch.empty_like(x0a).uniform_(-s.eps, s.eps), lo), hi)
            for _ in range(s.steps):
                if not len(idx):
                    break
                x.requires_grad_(True)
                fwd += len(x)
                with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = model(x)["logits"]
                (g,) = torch.autograd.grad(F.cross_entropy(logits.float(), ya, reduction="sum"), x)
                x = x.detach()
                if early_exit:  # fooled images are done: keep them, attack the rest
                    fooled = logits.detach().argmax(1) != ya
                    adv[idx[fooled]] = x[fooled]
                    keep = ~fooled
                    idx, x, g, x0a, ya, lo, hi = idx[keep], x[keep], g[keep], x0a[keep], ya[keep], lo[keep], hi[keep]
                x = torch.minimum(torch.maximum(x + s.alpha * g.sign(), lo), hi)
            adv[idx] = x
            out.append(adv)
    finally:
        for p, g in zip(model.parameters(), grads):
            p.requires_grad_(g)
        if cl:
            model.to(memory_format=torch.contiguous_format)
    return torch.cat(out), (fwd, fwd)


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    fn: Callable  # (model, images, labels, clean_ok, settings) -> (adversarial images, passes)
    precision: str = "fp32"


def variants(explore: bool = False) -> dict[str, Variant]:
    """The variants measured: the issue's five, and with ``explore`` ours without its copy, rewrites or predicted
    exits, and the bare loop's variants."""
    v = {
        "ours": Variant("ours", "ours: `build_attack(pgd)`, fp32", run_ours),
        "ours-bf16": Variant("ours-bf16", "ours: `build_attack(pgd, precision=bf16)`", partial(run_ours, precision="bf16"),
                             "bf16"),
        "torchattacks": Variant("torchattacks", "torchattacks `PGD`", run_torchattacks),
        "art": Variant("art", "ART `ProjectedGradientDescent`", run_art),
        "bare": Variant("bare", "bare torch loop (weights frozen)", run_bare),
    }
    if explore:
        v.update({
            "ours-nocopy": Variant("ours-nocopy", "ours, fp32, on the model itself (no crafting copy)",
                                   partial(run_ours, copy=False)),
            "ours-unrewritten": Variant("ours-unrewritten", "ours, fp32, BatchNorm folded, convolutions not rewritten",
                                        partial(run_ours, rewrite=False)),
            "ours-bf16-nocopy": Variant("ours-bf16-nocopy", "ours, bf16, on the model itself (no crafting copy)",
                                        partial(run_ours, precision="bf16", copy=False), "bf16"),
            "ours-unpredicted": Variant("ours-unpredicted", "ours, fp32, exits not predicted",
                                        partial(run_ours, predict=False)),
            "bare-cl": Variant("bare-cl", "bare loop, fp32 on channels-last", partial(run_bare, cl=True)),
            "bare-exit": Variant("bare-exit", "bare loop + early exit (clean-correct only)",
                                 partial(run_bare, early_exit=True)),
            "bare-bf16": Variant("bare-bf16", "bare loop, bf16 autocast + channels-last", partial(run_bare, bf16=True),
                                 "bf16"),
        })
    return v


# --- measuring -------------------------------------------------------------------------------------
def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5, clock: str = "wall",
                device: torch.device = CPU) -> float:
    """Gives the best GFLOP/s of an n×n ``torch.mm`` in ``dtype`` (after one warm-up). In fp32 on a CPU
    this is the BLAS's sgemm (MKL), which on AMD CPUs may not use AVX-512: see :func:`conv_peak`."""
    a, b = torch.randn(n, n).to(device, dtype), torch.randn(n, n).to(device, dtype)
    return _best_gflops(lambda: torch.mm(a, b), 2 * n ** 3, repeats, clock, device)


def conv_peak(dtype: torch.dtype = torch.float32, repeats: int = 5, clock: str = "wall",
              device: torch.device = CPU) -> float:
    """Gives the best GFLOP/s of oneDNN's 3×3 convolutions in channels-last (64 channels at 32×32 and
    256 at 8×8, batch 64: the shapes of a ResNet-18 at 64 px), counted as 2·MACs. The convolutions
    are the work of an attack step; on a CPU where the BLAS runs fp32 at half speed, this is the
    fp32 limit that counts."""
    best = 0.0
    for c, hw in ((64, 32), (256, 8)):
        x = torch.randn(64, c, hw, hw).to(device, dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(c, c, 3, 3).to(device, dtype).contiguous(memory_format=torch.channels_last)
        best = max(best, _best_gflops(lambda x=x, w=w: F.conv2d(x, w, padding=1), 2 * 64 * c * c * 9 * hw * hw,
                                      repeats, clock, device))
    return best


def _best_gflops(fn: Callable[[], object], flops: float, repeats: int, clock: str,
                 device: torch.device = CPU) -> float:
    now, best = _common.timer(device, CLOCKS[clock]), 0.0
    with torch.no_grad():
        fn()  # warm-up
        for _ in range(repeats):
            t0 = now()
            fn()
            best = max(best, flops / max(now() - t0, 1e-9) / 1e9)
    return best


def peaks(clock: str = "wall", device: torch.device = CPU) -> dict[str, float]:
    """Gives the fp32 and bf16 limits (GFLOP/s) on ``device``: ``torch.mm``, 3×3 convolutions, and ``fp32``,
    the better of the two fp32 figures, which the roofline uses."""
    out = {f"{t} {op}": fn(dtype, clock=clock, device=device)
           for t, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
           for op, fn in (("mm", matmul_peak), ("conv", conv_peak))}
    out["fp32"] = max(out["fp32 mm"], out["fp32 conv"])
    return out


def model_gflop(model: nn.Module, image: torch.Tensor) -> tuple[float, float]:
    """Gives the GFLOP of one image's forward pass, and of one attack step (forward + input gradient,
    weights frozen), as ``torch.utils.flop_counter`` counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    grads = [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)
    try:
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model(image[None])
        forward = fc.get_total_flops() / 1e9
        x = image[None].clone().requires_grad_(True)
        with FlopCounterMode(display=False) as fc:
            F.cross_entropy(model(x)["logits"], torch.zeros(1, dtype=torch.long, device=x.device)).backward()
        step = fc.get_total_flops() / 1e9
    finally:
        for p, g in zip(model.parameters(), grads):
            p.requires_grad_(g)
    return forward, step


@dataclass
class VariantResult:
    variant: Variant
    times: list[float]
    robust: torch.Tensor  # bool per image, from the last repeat
    n_images: int
    steps: int
    passes: Passes = (0, 0)

    @property
    def work(self) -> int:
        """Forward and backward passes, the verdict pass's included: the FLOPs in units of a forward
        pass (an input gradient costs as many FLOPs as the forward pass; ART's, with weight
        gradients, 1.5 times that: not counted here)."""
        return self.passes[0] + self.passes[1] + self.n_images

    @property
    def median(self) -> float:
        return _common.Timing(self.times).median

    @property
    def spread(self) -> float:
        return _common.Timing(self.times).spread

    @property
    def image_steps_per_s(self) -> float:
        return self.n_images * self.steps / self.median

    @property
    def robust_accuracy(self) -> float:
        return self.robust.float().mean().item()


@dataclass
class ModelResult:
    name: str
    role: str  # "standard" or "at"
    clean_ok: torch.Tensor
    results: dict[str, VariantResult]
    gflop_forward: float
    gflop_step: float
    noise_floor: float | None = None  # verdicts differing between two fp32 runs of ours (seeds s, s + 1)
    info: dict = field(default_factory=dict)

    @property
    def clean_accuracy(self) -> float:
        return self.clean_ok.float().mean().item()

    def ratio(self, name: str) -> float | None:
        if "torchattacks" not in self.results or name not in self.results:
            return None
        return self.results[name].image_steps_per_s / self.results["torchattacks"].image_steps_per_s

    def ratio_range(self, name: str) -> tuple[float, float] | None:
        """The lowest and highest × torchattacks over the repeats, each repeat's pair of times taken together."""
        if "torchattacks" not in self.results or name not in self.results:
            return None
        pairs = [ta / t for ta, t in zip(self.results["torchattacks"].times, self.results[name].times) if t > 0]
        return (min(pairs), max(pairs)) if pairs else None

    def work_ratio(self, name: str) -> float | None:
        """torchattacks' work ÷ this variant's: its × torchattacks at torchattacks' speed per pass."""
        if "torchattacks" not in self.results or name not in self.results or not self.results[name].work:
            return None
        return self.results["torchattacks"].work / self.results[name].work

    def verdict_diff(self, name: str) -> float | None:
        if "ours" not in self.results or name not in self.results:
            return None
        return (self.results[name].robust != self.results["ours"].robust).float().mean().item()


def warm_up(model: nn.Module, images: torch.Tensor, bf16: bool) -> None:
    """One forward and input gradient on a batch (oneDNN builds its kernels on first use), fp32 and bf16."""
    for use_bf16 in (False, True) if bf16 else (False,):
        x = images.clone().requires_grad_(True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = model(x.contiguous(memory_format=torch.channels_last) if use_bf16 else x)["logits"]
        torch.autograd.grad(out.float().sum(), x)


def measure_model(name: str, role: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  s: Settings, chosen: dict[str, Variant], repeats: int = 3, noise_floor: bool = True,
                  clock: str = "wall", log: Callable[[str], None] = print) -> ModelResult:
    """Runs every variant ``repeats`` times (interleaved, reseeded), checks their adversarials against
    the threat model, and gives the times (``clock``: ``wall``, or ``cpu``, this process's CPU time)
    and verdicts."""
    now = _common.timer(images.device, CLOCKS[clock])
    model.eval()
    clean_ok = predict(model, images, s.batch).argmax(1) == labels
    warm_up(model, images[:s.batch], any(v.precision == "bf16" for v in chosen.values()))
    names = list(chosen)
    for k in names:  # once, untimed, on a batch: what each variant sets up once per model (the suite's crafting copy)
        _common.reseed(s.seed)
        chosen[k].fn(model, images[:s.batch], labels[:s.batch], clean_ok[:s.batch], s)
    forward, step = model_gflop(model, images[0])
    times: dict[str, list[float]] = {k: [] for k in names}
    robust: dict[str, torch.Tensor] = {}
    passes: dict[str, Passes] = {}
    for r in range(repeats):
        for k in _common.order(names, r):  # neither first nor after the same variant each repeat
            _common.reseed(s.seed)
            t0 = now()
            adv, passes[k] = chosen[k].fn(model, images, labels, clean_ok, s)
            robust[k] = verdicts(model, adv, labels, clean_ok, s.batch)
            times[k].append(now() - t0)
            check_threat_model(images, adv, "linf", s.eps)
            log(f"  {name} {k}: {times[k][-1]:.2f} s, robust accuracy {robust[k].float().mean().item():.1%}")
    results = {k: VariantResult(chosen[k], times[k], robust[k], len(images), s.steps, passes[k]) for k in names}
    floor = None
    if noise_floor and "ours" in chosen:
        _common.reseed(s.seed + 1)
        other = verdicts(model, run_ours(model, images, labels, clean_ok, s)[0], labels, clean_ok, s.batch)
        floor = (other != robust["ours"]).float().mean().item()
    return ModelResult(name, role, clean_ok, results, forward, step, floor)


# --- the report ------------------------------------------------------------------------------------
def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}%}"


def goal_text(m: ModelResult, name: str) -> str:
    """The issue's goal for this variant on this model, and whether it is met."""
    parts = []
    want = SPEED_GOALS.get((name, m.role))
    ratio = m.ratio(name)
    if want is not None and ratio is not None:
        parts.append(f"≥ {want:.1f}× {'✓' if ratio >= want else '✗'}")
    if name == "ours-bf16" and m.verdict_diff(name) is not None:
        parts.append(f"≠ ≤ {MAX_VERDICT_DIFF:.0%} {'✓' if m.verdict_diff(name) <= MAX_VERDICT_DIFF else '✗'}")
    return ", ".join(parts) or "–"


HEADERS = ("model", "variant", "time (s)", "image-steps/s", "× torchattacks", "passes fwd/bwd", "work ratio",
           "of fp32 roofline", "robust acc.", "verdicts ≠ ours fp32", "spread", "goal")


def table_rows(models: list[ModelResult], peak_fp32: float) -> list[list[str]]:
    rows = []
    for m in models:
        roof = peak_fp32 / m.gflop_step if m.gflop_step else 0.0
        for k, r in m.results.items():
            ratio, work, span = m.ratio(k), m.work_ratio(k), m.ratio_range(k)
            shown = "–" if ratio is None else f"{ratio:.2f}"
            if ratio is not None and span is not None and len(r.times) > 1 and k != "torchattacks":
                shown += f" ({span[0]:.2f}–{span[1]:.2f})"
            rows.append([m.name, r.variant.label, f"{r.median:.2f}", f"{r.image_steps_per_s:.0f}",
                         shown, f"{r.passes[0]}/{r.passes[1]}",
                         "–" if work is None else f"{work:.2f}", _pct(r.image_steps_per_s / roof if roof else None, 0),
                         _pct(r.robust_accuracy), "–" if k == "ours" else _pct(m.verdict_diff(k)),
                         f"{r.spread:.0%}", goal_text(m, k)])
    return rows


def _limit(limits: dict[str, float], dtype: str, device: torch.device = CPU) -> str:
    library = "oneDNN" if device.type == "cpu" else "cuDNN"
    return (f"`torch.mm` 2048² {limits.get(dtype + ' mm', 0):.0f}, {library} 3×3 convolution (channels-last) "
            f"{limits.get(dtype + ' conv', 0):.0f}")


def info_text(info: dict) -> str:
    """How the model came about: its training run's validation scores and time, or its zoo recipe."""
    if "zoo" in info:
        return f"the zoo's, {info['zoo']}"
    val = info.get("val", {})
    parts = [f"validation accuracy {val['accuracy']:.1%}"] if "accuracy" in val else []
    if "robust_accuracy" in val:
        parts.append(f"robust {val['robust_accuracy']:.1%} (torchattacks PGD-5 at the training eps, 100 images)")
    if "train_time_s" in info:
        parts.append(f"trained in {info['train_time_s']:.0f} s" + (" (cached)" if info.get("cached") else ""))
    return ", ".join(parts)


def render(models: list[ModelResult], s: Settings, n_images: int, repeats: int, limits: dict[str, float],
           notes: list[str] = (), clock: str = "wall", device: torch.device = CPU) -> str:
    """The markdown report: machine, settings, limits, then one row per model and variant."""
    lines = ["## PGD-L∞ throughput: the suite against torchattacks, ART and a bare loop", ""]
    lines += _common.machine_lines(("robustbench_wbc", "torch", "timm", "torchattacks", "ART"))
    if device.type == "cuda":
        lines.append(f"- device: {torch.cuda.get_device_name(device)} (every variant, the limits and the verdict "
                     f"pass run there; the models are trained on the CPU)")
    lines += [f"- settings: {n_images} images of synth:test, batch {s.batch}, PGD-L∞ eps {s.eps * 255:g}/255, "
              f"{s.steps} steps of {s.rel_step:g}·eps, random start, seed {s.seed}; median of {repeats} "
              f"(variants interleaved, reseeded each run); {'wall' if clock == 'wall' else 'CPU'} time, including the fp32 "
              f"verdict pass",
              "- limits (GFLOP/s, best of 5): fp32 " + _limit(limits, "fp32", device) + "; bf16 "
              + _limit(limits, "bf16", device)
              + f"; the fp32 roofline uses {limits['fp32']:.0f}"]
    for m in models:
        roof = limits["fp32"] / m.gflop_step
        lines.append(f"- {m.name} ({ROLES[m.role]}): clean accuracy {m.clean_accuracy:.1%}; "
                     f"{m.gflop_forward:.3f} GFLOP forward, {m.gflop_step:.3f} per image-step (forward + input "
                     f"gradient), fp32 roofline {roof:.0f} image-steps/s; fp32 seed-to-seed verdicts ≠ "
                     f"{_pct(m.noise_floor)}" + (f"; {info_text(m.info)}" if m.info else ""))
    lines += [f"- {n}" for n in notes]
    lines += ["", _common.markdown_table(HEADERS, table_rows(models, limits["fp32"]), "ll" + "r" * 9 + "l"), "",
              "image-steps/s = images × steps / time (nominal work: the suite attacks only clean-correct images "
              "and drops each once fooled, so it can pass the roofline); × torchattacks: the ratio of throughputs "
              "(of the medians; in brackets the lowest and highest over the repeats, each repeat's two times "
              "taken together); "
              "passes: the attack's forward and backward passes (images; counted by the suite for ours, nominal for "
              "the libraries); work ratio: torchattacks' passes ÷ the variant's, the verdict pass included and a "
              "backward counted as a forward (equal FLOPs): the × torchattacks the variant reaches at torchattacks' "
              "speed per pass (above it, its passes are faster; ART's backward also computes weight gradients); "
              "verdicts ≠: images whose verdict (robust or not) differs from ours in fp32; spread: (max − min) / "
              "median of the repeats."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-images", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="a smoke run: 64 images, 1 repeat")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: the cores available)")
    p.add_argument("--variants", default="",
                   help=f"comma-separated (default: {', '.join(VARIANTS)}; --explore adds more)")
    p.add_argument("--explore", action="store_true",
                   help="add ours without its crafting copy, convolution rewrites or predicted exits, and the bare loop "
                        "on channels-last, with early exit, in bf16")
    p.add_argument("--zoo", action="store_true", help="add the zoo's resnet10t_cls and resnet10t_cls_at")
    p.add_argument("--zoo-only", action="store_true", help="only the zoo's pair (no resnet18 training)")
    p.add_argument("--cache", type=Path, default=None,
                   help="where the trained resnet18 weights live (default $WBC_ROBUST_HOME/bench/attack_throughput)")
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                   help="wall time, or this process's CPU time (steadier on a shared machine; use with --threads 1)")
    p.add_argument("--device", default="cpu",
                   help="cpu (default), cuda, cuda:N or auto (a GPU where torch sees one): where every variant runs")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    a = p.parse_args(argv)
    if a.quick:
        a.n_images, a.repeats = 64, 1
    from robustbench_wbc import paths
    from robustbench_wbc.data.splits import SPLITS

    device = _common.parse_device(p, a.device)
    if device.type == "cuda" and a.clock == "cpu":
        p.error("--clock cpu times this process on the CPU, not the GPU's work: use the wall clock with --device cuda")
    _common.set_threads(a.threads)  # after the usage errors: a refused command changes nothing

    s = Settings(batch=a.batch, seed=a.seed)
    every = variants(a.explore)
    wanted = [v.strip() for v in a.variants.split(",") if v.strip()] or list(every)
    unknown = [v for v in wanted if v not in every]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {', '.join(every)}" + ("" if a.explore else " (or --explore)"))
    chosen = {k: every[k] for k in wanted}

    pairs: list[tuple[str, str, nn.Module, int, dict]] = []
    if not a.zoo_only:
        cache = a.cache or paths.home() / "bench" / "attack_throughput"
        std, at, info = trained_pair(cache, retrain=a.retrain, log=lambda m: print(m, file=sys.stderr))
        pairs += [("resnet18", "standard", std, 64, info["standard"]), ("resnet18-AT", "at", at, 64, info["at"])]
    if a.zoo or a.zoo_only:
        from robustbench_wbc.models.hub import load_model

        for mid, role in (("resnet10t_cls", "standard"), ("resnet10t_cls_at", "at")):
            model, card = load_model(mid)  # trained on first use (under a minute each), as the runner does
            pairs.append((mid, role, model, card.image_size, {"zoo": f"recipe {card.recipe}"}))

    limits = peaks(a.clock, device)
    results = []
    for name, role, model, size, info in pairs:
        data = SPLITS.get("synth:test").load(a.n_images, size)
        images = data.images.contiguous().to(device)  # the split's tensors are channels-last; every variant gets NCHW
        m = measure_model(name, role, model.to(device), images, data.labels.to(device), s, chosen, a.repeats,
                          clock=a.clock, log=lambda msg: print(msg, file=sys.stderr))
        m.info = info
        results.append(m)
    text = render(results, s, a.n_images, a.repeats, limits, clock=a.clock, device=device)
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
