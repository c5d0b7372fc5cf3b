"""Model plugins from a file: a Python file whose import registers models with ``@register_model``.

The file-based twin of the ``robustbench_wbc.models`` entry-point group, for models that live in
a script rather than an installed package (``wbc-robust run --model-plugin my_models.py``)::

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

from robustbench_wbc.models.zoo import MODELS
from robustbench_wbc.registry import PluginError

_MODULE_PREFIX = "robustbench_wbc_model_plugin_"
_LOCK = threading.Lock()
# resolved path → (sha256 of the source, module name, ids it registered)
_LOADED: dict[Path, tuple[str, str, list[str]]] = {}

_HOW = ("A model plugin is a Python file that decorates model builders with "
        "`@register_model(family=..., encoder=..., recipe=...)` from robustbench_wbc.models.")


def _forget(module_name: str, ids: list[str]) -> None:
    """Removes the ids a module registered (those still pointing at its builders) and the module."""
    for i in ids:
        entry = MODELS._entries.get(i)
        if entry is not None and getattr(entry.builder, "__module__", None) == module_name:
            MODELS.remove(i)
    sys.modules.pop(module_name, None)


def load_model_plugin(path: str | Path) -> list[str]:
    """Imports the Python file ``path`` so that it registers its models; gives the ids it registered.

    Loading the same, unchanged file again registers nothing new and gives the same ids; a file
    changed since it was loaded replaces the models its earlier version registered. If the import
    fails, whatever it registered before failing is removed again.

    Raises:
        PluginError: the file is missing or not a ``.py`` file, raises on import (the message
            names the file and the original exception; it is chained as ``__cause__``), or
            registers no model.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise PluginError(f"The model plugin {p} does not exist. Pass the path of a Python (.py) file. {_HOW}")
    if not p.is_file() or p.suffix != ".py":
        raise PluginError(f"The model plugin {p} is not a Python (.py) file. {_HOW}")
    p = p.resolve()
    try:
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
    except OSError as exc:
        raise PluginError(f"The model plugin {p} cannot be read: {exc}") from exc
    with _LOCK:
        cached = _LOADED.get(p)
        if cached is not None:
            old_digest, old_module, old_ids = cached
            if old_digest == digest and old_ids and all(i in MODELS for i in old_ids):
                return list(old_ids)
            _forget(old_module, old_ids)  # changed, or its models were removed: load it afresh
            del _LOADED[p]
        return _load(p, digest)


def _load(p: Path, digest: str) -> list[str]:
    stem = re.sub(r"\W", "_", p.stem)
    module_name = f"{_MODULE_PREFIX}{stem}_{hashlib.sha256(f'{p}:{digest}'.encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(module_name, p)
    if spec is None or spec.loader is None:
        raise PluginError(f"The model plugin {p} cannot be imported as a Python module. {_HOW}")
    before = set(MODELS.list())
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up there
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # third-party code: name it, and the fix
        for i in set(MODELS.list()) - before:  # registered before it failed: undone
            MODELS.remove(i)
        sys.modules.pop(module_name, None)
        raise PluginError(
            f"The model plugin {p} failed to import: {type(exc).__name__}: {exc}. "
            f"Fix the file (`python {p}` shows the traceback) or leave out --model-plugin."
        ) from exc
    new = [i for i in MODELS.list() if i not in before]
    if not new:
        sys.modules.pop(module_name, None)
        raise PluginError(f"The model plugin {p} registered no model. {_HOW}")
    _LOADED[p] = (digest, module_name, new)
    return list(new)
