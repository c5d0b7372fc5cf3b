"""Attacks: the registry, specs, eps parsing, the threat-model check, the engine and the backends."""

from robustbench_wbc.attacks import (  # noqa: F401  (register the built-ins)
    art_backend,
    autoattack_backend,
    cw,
    fgsm,
    pgd,
    torchattacks_backend,
)
from robustbench_wbc.attacks.base import (
    ATTACKS,
    DEFAULT_EPS,
    NORMS,
    TARGETS,
    AttackEntry,
    AttackSpec,
    BuiltAttack,
    EpsError,
    PassCounter,
    ThreatModelViolation,
    build_attack,
    check_threat_model,
    derive_attack,
    parse_eps,
    perturbation_norms,
    register_attack,
    with_backend,
)
from robustbench_wbc.attacks.engine import Attack
from robustbench_wbc.attacks.presets import builtin_preset_files, register_presets

register_presets(builtin_preset_files())

__all__ = [
    "ATTACKS", "DEFAULT_EPS", "NORMS", "TARGETS", "Attack", "AttackEntry", "AttackSpec", "BuiltAttack", "EpsError",
    "PassCounter", "ThreatModelViolation", "build_attack", "check_threat_model", "derive_attack", "parse_eps",
    "perturbation_norms", "register_attack", "with_backend",
]
