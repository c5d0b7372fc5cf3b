"""The original AutoAttack (Croce & Hein, ICML 2020, arXiv 2003.01690) as a backend: ``autoattack``, …

Its authors' package, ``pyautoattack`` (``from pyautoattack import AutoAttack``), behind the suite's
checks. The attacks see the class logits; inputs in [0, 1]. Registered:

* ``autoattack`` — the standard version, L∞: APGD-CE (100 iterations), APGD-T (100 iterations per
  target), FAB-T, Square (5,000 queries); each attack sees only the points still robust.
* ``autoattack-l2`` — the same, L2.
* ``autoattack-fast`` — APGD-CE then APGD-T only, one restart each: the first half of the standard
  version with the same settings, so with the same seed its robust accuracy is never below the
  standard version's (cheaper, weaker or equal). RobustBench's README quick-start runs the pair
  APGD-CE + APGD-DLR (untargeted) instead; ``attacks="apgd-ce,apgd-dlr"`` gives that one.
* ``apgd-ce``, ``apgd-t``, ``square`` — one of AutoAttack's attacks alone, as the standard version
  runs it (``square``'s budget is ``n_queries``).

Set for the suite's models, as the original does not:

* the number of target classes of APGD-T and FAB-T is ``C − 1``, ``C`` read from the logits on the
  first call (the original's 9 is for 10 classes; with fewer it would run absent targets);
* DLR divides by ``z_π1 − z_π3`` and targeted DLR by ``z_π1 − (z_π3 + z_π4)/2``: untargeted DLR
  needs 3 classes, targeted 4. Fewer raise a ``ValueError`` naming the attack (the original only
  logs a warning and then fails or divides by nothing);
* ``seed`` (default 0) is AutoAttack's seed, so a run is reproducible. Each of its attacks reseeds
  torch's global generator; that is done inside ``torch.random.fork_rng``, so the caller's random
  state is left as it was;
* nothing is printed: AutoAttack's progress report is off, and its checks (randomised or dynamic
  defence, probabilities instead of logits, Square beating the gradient attacks) warn through the
  ``auto-attack`` logger. Its dynamic-defence check replaces ``sys.settrace``; the tracer found
  before (a coverage tool, a debugger) is put back.

Cost on top of the attacks: AutoAttack runs the model 8 more times on each image of its first batch
(its clean accuracy, then its checks: 5 passes for randomness, one for the output range, one traced),
and 2 more per attack (its clean check, and the check of its result); the suite once, on one image,
to read ``C``. Points it cannot break (or already misclassified) come
back unchanged. The batch size matters for the result (each batch restarts the seeded generator);
it is a recorded parameter, AutoAttack's 250 by default. The suite hands AutoAttack all the images of
a split it attacks in one call (:attr:`AutoAttackRun.whole_split`), seeded once for the split; AutoAttack
batches them by its ``batch_size``, each of its attacks reseeding at each of its batches, exactly as when
it is run directly on those images: the same batches, the same numbers (only a call that runs out of
memory is split, in halves, each part then a call of its own).
"""

from __future__ import annotations

import sys

import torch
from pyautoattack import AutoAttack, checks
from torch import nn

from robustbench_wbc.attacks.base import register_attack

VERSIONS = ("standard", "plus", "rand", "custom")
# AutoAttack's attacks and the fewest classes each works with (see the module docstring).
MIN_CLASSES = {"apgd-ce": 2, "apgd-dlr": 3, "apgd-t": 4, "fab": 2, "fab-t": 2, "square": 2}
LIBRARY_NAMES = {"apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR (untargeted DLR loss)", "apgd-t": "APGD-T (targeted DLR loss)",
                 "fab": "FAB", "fab-t": "FAB-T", "square": "Square"}
# The attacks each version runs (AutoAttack._set_version).
VERSION_ATTACKS = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
                   "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
                   "rand": ("apgd-ce", "apgd-dlr")}
