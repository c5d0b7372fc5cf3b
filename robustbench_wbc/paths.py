"""Where the suite keeps what it makes outside the repository: the cache of trained models."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """Gives the cache directory: ``$WBC_ROBUST_HOME``, else ``$XDG_CACHE_HOME/robustbench_wbc``."""
    env = os.environ.get("WBC_ROBUST_HOME")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (Path(xdg) / "robustbench_wbc").resolve()


PROFILE_ENV = "WBC_ROBUST_PROFILE"


def profile_name() -> str:
    """Gives the training profile's name, ``$WBC_ROBUST_PROFILE`` (``default`` when unset or empty)."""
    return os.environ.get(PROFILE_ENV, "") or "default"


def checkpoint_dir(model_id: str) -> Path:
    """Gives the directory holding one model's weights and card (under ``checkpoints/<profile>/``
    for a training profile other than the default, ``$WBC_ROBUST_PROFILE``)."""
    profile = profile_name()
    root = home() / "checkpoints"
    return root / model_id if profile == "default" else root / profile / model_id
