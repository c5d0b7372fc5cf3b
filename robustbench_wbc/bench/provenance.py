"""What a cell's numbers depend on besides its coordinates, recorded with its rows and checked before reuse.

A cell's id (:attr:`~robustbench_wbc.bench.cells.Cell.id`) names *what* is measured: model weights,
split, attack, eps, seed, parameters. Its **provenance** names *by what* it was measured, each part a
column of the tidy table, and :attr:`Provenance.fingerprint` hashes them all:

* ``code_scoring`` — the version of the scoring code (the runner's evaluation, metrics, statistics,
  model checks): every cell depends on it, clean ones included;
* ``code_engine`` — the version of the suite's attack code (the engine, PGD, FGSM, CW, the crafting
  copy, :class:`~robustbench_wbc.attacks.base.BuiltAttack`): every attack cell, since the libraries'
  attacks also craft through it; 0 for a clean cell;
* ``code_backend`` — the version of the library wrapper of the cell's backend (``torchattacks``,
  ``art``, ``autoattack``); 0 for the engine's own attacks, plugins and clean cells;
* ``code_plugin`` — for an attack that is not built in, a hash of its factory's source (its qualified
  name where the source cannot be read), so that editing a plugin recomputes its cells; ``""`` otherwise;
* the library versions (``v_*`` columns): torch and timm for every cell, torchattacks,
  adversarial-robustness-toolbox or pyautoattack only for the cells of their backend;
* ``data_digest`` — for a SynthWBC split its :meth:`~robustbench_wbc.data.splits.SynthSpec.key` at the
  model's image size (the generator version and every parameter); for a real split a digest of its
  listing (each sample's path relative to the split's folder, file size, label; mask paths and sizes),
  from ``stat`` alone, computed once per split in a process;
* ``precision`` — ``fp32`` or ``bf16`` (the arithmetic the attack crafts in; ``none`` for a clean cell);
* ``batching`` — ``pass=N``, the runner's images per forward pass, and for an AutoAttack-backend cell
  ``aa_batch=B;aa_seeding=once-per-split``: the suite hands AutoAttack all of a split's attacked images
  in one call, which it batches by its own ``batch_size`` and seeds once, as when run directly.

Not part of it: ``git_sha`` and the suite's own version (``v_robustbench_wbc``), which change with
every commit or release; the component versions say when a change of the code matters. Nor is the
threat-model check (``check_threat_model``): it decides whether a cell counts, not its numbers, so a
stricter check applies to the cells computed after it (bump ``engine`` to apply it to stored ones).

The versions are the integers of :data:`VERSIONS`: bump one when a change to its code can move a
number. So that they cannot go stale silently, :data:`RECORDED` holds, beside each version, a hash of
its source files' syntax trees (docstrings and comments do not count), and
``tests/test_provenance.py`` fails when the code changed since: bump the version if the change can
move a number, then record the new hash with ``python -m robustbench_wbc.bench.provenance --update``
(it rewrites :data:`RECORDED`, and only it).
"""

from __future__ import annotations

import argparse
import ast
import functools
import hashlib
import inspect
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from robustbench_wbc.attacks.base import lookup
from robustbench_wbc.bench.cells import CLEAN, Cell
from robustbench_wbc.data.real import RealSplit
from robustbench_wbc.data.splits import SPLITS
from robustbench_wbc.registry import UnknownNameError

# Bump a component's version when a change to its code (SOURCES) can move a number; then run
# `python -m robustbench_wbc.bench.provenance --update`. Versions only go up.
VERSIONS: dict[str, int] = {
    "scoring": 1,
    "engine": 1,
    "torchattacks": 1,
    "art": 1,
    "autoattack": 1,
}

# Each component's code, relative to the package: a file, or ``file::name,name`` for top-level
# definitions (functions, classes, assignments) of a file that also holds code of no consequence.
SOURCES: dict[str, tuple[str, ...]] = {
    "scoring": ("bench/runner.py::_predict,_check_outputs,_head_sizes,evaluate_cell,attack_images,_attack_metrics",
                "metrics.py", "stats.py", "bench/diagnostics.py"),
    "engine": ("attacks/engine.py", "attacks/pgd.py", "attacks/fgsm.py", "attacks/cw.py", "attacks/fusion.py",
               "attacks/base.py::_CountBackward,PassCounter,crafting,autocast,frozen,COPY_BACKENDS,CHUNK_BATCHES,"
               "CHUNK_BYTES,BuiltAttack"),
    "torchattacks": ("attacks/torchattacks_backend.py",),
    "art": ("attacks/art_backend.py",),
    "autoattack": ("attacks/autoattack_backend.py",),
}

