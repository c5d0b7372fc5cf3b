"""Plugins from a file: a Python file whose import registers models or attacks.

The file-based twin of the ``robustbench_wbc.models`` and ``robustbench_wbc.attacks`` entry-point
groups, for code that lives in a script rather than an installed package
(``wbc-robust run --model-plugin my_models.py --plugin my_attacks.py``)::

    # my_models.py
    from robustbench_wbc.models import WBCNet, register_model

    @register_model(family="classifier", encoder="resnet18", recipe="full")
    def my_resnet18_cls() -> WBCNet:
        \"\"\"ResNet-18 classifier on the full labelled set.\"\"\"
        return WBCNet("classifier", "resnet18")
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
import threading
from pathlib import Path

from robustbench_wbc.registry import PluginError, Registry

_LOCK = threading.Lock()
# (registry kind, resolved path) → (sha256 of the source, module name, ids it registered)
_LOADED: dict[tuple[str, Path], tuple[str, str, list[str]]] = {}

MODEL_HOW = ("A model plugin is a Python file that decorates model builders with "
             "`@register_model(family=..., encoder=..., recipe=...)` from robustbench_wbc.models.")
ATTACK_HOW = ("An attack plugin is a Python file that decorates a factory `f(model, eps, **params)` with "
              "`@register_attack(\"name\", norm=\"linf\")` from robustbench_wbc (or a YAML preset).")


def _module_of(entry) -> str | None:
    fn = getattr(entry, "builder", None) or getattr(entry, "factory", None)
    return getattr(fn, "__module__", None)


def _forget(registry: Registry, module_name: str, ids: list[str]) -> None:
    """Removes the ids a module registered (those still pointing at its code) and the module."""
    for i in ids:
        entry = registry._entries.get(i)
        if entry is not None and _module_of(entry) == module_name:
            registry.remove(i)
    sys.modules.pop(module_name, None)


def load_plugin_file(path: str | Path, registry: Registry, option: str, how: str) -> list[str]:
    """Imports the Python file ``path`` so that it registers into ``registry``; gives the ids it registered.

    Loading the same, unchanged file again registers nothing new and gives the same ids; a file
    changed since it was loaded replaces what its earlier version registered. If the import
    fails, whatever it registered before failing is removed again.

    Raises:
        PluginError: the file is missing or not a ``.py`` file, raises on import (the message
            names the file and the original exception; it is chained as ``__cause__``), or
            registers nothing.
    """
    kind = registry.kind
    p = Path(path).expanduser()
    if not p.exists():
        raise PluginError(f"The {kind} plugin {p} does not exist. Pass the path of a Python (.py) file. {how}")
    if not p.is_file() or p.suffix != ".py":
        raise PluginError(f"The {kind} plugin {p} is not a Python (.py) file. {how}")
    p = p.resolve()
    try:
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
    except OSError as exc:
        raise PluginError(f"The {kind} plugin {p} cannot be read: {exc}") from exc
    with _LOCK:
        cached = _LOADED.get((kind, p))
        if cached is not None:
            old_digest, old_module, old_ids = cached
            if old_digest == digest and old_ids and all(i in registry for i in old_ids):
                return list(old_ids)
            _forget(registry, old_module, old_ids)  # changed, or its entries were removed: load it afresh
            del _LOADED[(kind, p)]
        return _load(p, digest, registry, option, how)


def _load(p: Path, digest: str, registry: Registry, option: str, how: str) -> list[str]:
    kind = registry.kind
    stem = re.sub(r"\W", "_", p.stem)
    module_name = f"robustbench_wbc_{kind}_plugin_{stem}_{hashlib.sha256(f'{p}:{digest}'.encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(module_name, p)
    if spec is None or spec.loader is None:
        raise PluginError(f"The {kind} plugin {p} cannot be imported as a Python module. {how}")
    before = set(registry.list())
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up there
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # third-party code: name it, and the fix
        for i in set(registry.list()) - before:  # registered before it failed: undone
            registry.remove(i)
        sys.modules.pop(module_name, None)
        raise PluginError(
            f"The {kind} plugin {p} failed to import: {type(exc).__name__}: {exc}. "
            f"Fix the file (`python {p}` shows the traceback) or leave out {option}."
        ) from exc
    new = [i for i in registry.list() if i not in before]
    if not new:
        sys.modules.pop(module_name, None)
        raise PluginError(f"The {kind} plugin {p} registered no {kind}. {how}")
    _LOADED[(kind, p)] = (digest, module_name, new)
    return list(new)


def load_model_plugin(path: str | Path) -> list[str]:
    """Imports a ``--model-plugin`` file so that its ``@register_model`` builders join the zoo; gives their ids."""
    from robustbench_wbc.models.zoo import MODELS

    return load_plugin_file(path, MODELS, "--model-plugin", MODEL_HOW)


def load_attack_plugin(path: str | Path) -> list[str]:
    """Loads a ``--plugin`` file: a Python file of ``@register_attack`` factories, or a YAML preset; gives the ids."""
    from robustbench_wbc.attacks import ATTACKS
    from robustbench_wbc.attacks.presets import register_presets

    p = Path(path).expanduser()
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise PluginError(f"The attack preset {p} does not exist. Pass the path of a YAML preset or a Python file.")
        return register_presets([p])
    return load_plugin_file(p, ATTACKS, "--plugin", ATTACK_HOW)
