"""One generic registry, used for models, attacks and splits.

A registry maps an id to an entry. Entries are added by decorators (the decorated function's
name is the id, nothing repeats it as a string) or, for third-party code, by the package
entry-point groups ``robustbench_wbc.models`` and ``robustbench_wbc.attacks``: each entry
point names a module (or ``module:attr``) whose import registers its entries.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib.metadata
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.:@\-]*$")


class UnknownNameError(KeyError):
    """An id that no registry entry has; the message names the closest ones."""

    def __init__(self, kind: str, name: str, suggestions: list[str], hint: str = "") -> None:
        self.kind, self.name, self.suggestions = kind, name, suggestions
        msg = f"Unknown {kind} {name!r}."
        if suggestions:
            msg += f" Did you mean: {', '.join(suggestions)}?"
        if hint:
            msg += f" {hint}"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return self.args[0]


class PluginError(RuntimeError):
    """A plugin entry point that could not be loaded."""


def _natural_key(s: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


class Registry(Generic[T]):
    """A name → entry map with wildcard listing, suggestions and entry-point plugins.

    Args:
        kind: what the entries are, used in messages ("model", "attack", "split").
        group: the entry-point group whose plugins are loaded on first use, or ``None``.
        list_command: the CLI command that lists the entries, named in error messages.
    """

    def __init__(self, kind: str, group: str | None = None, list_command: str = "") -> None:
        self.kind = kind
        self.group = group
        self.list_command = list_command
        self._entries: dict[str, T] = {}
        self._plugins_loaded = group is None

    def add(self, name: str, entry: T) -> T:
        """Registers ``entry`` under ``name``; a second entry with the same name is an error."""
        if not _ID_RE.fullmatch(name):
            raise ValueError(
                f"Invalid {self.kind} id {name!r}: use lower-case letters, digits and _ - . : @"
            )
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> None:
        """Forgets ``name`` (used by tests and by plugins that replace an entry)."""
        self._entries.pop(name, None)

    def load_plugins(self) -> None:
        """Imports every installed entry point of this registry's group (once)."""
        if self._plugins_loaded:
            return
        for ep in importlib.metadata.entry_points(group=self.group):
            try:
                ep.load()
            except Exception as exc:  # a plugin is third-party code: name it, and the fix
                raise PluginError(
                    f"The {self.kind} plugin {ep.name!r} ({ep.value}, entry-point group "
                    f"{self.group!r}) failed to load: {type(exc).__name__}: {exc}. "
                    f"Fix or uninstall the package that provides it."
                ) from exc
        self._plugins_loaded = True  # only once every plugin loaded: a broken one keeps failing loudly

    def get(self, name: str) -> T:
        """Gives the entry registered as ``name``, or raises :class:`UnknownNameError`."""
        self.load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            if name.lower() in self._entries:  # ids are lower-case; `raabin:TestB` means `raabin:testb`
                return self._entries[name.lower()]
            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
            hint = f"See `wbc-robust {self.list_command}`." if self.list_command else ""
            raise UnknownNameError(self.kind, name, close, hint) from None

    def __contains__(self, name: object) -> bool:
        self.load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        self.load_plugins()
        return len(self._entries)

    def list(
        self,
        filter: str | Iterable[str] = "",
        exclude_filters: str | Iterable[str] = (),
        where: Callable[[T], bool] | None = None,
    ) -> list[str]:
        """Gives the ids matching the wildcard ``filter`` (all when empty), naturally sorted."""
        self.load_plugins()
        includes = [filter] if isinstance(filter, str) else list(filter)
        excludes = [exclude_filters] if isinstance(exclude_filters, str) else list(exclude_filters)
        names = list(self._entries)
        if any(includes):
            names = [n for n in names if any(fnmatch.fnmatchcase(n, f) for f in includes if f)]
        for f in excludes:
            names = [n for n in names if not fnmatch.fnmatchcase(n, f)]
        if where is not None:
            names = [n for n in names if where(self._entries[n])]
        return sorted(names, key=_natural_key)

    def resolve(self, spec: str | Iterable[str], all_filter: Callable[[T], bool] | None = None) -> list[str]:
        """Turns a user's selection into ids: ``all``, wildcards, or comma-separated names.

        Each plain name must exist (else :class:`UnknownNameError`); each wildcard must match
        at least one entry. ``all`` gives the entries for which ``all_filter`` holds.
        """
        parts = [p.strip() for p in ([spec] if isinstance(spec, str) else spec) for p in p.split(",")]
        parts = [p for p in parts if p]
        if not parts:
            raise ValueError(f"No {self.kind} given")
        out: list[str] = []
        for part in parts:
            if part == "all":
                found = self.list(where=all_filter)
            elif any(c in part for c in "*?["):
                found = self.list(part)
                if not found:
                    raise UnknownNameError(self.kind, part, [], "The pattern matches nothing.")
            else:
                self.get(part)
                found = [part if part in self._entries else part.lower()]
            out.extend(f for f in found if f not in out)
        return out