# The source hash each version was recorded with. Written by
# `python -m robustbench_wbc.bench.provenance --update`; do not edit by hand.
RECORDED: dict[str, tuple[int, str]] = {
    "scoring": (1, "d451320c6342eedc"),
    "engine": (1, "e037bc6d3ef223b0"),
    "torchattacks": (1, "8aceb9122fde3e53"),
    "art": (1, "f7ffec4f2781d794"),
    "autoattack": (1, "1cd47fbc68354b05"),
}

UPDATE_COMMAND = "python -m robustbench_wbc.bench.provenance --update"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent

# where an attack's factory lives decides the code it depends on
ENGINE_MODULES = frozenset({"robustbench_wbc.attacks.pgd", "robustbench_wbc.attacks.fgsm", "robustbench_wbc.attacks.cw"})
WRAPPER_MODULES = {"robustbench_wbc.attacks.torchattacks_backend": "torchattacks",
                   "robustbench_wbc.attacks.art_backend": "art",
                   "robustbench_wbc.attacks.autoattack_backend": "autoattack"}
# the libraries every cell depends on, and the one each backend adds (keys of library_versions())
BASE_LIBRARIES = ("torch", "timm")
BACKEND_LIBRARIES = {"torchattacks": "torchattacks", "art": "art", "autoattack": "pyautoattack"}
# how AutoAttack is seeded by the suite: one call per split, so once per split (autoattack_backend.py)
AA_SEEDING = "once-per-split"

# the tidy table's provenance columns (the library versions are the v_* columns)
COLUMNS = ["fingerprint", "code_scoring", "code_engine", "code_backend", "code_plugin", "data_digest", "precision",
           "batching"]
NO_FINGERPRINT = "no fingerprint (older store)"


