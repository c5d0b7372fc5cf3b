"""Attack specs, the attack registry, eps parsing and the threat-model check.

An attack is registered by a builder ``builder(head_model, spec) -> fn(images, targets) -> adv``;
``head_model`` returns one tensor (class logits, or per-pixel mask logits), ``targets`` are the
class labels or the masks accordingly. :func:`build_attack` turns a spec and a dict-returning
model into ``attack(images, labels, masks) -> adv_images`` whose every output is checked against
the threat model before it is returned.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import torch
from torch import nn

from robustbench_wbc.models.networks import HeadView
from robustbench_wbc.registry import Registry

NORMS = ("linf", "l2")
TARGETS = ("cls", "seg")
# Beyond these, an image is no longer "the same image": refuse unless forced.
SENSIBLE_EPS = {"linf": 64 / 255, "l2": 16.0}

AttackFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ThreatModelViolation(RuntimeError):
    """An adversarial batch outside its budget (norm ball, [0, 1], finite, same shape)."""


class EpsError(ValueError):
    """An eps list that cannot be parsed or is out of range."""


@dataclass(frozen=True)
class AttackSpec:
    """One attack configuration: the unit the bench runs and records."""

    name: str
    norm: str
    eps: float
    target: str = "cls"
    backend: str = "torchattacks"
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class AttackEntry:
    """A registered attack: its builder and what it declares about itself."""

    id: str
    builder: Callable[[nn.Module, AttackSpec], AttackFn]
    norm: str
    backend: str
    default_eps: tuple[float, ...]
    targets: tuple[str, ...]
    params: dict
    description: str

    def spec(self, eps: float, target: str, **params) -> AttackSpec:
        """Gives the spec of this attack at ``eps`` against the ``target`` head."""
        if target not in self.targets:
            raise ValueError(f"attack {self.id!r} cannot target {target!r}; it supports {self.targets}")
        return AttackSpec(self.id, self.norm, float(eps), target, self.backend, {**self.params, **params})


ATTACKS: Registry[AttackEntry] = Registry("attack", group="robustbench_wbc.attacks",
                                          list_command="attacks list")


def register_attack(*, norm: str, backend: str, default_eps: tuple[float, ...],
                    targets: tuple[str, ...] = TARGETS, **params):
    """Registers the decorated builder as an attack whose id is the function's name.

    Args:
        norm: the threat model's norm, ``linf`` or ``l2``.
        backend: the library that does the work (``torchattacks``, ``art``, ``own``, a plugin's).
        default_eps: the eps values run when the user gives none.
        targets: the heads it can attack: ``cls`` (class logits), ``seg`` (mask logits).
        **params: default parameters, recorded with every result.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")

    def deco(fn):
        if fn.__name__.lower() == "none":
            raise ValueError("'none' names the clean cells (no attack); give the attack another name")
        doc = (fn.__doc__ or "").strip().splitlines()
        ATTACKS.add(fn.__name__, AttackEntry(fn.__name__, fn, norm, backend, tuple(default_eps),
                                             tuple(targets), params, doc[0] if doc else ""))
        return fn

    return deco


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


def check_threat_model(x: torch.Tensor, x_adv: torch.Tensor, norm: str, eps: float,
                       atol: float = 1e-5) -> None:
    """Raises :class:`ThreatModelViolation` unless ``x_adv`` is a valid example of the threat model.

    Valid: same shape and floating dtype as ``x``, finite, within [0, 1], and within the ``norm``
    ball of radius ``eps`` around ``x`` (up to ``atol`` of float rounding).
    """
    if not isinstance(x_adv, torch.Tensor):
        raise ThreatModelViolation(f"attack returned {type(x_adv).__name__}, not a tensor")
    if x_adv.shape != x.shape:
        raise ThreatModelViolation(f"attack returned shape {tuple(x_adv.shape)}, expected {tuple(x.shape)}")
    if not x_adv.dtype.is_floating_point:
        raise ThreatModelViolation(f"attack returned dtype {x_adv.dtype}, expected a float tensor")
    if not torch.isfinite(x_adv).all():
        raise ThreatModelViolation("attack returned non-finite values")
    lo, hi = x_adv.min().item(), x_adv.max().item()
    if lo < -atol or hi > 1 + atol:
        raise ThreatModelViolation(f"attack left [0, 1]: values in [{lo:.4g}, {hi:.4g}]")
    delta = (x_adv.detach().double() - x.detach().double()).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    worst = size.max().item() if len(size) else 0.0
    if worst > eps + atol:
        raise ThreatModelViolation(f"perturbation {norm} norm {worst:.6g} exceeds eps {eps:.6g}")


def perturbation_norms(x: torch.Tensor, x_adv: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gives the L∞ and L2 size of each image's perturbation."""
    delta = (x_adv - x).flatten(1)
    return {"linf": delta.abs().amax(1), "l2": delta.norm(dim=1)}


def build_attack(spec: AttackSpec, model: nn.Module) -> Callable[..., torch.Tensor]:
    """Gives ``attack(images, labels, masks) -> adv_images``, checked against the threat model."""
    entry = ATTACKS.get(spec.name)
    head = "logits" if spec.target == "cls" else "mask"
    fn = entry.builder(HeadView(model, head), spec)

    def attack(images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        if spec.target == "seg":
            if masks is None:
                raise ValueError(f"attack {spec.name!r} targets the masks, but the split has none")
            targets = masks.long()
        else:
            targets = labels
        if spec.eps == 0:
            return images.clone()
        adv = fn(images, targets)
        check_threat_model(images, adv, spec.norm, spec.eps)
        return adv.detach()

    return attack
