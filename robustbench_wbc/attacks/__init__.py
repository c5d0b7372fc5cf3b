"""Attacks: the registry, specs, eps parsing, the threat-model check, and the built-in backends."""

from robustbench_wbc.attacks import torchattacks_backend  # noqa: F401  (registers fgsm, pgd)
from robustbench_wbc.attacks.base import (
    ATTACKS,
    NORMS,
    TARGETS,
    AttackEntry,
    AttackSpec,
    EpsError,
    ThreatModelViolation,
    build_attack,
    check_threat_model,
    parse_eps,
    perturbation_norms,
    register_attack,
)

__all__ = [
    "ATTACKS", "NORMS", "TARGETS", "AttackEntry", "AttackSpec", "EpsError", "ThreatModelViolation",
    "build_attack", "check_threat_model", "parse_eps", "perturbation_norms", "register_attack",
]
