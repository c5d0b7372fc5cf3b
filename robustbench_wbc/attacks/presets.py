"""Attack presets: YAML files that register an attack as another one with other defaults.

A preset names its ``base`` (a registered attack or another preset), and may set its budgets,
the heads it attacks, and parameters::

    # pgd-linf-8.yaml
    name: pgd-linf-8
    base: pgd
    description: PGD-L∞ at RobustBench's 8/255 with 20 steps.
    eps: 8/255            # or a list: [4/255, 8/255]
    targets: [cls, seg, joint]
    params:
      steps: 20

The suite's own presets live in the repository's ``attacks/presets/`` (installed as the package
``robustbench_wbc.presets``); yours are loaded with ``--plugin my-preset.yaml``.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import yaml

from robustbench_wbc.attacks.base import ATTACKS, AttackEntry, EpsError, derive_attack, lookup, parse_eps
from robustbench_wbc.registry import PluginError, UnknownNameError

KEYS = {"name", "base", "description", "eps", "targets", "params"}
HOW = "A preset is a YAML mapping with `name`, `base` and optionally `description`, `eps`, `targets`, `params`."


def _read(path: Path) -> dict:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PluginError(f"The attack preset {path} cannot be read: {exc}. {HOW}") from exc
    if not isinstance(doc, dict) or not {"name", "base"} <= set(doc):
        raise PluginError(f"The attack preset {path} needs `name` and `base`. {HOW}")
    unknown = set(doc) - KEYS
    if unknown:
        raise PluginError(f"The attack preset {path} has unknown key(s) {sorted(unknown)}. {HOW}")
    return doc


def _eps(value, norm: str, path: Path) -> tuple[float, ...] | None:
    if value is None:
        return None
    text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
    try:
        return tuple(parse_eps(text, norm=norm))
    except EpsError as exc:
        raise PluginError(f"The attack preset {path}: {exc}") from exc


def register_presets(paths: list[Path]) -> list[str]:
    """Registers the presets in ``paths`` (a preset may derive from another one among them); gives their ids."""
    docs = {}
    for p in paths:
        doc = _read(p)
        docs[str(doc["name"]).lower()] = (p, doc)
    done: list[str] = []
    pending = dict(docs)
    while pending:  # register bases before the presets that derive from them
        ready = [n for n, (_, d) in pending.items() if str(d["base"]).lower() not in pending]
        if not ready:
            raise PluginError(f"The attack presets {sorted(pending)} derive from each other in a cycle.")
        for name in ready:
            path, doc = pending.pop(name)
            done.append(_register(name, path, doc))
    return done


def _register(name: str, path: Path, doc: dict) -> str:
    existing: AttackEntry | None = ATTACKS._entries.get(name)
    if existing is not None:
        if existing.base:  # the same preset loaded again (e.g. the same file twice): replace it
            ATTACKS.remove(name)
        else:
            raise PluginError(f"The attack preset {path} is named {name!r}, which is a registered attack; rename it.")
    try:
        base = lookup(str(doc["base"]))
    except UnknownNameError as exc:
        raise PluginError(f"The attack preset {path}: {exc}") from exc
    params = doc.get("params") or {}
    if not isinstance(params, dict):
        raise PluginError(f"The attack preset {path}: `params` must be a mapping. {HOW}")
    targets = doc.get("targets")
    try:
        derive_attack(name, base.id, default_eps=_eps(doc.get("eps"), base.norm, path),
                      targets=tuple(targets) if targets else None, description=str(doc.get("description", "")).strip(),
                      **params)
    except ValueError as exc:
        raise PluginError(f"The attack preset {path}: {exc}") from exc
    return name


def builtin_preset_files() -> list[Path]:
    """Gives the suite's own preset files (``attacks/presets/*.yaml`` in the repository)."""
    try:
        root = importlib.resources.files("robustbench_wbc.presets")
    except ModuleNotFoundError:  # an install without the presets package
        return []
    return sorted(Path(str(f)) for f in root.iterdir() if f.name.endswith((".yaml", ".yml")))