_NORMS = {"linf": "Linf", "l2": "L2"}


class AutoAttackRun:
    """``(images, labels) -> adv_images`` by the original AutoAttack; the head attack this backend registers.

    Builds the ``AutoAttack`` object on the first call (it needs the images' device and the number of
    classes), then reuses it; :attr:`adversary` is that object, :attr:`n_classes` the ``C`` read.
    ``whole_split``: the suite hands it every image of a split it attacks in one call, since it batches
    (by ``batch_size``) and seeds itself (see :meth:`~robustbench_wbc.attacks.base.BuiltAttack.chunk_size`).

    Args:
        model: returns class logits (N×C).
        eps: the budget.
        norm: ``linf`` or ``l2``.
        name: the suite's id of the attack, for error messages.
        version: AutoAttack's ``standard``, ``plus``, ``rand``, or ``custom`` (then ``attacks`` says which).
        attacks: for ``custom``, AutoAttack's attack names in order (a comma-separated string or a sequence).
        seed: AutoAttack's seed.
        n_queries: Square's query budget.
        batch_size: AutoAttack's batch size.
    """

    whole_split = True  # one call per split: AutoAttack batches and seeds itself

    def __init__(self, model: nn.Module, eps: float, norm: str, name: str, version: str = "standard",
                 attacks: str | tuple[str, ...] = "", seed: int = 0, n_queries: int = 5000, batch_size: int = 250) -> None:
        if norm not in _NORMS:
            raise ValueError(f"attack {name!r}: norm must be one of {tuple(_NORMS)}, got {norm!r}")
        if version not in VERSIONS:
            raise ValueError(f"attack {name!r}: version must be one of {VERSIONS}, got {version!r}")
        names = tuple(a.strip() for a in (attacks.split(",") if isinstance(attacks, str) else attacks) if a.strip())
        if version == "custom":
            unknown = [a for a in names if a not in MIN_CLASSES]
            if not names or unknown:
                raise ValueError(f"attack {name!r}: version 'custom' needs attacks from {tuple(MIN_CLASSES)}, "
                                 f"got {attacks!r}")
        elif names:
            raise ValueError(f"attack {name!r}: attacks={attacks!r} is only for version 'custom' "
                             f"(version {version!r} runs {', '.join(VERSION_ATTACKS[version])})")
        if int(n_queries) < 1 or int(batch_size) < 1:
            raise ValueError(f"attack {name!r}: n_queries and batch_size must be ≥ 1, got {n_queries}, {batch_size}")
        self.model, self.eps, self.norm, self.name = model, float(eps), norm, name
        self.version, self.seed = version, int(seed)
        self.attacks = names if version == "custom" else VERSION_ATTACKS[version]
        self.n_queries, self.batch_size = int(n_queries), int(batch_size)
        self.adversary: AutoAttack | None = None
        self.n_classes: int | None = None

    def check_classes(self, n_classes: int) -> None:
        """Raises ``ValueError`` if one of the attacks cannot work with ``n_classes`` classes."""
        for a in self.attacks:
            if n_classes < MIN_CLASSES[a]:
                raise ValueError(f"attack {self.name!r}: AutoAttack's {LIBRARY_NAMES[a]} needs at least "
                                 f"{MIN_CLASSES[a]} classes; the model gives {n_classes}")

    def build(self, device: torch.device, n_classes: int) -> AutoAttack:
        """Gives the ``AutoAttack`` object for ``n_classes`` classes on ``device``, set as the module docstring says."""
        self.check_classes(n_classes)
        aa = AutoAttack(self.model, attacks=list(self.attacks) if self.version == "custom" else None, device=device,
                        eps=self.eps, norm=_NORMS[self.norm], seed=self.seed, version=self.version)
        aa.verbose = False
        if self.version == "custom":  # the constructor's restarts are 5; the standard version's 1
            aa.apgd.n_restarts = aa.apgd_targeted.n_restarts = aa.fab.n_restarts = 1
        aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = n_classes - 1
        aa.square.n_queries = self.n_queries
        return aa

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if len(images) == 0:
            return images.clone()
        if self.adversary is None or torch.device(self.adversary.device) != images.device:
            with torch.no_grad():
                n_classes = int(self.model(images[:1]).shape[1])
            self.adversary, self.n_classes = self.build(images.device, n_classes), n_classes
        images = images.contiguous()  # AutoAttack .view()s the input gradient, which takes the images' layout
        for k in checks.funcs:  # the dynamic-defence check's call counts never reset: one hit would flag every later model
            checks.funcs[k] = 0
        tracer = sys.gettrace()
        devices = [images.device] if images.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                adv, _ = self.adversary.run_standard_evaluation(images, labels, batch_size=self.batch_size)
        finally:
            sys.settrace(tracer)
        return adv