def library_versions() -> dict[str, str]:
    """Gives the versions a result may depend on: this suite, torch, timm and the attack libraries.

    Recorded with every row as ``v_<name>``; a cell's fingerprint takes only those it depends on
    (:data:`BASE_LIBRARIES`, and its backend's :data:`BACKEND_LIBRARIES`).
    """
    import importlib.metadata

    from robustbench_wbc.models.hub import versions

    out = versions()
    for key, dist in (("art", "adversarial-robustness-toolbox"), ("pyautoattack", "pyautoattack")):
        try:
            out[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[key] = ""
    return out


# --- a cell's provenance -------------------------------------------------------------------------
@dataclass(frozen=True)
class Provenance:
    """Everything besides a cell's coordinates that can change its numbers (see the module docstring)."""

    code_scoring: int
    code_engine: int
    code_backend: int
    code_plugin: str
    data_digest: str
    precision: str
    batching: str
    libraries: tuple[tuple[str, str], ...]  # (name, version) of the libraries the cell depends on

    @property
    def fingerprint(self) -> str:
        """A short hash of every component: equal fingerprints, same code, libraries, data and batching."""
        blob = json.dumps(asdict(self), sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def columns(self) -> dict[str, object]:
        """Gives the values of :data:`COLUMNS` (the library versions are recorded as the ``v_*`` columns)."""
        return {"fingerprint": self.fingerprint, **{c: getattr(self, c) for c in COLUMNS[1:]}}


def attack_code(attack: str) -> tuple[int, int, str]:
    """Gives ``(code_engine, code_backend, code_plugin)`` for the registered attack ``attack`` (``none``: clean).

    Decided by the module that defines the attack's factory: the engine's (``pgd``, ``fgsm``, ``cw``),
    a built-in library wrapper's (the engine, since the libraries craft through its copy, and the
    wrapper), or anything else, a plugin's (the engine, since :class:`BuiltAttack` runs it, and the
    hash of the factory's source).
    """
    if attack == CLEAN:
        return 0, 0, ""
    factory = lookup(attack).factory
    module = getattr(factory, "__module__", "")
    if module in ENGINE_MODULES:
        return VERSIONS["engine"], 0, ""
    if module in WRAPPER_MODULES:
        return VERSIONS["engine"], VERSIONS[WRAPPER_MODULES[module]], ""
    return VERSIONS["engine"], 0, plugin_digest(factory)


@functools.cache
def plugin_digest(factory) -> str:
    """Gives a hash of a plugin factory's source (``inspect.getsource``), or of its qualified name if unreadable.

    A ``functools.partial`` is its function's source and its arguments' ``repr``.
    """
    if isinstance(factory, functools.partial):
        text = f"{plugin_digest(factory.func)}:{factory.args!r}:{sorted(factory.keywords.items())!r}"
    else:
        try:
            text = inspect.getsource(factory)
        except (OSError, TypeError):
            kind = factory if hasattr(factory, "__qualname__") else type(factory)
            text = f"{getattr(kind, '__module__', '')}.{kind.__qualname__}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cell_libraries(backend: str, versions: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Gives the (name, version) pairs of the libraries a cell of ``backend`` depends on."""
    names = [*BASE_LIBRARIES, *([BACKEND_LIBRARIES[backend]] if backend in BACKEND_LIBRARIES else [])]
    return tuple((n, str(versions.get(n, ""))) for n in names)


def batching(cell: Cell, batch_size: int) -> str:
    """Gives how the cell's images were batched: the runner's pass size, and AutoAttack's batch and seeding."""
    out = f"pass={int(batch_size)}"
    if not cell.is_clean and cell.backend == "autoattack":
        aa_batch = cell.params.get("batch_size", "")
        out += f";aa_batch={aa_batch};aa_seeding={AA_SEEDING}"
    return out


def cell_provenance(cell: Cell, image_size: int, versions: Mapping[str, str], batch_size: int) -> Provenance:
    """Gives the provenance the current code gives ``cell`` for a model of ``image_size`` pixels.

    ``versions``: this process's :func:`library_versions`; ``batch_size``: the runner's pass size.
    """
    try:
        engine, backend, plugin = attack_code(cell.attack)
    except UnknownNameError:  # the rows of a cell that failed for it; never reused
        engine, backend, plugin = VERSIONS["engine"], 0, "unregistered"
    precision = "none" if cell.is_clean else str(cell.params.get("precision", "fp32"))
    return Provenance(VERSIONS["scoring"], engine, backend, plugin, data_digest(cell.split, image_size), precision,
                      batching(cell, batch_size), cell_libraries(cell.backend, versions))


def stale_reasons(cell: Cell, current: Provenance, stored: Mapping[str, object] | None) -> list[str]:
    """Says, a short phrase each, how the provenance ``stored`` with a cell differs from ``current``.

    ``stored``: the cell's recorded columns (:data:`COLUMNS` and ``v_*``), or ``None`` for a cell
    stored without a fingerprint (before fingerprints were recorded).
    """
    if not stored or not _text(stored.get("fingerprint")):
        return [NO_FINGERPRINT]
    out = []
    wrapper = f"{cell.backend} wrapper"
    for name, col in (("scoring", "code_scoring"), ("engine", "code_engine"), (wrapper, "code_backend")):
        old, new = _int(stored.get(col)), getattr(current, col)
        if old != new:
            out.append(f"{name} {old}→{new}")
    if _text(stored.get("code_plugin")) != current.code_plugin:
        out.append(f"plugin {cell.attack} source changed")
    for lib, new in current.libraries:
        old = _text(stored.get(f"v_{lib}"))
        if old != new:
            out.append(f"{lib} {old or '?'}→{new or '?'}")
    if _text(stored.get("data_digest")) != current.data_digest:
        out.append(f"data of {cell.split} changed")
    for col in ("precision", "batching"):
        old, new = _text(stored.get(col)), getattr(current, col)
        if old != new:
            out.append(f"{col} {old or '?'}→{new}")
    return out or ["fingerprint differs"]


def _int(v: object) -> int:
    try:
        return 0 if v is None or pd.isna(v) else int(v)
    except (TypeError, ValueError):
        return 0


def _text(v: object) -> str:
    return "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)


# --- data digests --------------------------------------------------------------------------------
_LISTINGS: dict[str, tuple[object, str]] = {}  # split id -> (the object listed, its digest)


def data_digest(split_id: str, image_size: int) -> str:
    """Gives a digest of the data a split gives at ``image_size`` pixels, without loading it.

    SynthWBC: its :meth:`SynthSpec.key`. A real split: :func:`listing_digest` and the size. Any other
    loader: the hash of its source (its qualified name where that cannot be read), and the size.
    """
    split = SPLITS.get(split_id)
    if split.synth is not None:
        return split.synth.key(image_size)
    owner = getattr(split.loader, "__self__", None)
    cached = _LISTINGS.get(split.name)
    if cached is None or cached[0] is not (owner if owner is not None else split.loader):
        listed = listing_digest(owner) if isinstance(owner, RealSplit) else plugin_digest(split.loader)
        cached = _LISTINGS[split.name] = (owner if owner is not None else split.loader, listed)
    return hashlib.sha256(f"{cached[1]}:{int(image_size)}".encode()).hexdigest()[:24]


def listing_digest(split: RealSplit) -> str:
    """Gives a digest of a real split's listing: per sample, in order, its path relative to the split's
    folder, file size and label (and its array row, mask path and mask size where it has them); stats only."""
    root = split.folder if split.folder.is_dir() else split.folder.parent
    sizes: dict[Path, int] = {}

    def size(p: Path) -> int:
        if p not in sizes:  # an .npz holds many samples: one stat
            sizes[p] = _file_size(p)
        return sizes[p]

    h = hashlib.sha256(f"masks={split.has_masks}\n".encode())
    for s in split.samples:
        mask = "" if s.mask_path is None else f"{os.path.relpath(s.mask_path, root)}:{size(s.mask_path)}"
        h.update(f"{os.path.relpath(s.path, root)}:{size(s.path)}:{s.label}:{s.index}:{s.array_key}:{mask}\n".encode())
    return h.hexdigest()[:24]


def _file_size(path: Path) -> int:
    """Gives a file's size in bytes from a stat, or -1 where it cannot be read (its load will say why)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


# --- reading tables ------------------------------------------------------------------------------
def _expected_code(table: pd.DataFrame) -> pd.DataFrame:
    """Gives, per row, the code versions the current code records: code_engine, code_backend, code_plugin
    (``None`` for code_backend and code_plugin where the attack is not registered in this process)."""
    rows = {}
    for attack in table["attack"].unique():
        try:
            rows[attack] = attack_code(str(attack))
        except UnknownNameError:
            rows[attack] = (VERSIONS["engine"], None, None)
    codes = table["attack"].map(rows)
    return pd.DataFrame(codes.tolist(), index=table.index, columns=["code_engine", "code_backend", "code_plugin"])


def stale_rows(table: pd.DataFrame) -> pd.Series:
    """Gives a bool per row of ``table``: whether its recorded code or library versions differ from
    what the current code, in this process, would record for it.

    Compared, row by row:

    * ``code_scoring`` with :data:`VERSIONS` ``["scoring"]``;
    * ``code_engine`` with the engine's version (0 for a clean row);
    * ``code_backend`` and ``code_plugin`` with what :func:`attack_code` gives the row's attack; for an
      attack not registered in this process (a plugin not loaded) these two are not compared;
    * ``v_torch`` and ``v_timm`` with this process's torch and timm; ``v_torchattacks``, ``v_art`` and
      ``v_pyautoattack`` only on the rows whose ``backend`` is ``torchattacks``, ``art`` or
      ``autoattack`` respectively.

    Not compared: ``data_digest`` (recomputing it needs the data), ``precision`` and ``batching``
    (parameters of the run), ``git_sha`` and ``v_robustbench_wbc`` (they change with every commit or
    release, the component versions say when that matters). A row without these columns (a store
    written before they existed) or with an empty one is stale. Rows of every status count.
    """
    if table.empty:
        return pd.Series(False, index=table.index, dtype=bool)
    needed = ["attack", "backend", "code_scoring", "code_engine", "code_backend", "code_plugin", "v_torch", "v_timm"]
    if any(c not in table for c in needed):
        return pd.Series(True, index=table.index, dtype=bool)
    expected = _expected_code(table)
    recorded_int = {c: pd.to_numeric(table[c], errors="coerce").fillna(-1) for c in ("code_engine", "code_backend")}
    stale = pd.to_numeric(table["code_scoring"], errors="coerce").fillna(-1) != VERSIONS["scoring"]
    stale |= recorded_int["code_engine"] != expected["code_engine"]
    known = expected["code_backend"].notna()
    stale |= known & (recorded_int["code_backend"] != expected["code_backend"].where(known, -1))
    stale |= known & (table["code_plugin"].astype(object).fillna("").astype(str) != expected["code_plugin"].where(known, ""))
    current = library_versions()
    for lib in BASE_LIBRARIES:
        stale |= table[f"v_{lib}"].astype(object).fillna("").astype(str) != current.get(lib, "")
    for backend, lib in BACKEND_LIBRARIES.items():
        col = f"v_{lib}"
        mine = table["backend"] == backend
        recorded = table[col].astype(object).fillna("").astype(str) if col in table else pd.Series("", index=table.index)
        stale |= mine & (recorded != current.get(lib, ""))
    return stale.astype(bool)


def _components(t: pd.DataFrame) -> list[tuple[str, pd.Series, pd.Series]]:
    """(name, the values, the rows they apply to) for each component :func:`mixed_versions` compares."""
    ints = {c: pd.to_numeric(t[c], errors="coerce").fillna(0).astype(int) if c in t else pd.Series(0, index=t.index)
            for c in ("code_scoring", "code_engine", "code_backend")}
    text = {c: t[c].astype(object).fillna("").astype(str) if c in t else pd.Series("", index=t.index)
            for c in ("code_plugin", "data_digest", "batching", "v_torch", "v_timm",
                      *(f"v_{lib}" for lib in BACKEND_LIBRARIES.values()))}
    everything = pd.Series(True, index=t.index)
    scoring = ints["code_scoring"].map(lambda v: str(v) if v else "not recorded")
    out = [("scoring", scoring, everything), ("engine", ints["code_engine"].astype(str), ints["code_engine"] != 0)]
    for backend in sorted(t["backend"].dropna().unique()):
        mine = t["backend"] == backend
        out.append((f"{backend} wrapper", ints["code_backend"].astype(str), mine & (ints["code_backend"] != 0)))
        out.append((f"batching of {backend}", text["batching"], mine & (text["batching"] != "")))
        if backend in BACKEND_LIBRARIES:
            out.append((BACKEND_LIBRARIES[backend], text[f"v_{BACKEND_LIBRARIES[backend]}"], mine))
    for attack in sorted(t.loc[text["code_plugin"] != "", "attack"].unique()):
        out.append((f"plugin {attack}", text["code_plugin"], (t["attack"] == attack) & (text["code_plugin"] != "")))
    out += [(lib, text[f"v_{lib}"], everything) for lib in BASE_LIBRARIES]
    for split in sorted(t["split"].dropna().unique()):
        out.append((f"data of {split}", text["data_digest"].str[:8], (t["split"] == split) & (text["data_digest"] != "")))
    return out


def mixed_versions(table: pd.DataFrame, keys: Sequence[str] = ("model", "model_seed")) -> pd.DataFrame:
    """Gives one row per group of ``keys`` whose ``ok`` rows disagree on a component: ``keys`` and ``reason``.

    Among a group's rows with status ``ok``, these must each take a single value (``reason`` names
    each that does not, with its values, e.g. ``engine: 3, 4; torch: 2.14.0, 2.14.1``):

    * ``scoring`` (``code_scoring``) over all rows, "not recorded" standing for a row without one;
    * ``engine`` (``code_engine``) over the attack rows;
    * per backend, its wrapper (``code_backend``, where not 0), its ``batching``, and its library's
      version (``v_torchattacks``, ``v_art``, ``v_pyautoattack``) over that backend's rows;
    * per plugin attack, its source hash (``code_plugin``) over its rows;
    * ``torch`` and ``timm`` (``v_torch``, ``v_timm``) over all rows;
    * per split, the data (``data_digest``, shown by its first 8 characters) over its rows.

    Not compared: ``precision`` (fp32 and bf16 cells are different cells), ``git_sha`` and
    ``v_robustbench_wbc``. Gives an empty frame (those columns) when every group agrees.
    """
    keys = list(keys)
    cols = [*keys, "reason"]
    if table.empty or "status" not in table:
        return pd.DataFrame(columns=cols)
    ok = table[table["status"] == "ok"]
    rows = []
    for key, group in ok.groupby(keys, sort=True, dropna=False):
        parts = []
        for name, values, applies in _components(group):
            seen = sorted(set(values[applies]), key=_natural)
            if len(seen) > 1:
                parts.append(f"{name}: {', '.join(seen)}")
        if parts:
            rows.append({**dict(zip(keys, key if isinstance(key, tuple) else (key,))), "reason": "; ".join(parts)})
    return pd.DataFrame(rows, columns=cols)


def _natural(s: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


# --- the guard: the versions cannot go stale silently --------------------------------------------
def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:]
    return tree


def _dump(node: object) -> str:
    """A dump of a syntax tree that leaves out empty fields (so Python versions that add one agree)."""
    if isinstance(node, ast.AST):
        fields = [f"{k}={_dump(v)}" for k, v in ast.iter_fields(node)
                  if v is not None and v != [] and k not in ("type_comment", "kind")]
        return f"{type(node).__name__}({','.join(fields)})"
    if isinstance(node, list):
        return f"[{','.join(_dump(v) for v in node)}]"
    return repr(node)


def _defines(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {t.id for t in node.targets if isinstance(t, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    return set()


def source_digest(source: str, names: Sequence[str] | None = None, where: str = "<source>") -> str:
    """Gives a hash of Python ``source``'s syntax tree without docstrings (comments and layout do not count).

    With ``names``, only the top-level definitions of those names count, in the file's order; a name
    the source does not define raises ``ValueError``.
    """
    tree = _strip_docstrings(ast.parse(source))
    nodes: list[ast.AST] = [tree]
    if names:
        wanted = set(names)
        nodes = [n for n in tree.body if _defines(n) & wanted]
        missing = wanted - set().union(*(_defines(n) for n in nodes))
        if missing:
            raise ValueError(f"{where} defines no {', '.join(sorted(missing))} at top level: fix SOURCES in "
                             f"robustbench_wbc/bench/provenance.py")
    return hashlib.sha256("\n".join(_dump(n) for n in nodes).encode()).hexdigest()[:16]


def component_digest(component: str, root: Path = PACKAGE_ROOT) -> str:
    """Gives the hash of a component's :data:`SOURCES` as they are now (:func:`source_digest` of each)."""
    h = hashlib.sha256()
    for entry in SOURCES[component]:
        path, _, names = entry.partition("::")
        text = (root / path).read_text(encoding="utf-8")
        h.update(f"{entry}\n{source_digest(text, names.split(',') if names else None, path)}\n".encode())
    return h.hexdigest()[:16]


def check() -> list[str]:
    """Gives one message per component whose recorded (version, source hash) is not the current one."""
    out = []
    for component, version in VERSIONS.items():
        recorded_version, recorded_hash = RECORDED.get(component, (None, ""))
        now = component_digest(component)
        if recorded_version is None:
            out.append(f"no source hash is recorded for {component}: record it with `{UPDATE_COMMAND}`")
        elif recorded_version != version:
            out.append(f"{component} is at version {version}, but the source hash recorded is version "
                       f"{recorded_version}'s: record the new hash with `{UPDATE_COMMAND}`")
        elif recorded_hash != now:
            out.append(f"the code of {component} ({', '.join(SOURCES[component])}) changed since version {version} "
                       f"was recorded: if the change can move a number, bump its version (VERSIONS in "
                       f"robustbench_wbc/bench/provenance.py); then record the new hash with `{UPDATE_COMMAND}`")
    return out


_RECORDED_RE = re.compile(r"^RECORDED: dict\[str, tuple\[int, str\]\] = \{\n.*?^\}\n", re.MULTILINE | re.DOTALL)


def update(path: Path = Path(__file__)) -> dict[str, tuple[int, str]]:
    """Rewrites :data:`RECORDED` in this file with each component's current version and source hash; gives it."""
    from robustbench_wbc.atomic import atomic_open

    table = {c: (v, component_digest(c)) for c, v in VERSIONS.items()}
    lines = "".join(f"    {c!r}: ({v}, {h!r}),\n".replace("'", '"') for c, (v, h) in table.items())
    text = path.read_text(encoding="utf-8")
    new, count = _RECORDED_RE.subn(lambda _: f"RECORDED: dict[str, tuple[int, str]] = {{\n{lines}}}\n", text)
    if count != 1:
        raise RuntimeError(f"{path}: the RECORDED table was not found where --update writes it")
    mode = path.stat().st_mode & 0o777
    with atomic_open(path, "w") as f:
        f.write(new)
    path.chmod(mode)  # the temporary file was made private
    RECORDED.clear()
    RECORDED.update(table)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m robustbench_wbc.bench.provenance [--update]``: checks (exit 1 if stale) or records the hashes."""
    parser = argparse.ArgumentParser(prog="python -m robustbench_wbc.bench.provenance", description=main.__doc__)
    parser.add_argument("--update", action="store_true",
                        help="record each component's current source hash beside its version")
    args = parser.parse_args(argv)
    if args.update:
        before = dict(RECORDED)
        for c, (v, h) in update().items():
            was = before.get(c, (None, ""))
            sys.stdout.write(f"{c}: version {v}, source {h}{'' if was == (v, h) else f' (was {was[0]}, {was[1]})'}\n")
        return 0
    problems = check()
    for p in problems:
        sys.stdout.write(p + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
