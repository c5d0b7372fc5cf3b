"""Attack specs, the attack registry, eps parsing, pass counting and the threat-model check.

Two kinds of attack are registered:

* **head attacks** — the plugin contract, and how torchattacks, ART and the original AutoAttack
  are wrapped: a factory ``f(model, eps, **params)`` that returns a callable
  ``(images, labels) -> adv_images``, where ``model`` returns one tensor (class logits, or the
  per-pixel mask logits when the attack declares the ``seg`` target, ``labels`` then being the
  masks). A ``torchattacks.Attack`` subclass whose ``__init__`` takes ``(model, eps, ...)`` is such
  a factory.
* **engine attacks** — subclasses of :class:`robustbench_wbc.attacks.engine.Attack`, the suite's
  own: they see the whole dict-returning model and climb the loss of ``cls``, ``seg`` or ``joint``.

:func:`build_attack` turns either into ``attack(images, labels, masks, active=None)``: it attacks
only the ``active`` samples (the ones still robust; the rest are returned unchanged), counts the
model's forward and backward passes, freezes the weights, and checks every output against the
threat model before returning it.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import torch
from torch import nn

from robustbench_wbc.attacks.engine import image_slices
from robustbench_wbc.attacks.fusion import crafting_copy
from robustbench_wbc.device import model_device
from robustbench_wbc.models.networks import HeadView
from robustbench_wbc.registry import Registry

NORMS = ("linf", "l2")
TARGETS = ("cls", "seg", "joint")
# Beyond these, an image is no longer "the same image": refuse unless forced.
SENSIBLE_EPS = {"linf": 64 / 255, "l2": 16.0}
# Default budgets per norm. L∞: RobustBench's 8/255 and the smaller ones where standard-trained
# models break. L2: RobustBench's CIFAR-10 budget is 0.5 on 32×32×3 images; on 64×64×3 the same
# per-pixel change has twice the L2 norm, so 1.0 here corresponds to it, with 0.25 and 0.5 below.
DEFAULT_EPS = {"linf": (1 / 255, 2 / 255, 4 / 255, 8 / 255), "l2": (0.25, 0.5, 1.0)}
# The check's tolerance: 1e-6 of eps, plus the float32 spacing of pixel values near 1 (2**-23),
# which an honest attack computing in float32 can reach when it projects onto the ball.
REL_TOL = 1e-6
FLOAT32_SPACING = 2.0 ** -23

AttackFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# Every attack takes these besides its own parameters (handled by :class:`BuiltAttack`, not the factory).
# ``precision``: the arithmetic the adversarial is *crafted* in. ``bf16`` runs the attack's forward and
# backward passes under bfloat16 autocast with channels-last tensors (about 2× the fp32 speed on a CPU
# with bf16 units, see benchmarks/README.md); the verdicts (clean and adversarial predictions) are
# always taken in fp32 by the runner, and the threat-model check is in float64 either way.
PRECISIONS = ("fp32", "bf16")
UNIVERSAL_PARAMS = {"precision": PRECISIONS}


class ThreatModelViolation(RuntimeError):
    """An adversarial batch outside its budget (norm ball, [0, 1], finite, the clean images' shape and dtype)."""


class EpsError(ValueError):
    """An eps list that cannot be parsed or is out of range."""


@dataclass(frozen=True)
class AttackSpec:
    """One attack configuration: the unit the bench runs and records."""

    name: str
    norm: str
    eps: float
    target: str = "cls"
    backend: str = "wbc"
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class AttackEntry:
    """A registered attack: its factory and what it declares about itself.

    ``engine`` is true for the suite's own attacks (subclasses of ``engine.Attack``), which see the
    whole model; the others see one head. ``base`` names the attack a preset derives from.
    """

    id: str
    factory: Callable
    norm: str
    backend: str
    default_eps: tuple[float, ...]
    targets: tuple[str, ...]
    params: dict
    description: str
    engine: bool = False
    base: str = ""

    def spec(self, eps: float, target: str, **params) -> AttackSpec:
        """Gives the spec of this attack at ``eps`` against the ``target`` head."""
        if target not in self.targets:
            raise ValueError(f"attack {self.id!r} cannot target {target!r}; it supports {self.targets}")
        return AttackSpec(self.id, self.norm, float(eps), target, self.backend, {**self.params, **params})


ATTACKS: Registry[AttackEntry] = Registry("attack", group="robustbench_wbc.attacks",
                                          list_command="attacks list")


def _is_engine(obj) -> bool:
    from robustbench_wbc.attacks.engine import Attack

    return inspect.isclass(obj) and issubclass(obj, Attack)


def register_attack(name: str | None = None, *, norm: str, backend: str | None = None,
                    default_eps: tuple[float, ...] | None = None, targets: tuple[str, ...] | None = None,
                    **params):
    """Registers the decorated factory (or attack class) as an attack.

    Example::

        @register_attack("noise", norm="linf")
        def noise(model, eps, samples=1):
            return lambda images, labels: (images + eps * torch.randn_like(images).sign()).clamp(0, 1)

    Args:
        name: the attack's id; by default the function's (or class's) name.
        norm: the threat model's norm, ``linf`` or ``l2``.
        backend: the library that does the work, recorded with every result (``wbc`` for the
            suite's own engine, ``torchattacks``, ``art``, ``autoattack``; ``plugin`` by default).
        default_eps: the eps values run when the user gives none (default: the norm's).
        targets: the heads it can attack: ``cls`` (class logits), ``seg`` (mask logits; a head
            attack then gets the masks as labels), ``joint`` (engine attacks only). Default:
            ``("cls",)`` for a factory, the class's own ``targets`` for an engine attack.
        **params: default parameters, passed to the factory and recorded with every result.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")

    def deco(fn):
        attack_id = (name or fn.__name__).lower()
        if attack_id == "none":
            raise ValueError("'none' names the clean cells (no attack); give the attack another name")
        engine = _is_engine(fn)
        tgts = tuple(targets or (fn.targets if engine else ("cls",)))
        bad = [t for t in tgts if t not in TARGETS or (t == "joint" and not engine)]
        if bad:
            raise ValueError(f"attack {attack_id!r}: unsupported targets {bad}; a factory takes 'cls' and "
                             f"'seg', an engine attack also 'joint'")
        eps = tuple(DEFAULT_EPS[norm] if default_eps is None else default_eps)
        doc = (fn.__doc__ or "").strip().splitlines()
        ATTACKS.add(attack_id, AttackEntry(attack_id, fn, norm, backend or ("wbc" if engine else "plugin"), eps,
                                           tgts, params, doc[0] if doc else "", engine))
        return fn

    return deco


def lookup(attack_id: str) -> AttackEntry:
    """Gives a registered attack, loading the entry-point plugins only if it is not a built-in.

    The suite's presets are registered while ``robustbench_wbc`` is being imported; loading the
    plugins then would import them before the package they import from is complete.
    """
    entry = ATTACKS._entries.get(attack_id) or ATTACKS._entries.get(attack_id.lower())
    return entry if entry is not None else ATTACKS.get(attack_id)


def derive_attack(attack_id: str, base: str, *, default_eps: tuple[float, ...] | None = None,
                  targets: tuple[str, ...] | None = None, description: str = "", **params) -> AttackEntry:
    """Registers ``attack_id`` as ``base`` with other defaults (a preset); gives the new entry."""
    b = lookup(base)
    tgts = tuple(targets or b.targets)
    if not set(tgts) <= set(b.targets):
        raise ValueError(f"preset {attack_id!r}: its base {base!r} supports only targets {b.targets}")
    unknown = set(params) - set(b.params) - set(UNIVERSAL_PARAMS) if not _accepts_any(b.factory) else set()
    if unknown:
        raise ValueError(f"preset {attack_id!r}: {base!r} has no parameter(s) {sorted(unknown)}; "
                         f"it takes {sorted(b.params)}")
    entry = AttackEntry(attack_id, b.factory, b.norm, b.backend, tuple(default_eps or b.default_eps), tgts,
                        {**b.params, **params}, description or f"{b.description} (preset of {base})",
                        b.engine, base)
    return ATTACKS.add(attack_id, entry)


def _accepts_any(fn) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    return any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def with_backend(attack_ids: list[str], backend: str) -> list[str]:
    """Gives each attack's id in ``backend``: ``pgd`` → ``pgd@art`` (``--backend art``).

    Raises:
        ValueError: an attack has no implementation in ``backend``; the message lists those it has.
    """
    out = []
    for a in attack_ids:
        name = a.split("@")[0]
        candidates = [i for i in ATTACKS.list() if i.split("@")[0] == name]
        found = [i for i in candidates if ATTACKS.get(i).backend == backend]
        if not found:
            have = sorted({ATTACKS.get(i).backend for i in candidates})
            raise ValueError(f"attack {name!r} has no {backend!r} backend; it has {have}: "
                             f"write e.g. --attacks {name}@{have[0]}" if have else f"unknown attack {name!r}")
        out.append(found[0])
    return out


_EPS_RE = re.compile(r"^\s*(\d+(\.\d*)?|\.\d+)(\s*/\s*(\d+(\.\d*)?|\.\d+))?\s*$", re.ASCII)


def parse_eps(text: str, norm: str = "linf", force: bool = False) -> list[float]:
    """Parses ``"1/255,8/255"`` or ``"0.5,1.0"`` into floats; rejects malformed or negative values.

    >>> parse_eps("8/255, 0.5", norm="l2")
    [0.03137254901960784, 0.5]
    """
    values: list[float] = []
    for part in str(text).split(","):
        if not part.strip():
            continue
        if part.strip().startswith("-"):
            raise EpsError(f"eps must be ≥ 0, got {part.strip()!r}")
        if not _EPS_RE.match(part):
            raise EpsError(f"malformed eps {part.strip()!r}: write a number or a fraction, "
                           f"e.g. 8/255 or 0.03, comma-separated")
        num, _, den = part.partition("/")
        v = float(Fraction(num.strip()))
        if den:
            d = float(Fraction(den.strip()))
            if d == 0:
                raise EpsError(f"malformed eps {part.strip()!r}: division by zero")
            v /= d
        if not math.isfinite(v) or v < 0:
            raise EpsError(f"eps must be finite and ≥ 0, got {part.strip()!r}")
        if v > SENSIBLE_EPS[norm] and not force:
            raise EpsError(f"eps {part.strip()} is beyond the sensible range for {norm} "
                           f"(≤ {SENSIBLE_EPS[norm]:.4g}); pass --force to run it anyway")
        values.append(v)
    if not values:
        raise EpsError("no eps given: write e.g. --eps 8/255")
    return values


def eps_label(eps: float, norm: str) -> str:
    """Writes an L∞ eps as a fraction of 255 where it is a whole number of grey levels, else as a number.

    >>> eps_label(8 / 255, "linf"), eps_label(0.5, "l2")
    ('8/255', '0.5')
    """
    if norm == "linf":
        f = Fraction(eps * 255).limit_denominator(1000)
        if f.denominator == 1 and abs(float(f) - eps * 255) < 1e-6:
            return f"{f}/255"
    return f"{eps:.4g}"


def eps_tolerance(norm: str, eps: float, numel: int) -> float:
    """Gives how far past ``eps`` a perturbation of ``numel`` float32 values may measure."""
    spacing = FLOAT32_SPACING * (1.0 if norm == "linf" else math.sqrt(numel))
    return eps * REL_TOL + spacing


def check_threat_model(x: torch.Tensor, x_adv: torch.Tensor, norm: str, eps: float) -> None:
    """Raises :class:`ThreatModelViolation` unless ``x_adv`` is a valid example of the threat model.

    Valid: the same shape and the same floating dtype as ``x`` (float64, float16 or bfloat16 images
    for float32 ones are refused, not cast: what is checked is what is scored, and a cast after the
    check would move the pixels), finite, within [0, 1], and within the ``norm`` ball of radius
    ``eps`` around ``x``, measured in float64, up to :func:`eps_tolerance`.
    """
    if not isinstance(x_adv, torch.Tensor):
        raise ThreatModelViolation(f"attack returned {type(x_adv).__name__}, not a tensor")
    if x_adv.shape != x.shape:
        raise ThreatModelViolation(f"attack returned shape {tuple(x_adv.shape)}, expected {tuple(x.shape)}")
    if x_adv.dtype != x.dtype or not x_adv.dtype.is_floating_point:
        raise ThreatModelViolation(f"attack returned dtype {x_adv.dtype}, expected {x.dtype} (the clean images' dtype)")
    if not torch.isfinite(x_adv).all():
        raise ThreatModelViolation("attack returned non-finite values")
    if len(x_adv) == 0:
        return
    lo, hi = x_adv.min().item(), x_adv.max().item()
    if lo < 0 or hi > 1:
        raise ThreatModelViolation(f"attack left [0, 1]: values in [{lo:.4g}, {hi:.4g}]")
    worst = 0.0
    for s in image_slices(x):  # float64 a few images at a time: in the CPU's cache
        delta = (x_adv[s].detach().double() - x[s].detach().double()).flatten(1)
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        worst = max(worst, size.max().item())
    if worst > eps + eps_tolerance(norm, eps, x[0].numel()):
        raise ThreatModelViolation(f"perturbation {norm} norm {worst:.6g} exceeds eps {eps:.6g}")


def perturbation_norms(x: torch.Tensor, x_adv: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gives the L∞ and L2 size of each image's perturbation."""
    delta = (x_adv - x).flatten(1)
    return {"linf": delta.abs().amax(1), "l2": delta.norm(dim=1)}


class _CountBackward(torch.autograd.Function):
    """The identity, counting the images whose gradient flows back through it."""

    @staticmethod
    def forward(ctx, x, counter):
        ctx.counter = counter
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.counter.backward_images += len(grad)
        return grad.contiguous(), None  # some libraries .view() the input gradient


class PassCounter(nn.Module):
    """Wraps a model and counts the images it runs forward, and the input gradients taken through it.

    An attack's cost in the units AutoAttack and RobustBench use: one forward pass per image
    evaluated, one backward pass per image whose input gradient is computed.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forward_images = 0
        self.backward_images = 0
        self.train(model.training)

    def forward(self, x: torch.Tensor):
        self.forward_images += len(x)
        if x.requires_grad:
            x = _CountBackward.apply(x, self)
        return self.model(x)


@contextlib.contextmanager
def crafting(model: nn.Module, precision: str, device: torch.device, channels_last: bool = False) -> Iterator[None]:
    """The arithmetic of the attack's own passes: fp32, or bfloat16 autocast (``bf16``), on
    channels-last weights where ``channels_last`` or ``bf16`` (oneDNN's fastest convolutions on a
    CPU, for inputs that are channels-last too). The model's memory format is restored afterwards,
    so the fp32 verdicts that follow run on the very same layout as without the attack."""
    if precision == "fp32" and not channels_last:
        yield
        return
    model.to(memory_format=torch.channels_last)
    try:
        with autocast(precision, device):
            yield
    finally:
        model.to(memory_format=torch.contiguous_format)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast for ``bf16``, nothing for ``fp32``."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no weight gradients for the attack's duration (only input gradients are needed)."""
    grads = [(p, p.requires_grad) for p in model.parameters()]
    mode = model.training
    model.eval()
    for p, _ in grads:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, g in grads:
            p.requires_grad_(g)
        model.train(mode)


# the libraries whose attacks craft through the crafting copy, as the engine's do (a plugin's own gets the model)
COPY_BACKENDS = ("autoattack", "torchattacks", "art")


# a chunked engine attack takes up to this many batches per call, within this many bytes per image tensor
CHUNK_BATCHES = 4
CHUNK_BYTES = 64 * 2**20


class BuiltAttack:
    """``attack(images, labels, masks, active=None) -> adv_images``, checked; counts its passes.

    ``active`` (bool per image) names the images to attack; the others come back unchanged, as
    AutoAttack does for points already misclassified.
    """

    def __init__(self, spec: AttackSpec, model: nn.Module) -> None:
        self.spec = spec
        self.entry = ATTACKS.get(spec.name)
        self.counter = PassCounter(model)
        if spec.target == "joint" and not self.entry.engine:
            raise ValueError(f"attack {spec.name!r} attacks one head; 'joint' needs an engine attack")
        params = dict(spec.params)
        self.precision = str(params.pop("precision", "fp32"))
        if self.precision not in PRECISIONS:
            raise ValueError(f"attack {spec.name!r}: precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {self.precision!r}")
        if self.entry.engine:
            self._fn = self.entry.factory(self.counter, spec.eps, target=spec.target, **params)
        else:
            view = HeadView(self.counter, "logits" if spec.target == "cls" else "mask")
            self._fn = self.entry.factory(view, spec.eps, **params)

    @property
    def passes(self) -> tuple[int, int]:
        """Gives (forward, backward) images counted so far."""
        return self.counter.forward_images, self.counter.backward_images

    def chunk_size(self, batch_size: int, image_bytes: int, n_images: int | None = None) -> int:
        """Gives how many images one call should take, for passes of ``batch_size`` images, of ``n_images``.

        An attack that batches and seeds itself (``whole_split``: AutoAttack) takes all ``n_images``
        in one call, so that its batches and its seeding are those of the library run directly on the
        split. An engine attack that computes in pieces (``chunked``: FGSM, PGD) takes up to
        ``CHUNK_BATCHES`` batches at once, as many as fit ``CHUNK_BYTES`` per image tensor
        (``image_bytes`` each): with early exit its passes stay full batches where per-batch calls
        would shrink to a few images. Any other attack takes one batch.
        """
        if n_images is not None and getattr(self._fn, "whole_split", False):
            return max(1, n_images)
        if not getattr(self._fn, "chunked", False):
            return batch_size
        return max(batch_size, min(batch_size * CHUNK_BATCHES, CHUNK_BYTES // max(1, image_bytes)))

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None,
                 active: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
        """Gives the adversarial images; ``batch_size`` caps the images per pass of an engine attack.

        At eps 0 the attack runs as at any eps (its passes are spent and counted), and its output is
        checked against the threat model, which then allows only float32 rounding.
        """
        spec = self.spec
        if self.entry.engine:
            self._fn.batch_size = batch_size
        if spec.target in ("seg", "joint") and masks is None:
            raise ValueError(f"attack {spec.name!r} targets the masks ({spec.target}), but the split has none")
        idx = torch.arange(len(images)) if active is None else active.nonzero().flatten().cpu()
        adv = images.clone()
        if len(idx):
            dev = model_device(self.counter.model)  # the batch goes where the model is; the result comes back
            x, y = images[idx].to(dev).contiguous(), labels[idx].to(dev)  # libraries .view() their inputs
            m = None if masks is None else masks[idx].to(dev).long()
            # the engine's attacks craft on channels-last tensors in either precision (1.25x on a small
            # CPU model, benchmarks/README.md); a library's only in bf16 (some .view() their inputs)
            channels_last = self.entry.engine or self.precision == "bf16"
            if channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            model = self.counter.model
            with frozen(model):
                # the engine and the libraries the suite wraps craft through a copy of the model in the forms a
                # CPU computes fastest (channels-last already; fusion.py) where it reproduces the model; a
                # plugin's own attack gets the model itself. The verdicts are the model's own
                crafts_on_copy = self.entry.engine or self.entry.backend in COPY_BACKENDS
                copy = crafting_copy(model, x, self.precision) if crafts_on_copy else None
                layout = autocast(self.precision, x.device) if copy is not None else \
                    crafting(model, self.precision, x.device, channels_last)
                self.counter.model = copy if copy is not None else model
                try:
                    with layout:
                        out = self._fn(x, y, m) if self.entry.engine else self._fn(x, y if spec.target == "cls" else m)
                finally:
                    self.counter.model = model
            check_threat_model(x, out, spec.norm, spec.eps)
            adv[idx] = out.detach().to(device=adv.device, dtype=adv.dtype)
        return adv


def build_attack(spec: AttackSpec, model: nn.Module) -> BuiltAttack:
    """Gives ``attack(images, labels, masks, active=None) -> adv_images``, checked against the threat model."""
    return BuiltAttack(spec, model)