@register_attack("autoattack", norm="linf", backend="autoattack", version="standard", seed=0, n_queries=5000,
                 batch_size=250)
def autoattack(model: nn.Module, eps: float, version: str, seed: int, n_queries: int, batch_size: int):
    """AutoAttack, the original, standard L∞: APGD-CE, APGD-T, FAB-T, Square (5,000 queries)."""
    return AutoAttackRun(model, eps, "linf", "autoattack", version=version, seed=seed, n_queries=n_queries,
                         batch_size=batch_size)


@register_attack("autoattack-l2", norm="l2", backend="autoattack", version="standard", seed=0, n_queries=5000,
                 batch_size=250)
def autoattack_l2(model: nn.Module, eps: float, version: str, seed: int, n_queries: int, batch_size: int):
    """AutoAttack, the original, standard L2: APGD-CE, APGD-T, FAB-T, Square (5,000 queries)."""
    return AutoAttackRun(model, eps, "l2", "autoattack-l2", version=version, seed=seed, n_queries=n_queries,
                         batch_size=batch_size)


@register_attack("autoattack-fast", norm="linf", backend="autoattack", version="custom", attacks="apgd-ce,apgd-t",
                 seed=0, batch_size=250)
def autoattack_fast(model: nn.Module, eps: float, version: str, attacks: str, seed: int, batch_size: int, n_queries: int = 5000):
    """AutoAttack's APGD-CE + APGD-T only, L∞: cheaper than the standard version, and weaker or equal."""
    return AutoAttackRun(model, eps, "linf", "autoattack-fast", version=version, attacks=attacks, seed=seed,
                         n_queries=n_queries, batch_size=batch_size)


@register_attack("apgd-ce", norm="linf", backend="autoattack", seed=0, batch_size=250)
def apgd_ce(model: nn.Module, eps: float, seed: int, batch_size: int):
    """APGD on the cross-entropy (AutoAttack's, L∞, 100 iterations, 1 restart)."""
    return AutoAttackRun(model, eps, "linf", "apgd-ce", version="custom", attacks="apgd-ce", seed=seed,
                         batch_size=batch_size)


@register_attack("apgd-t", norm="linf", backend="autoattack", seed=0, batch_size=250)
def apgd_t(model: nn.Module, eps: float, seed: int, batch_size: int):
    """APGD on the targeted DLR loss (AutoAttack's, L∞, 100 iterations for each of the C − 1 targets)."""
    return AutoAttackRun(model, eps, "linf", "apgd-t", version="custom", attacks="apgd-t", seed=seed,
                         batch_size=batch_size)


@register_attack("square", norm="linf", backend="autoattack", seed=0, n_queries=5000, batch_size=250)
def square(model: nn.Module, eps: float, seed: int, n_queries: int, batch_size: int):
    """Square Attack, black-box (AutoAttack's, L∞, 5,000 queries by default)."""
    return AutoAttackRun(model, eps, "linf", "square", version="custom", attacks="square", seed=seed,
                         n_queries=n_queries, batch_size=batch_size)
