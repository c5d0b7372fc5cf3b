"""The package version: the single source read by ``pyproject.toml`` and the code."""

__version__ = "0.1.0"
