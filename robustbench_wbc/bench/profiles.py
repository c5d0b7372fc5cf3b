"""Run profiles: named matrices, so that a published result is one command (``run --profile reference``).

A run profile fixes the models, training seeds, splits, attacks with their budgets, and images per
split. ``reference`` is what ``results/`` holds: every zoo model of the clean track at three seeds;
clean accuracy and Dice in distribution, under the three SynthWBC domain shifts and under every
corruption at severities 1, 3 and 5; and on the in-distribution test split the attacks that bound
robustness from both sides at a CPU's cost: FGSM, PGD and PGD-L2 on every head, and AutoAttack
(APGD-CE + APGD-T, ``autoattack-fast``) on the class head. Left out, and why: the standard AutoAttack
(Square's 5,000 queries per robust image: hours on 2 cores), Carlini–Wagner (a minimal-norm attack,
reported apart), and the library cross-checks (``pgd@art``…, a check of the engine, not of models).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from robustbench_wbc.attacks.base import DEFAULT_EPS


@dataclass(frozen=True)
class RunProfile:
    """A named matrix. ``attacks`` maps an attack id to its budgets (its norm's defaults when empty)."""

    name: str
    description: str
    models: str = "all"
    seeds: tuple[int, ...] = (0,)
    splits: tuple[str, ...] = ("synth:test",)
    attacks: dict[str, tuple[float, ...]] = field(default_factory=dict)
    attack_splits: tuple[str, ...] = ("synth:test",)
    n_images: int = 256


def _corruption_splits(severities: tuple[int, ...]) -> tuple[str, ...]:
    from robustbench_wbc.data.corruptions import CORRUPTIONS

    return tuple(f"synth:c-{c}-{s}" for c in CORRUPTIONS for s in severities)


def reference() -> RunProfile:
    """Gives the reference profile (built on use: the corruption splits come from their registry)."""
    return RunProfile(
        name="reference",
        description="the zoo at seeds 0-2; ID, domain-shift and corruption splits clean; FGSM, PGD, PGD-L2 on every "
                    "head and AutoAttack-fast on the class head, on synth:test",
        seeds=(0, 1, 2),
        splits=("synth:test", "synth:ood-stain-b", "synth:ood-camera-b", "synth:ood-lab-b", *_corruption_splits((1, 3, 5))),
        attacks={"fgsm": DEFAULT_EPS["linf"], "pgd": DEFAULT_EPS["linf"], "pgd-l2": DEFAULT_EPS["l2"],
                 "autoattack-fast": (2 / 255, 8 / 255)},
    )


RUN_PROFILES = {"reference": reference}


def get_run_profile(name: str) -> RunProfile:
    """Gives the run profile ``name``; :class:`ValueError` naming the known ones otherwise."""
    if name not in RUN_PROFILES:
        raise ValueError(f"unknown run profile {name!r}; expected one of {sorted(RUN_PROFILES)}")
    return RUN_PROFILES[name]()
