"""What the benchmark scripts share: the machine's description, a median-of-repeats timer, markdown tables.

Not a test and not part of the package: the scripts put ``benchmarks/`` on ``sys.path`` and
``import _common``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

# distribution names of the libraries a benchmark's numbers depend on
DISTRIBUTIONS = {"robustbench_wbc": "robustbench_wbc", "torch": "torch", "timm": "timm",
                 "torchattacks": "torchattacks", "ART": "adversarial-robustness-toolbox",
                 "pyautoattack": "pyautoattack"}


def cpu_model() -> str:
    """Gives the CPU's model name from /proc/cpuinfo (else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """Gives the CPU's feature flags (empty off Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def available_cores() -> int:
    """Gives the cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def set_threads(n: int = 0) -> int:
    """Sets torch's intra-op threads to ``n`` (0: the cores available); gives the number set."""
    n = n or available_cores()
    torch.set_num_threads(n)
    return n


def versions(names: Sequence[str] = tuple(DISTRIBUTIONS)) -> dict[str, str]:
    """Gives the installed version of each library named (``–`` where it is not installed)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(DISTRIBUTIONS.get(name, name))
        except importlib.metadata.PackageNotFoundError:
            out[name] = "–"
    return out


def now() -> str:
    """Gives the local date and time, ISO 8601 to the second, with the UTC offset."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def machine_lines(names: Sequence[str] = tuple(DISTRIBUTIONS)) -> list[str]:
    """Gives the markdown bullet lines every benchmark prints first: machine, date, versions."""
    flags = cpu_flags()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return [
        f"- machine: {cpu_model()}, {os.cpu_count()} cores ({available_cores()} available), "
        f"torch threads {torch.get_num_threads()}" + (f", {' '.join(isa)}" if isa else ""),
        f"- date: {now()}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions(names).items()),
    ]


@dataclass
class Timing:
    """Wall times of the repeats of one measurement, and what the last repeat returned."""

    times: list[float]
    result: Any = None

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def spread(self) -> float:
        """(max − min) / median: how much the repeats disagree."""
        return (max(self.times) - min(self.times)) / self.median if self.median > 0 else 0.0


def parse_device(parser: argparse.ArgumentParser, name: str) -> torch.device:
    """Gives the device ``--device name`` stands for, or exits 2 through ``parser`` naming the fix."""
    from robustbench_wbc.device import resolve_device

    try:
        return resolve_device(name)
    except ValueError as exc:
        parser.error(str(exc))


def timer(device: torch.device, clock: Callable[[], float] = time.perf_counter) -> Callable[[], float]:
    """Gives ``clock``; on a GPU, the wall clock read once the device has finished its queued work."""
    if device.type != "cuda":
        return clock

    def now() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return now


def order(items: Sequence[Any], r: int) -> list[Any]:
    """Gives repeat ``r``'s order of ``items``: as given for repeat 0, then a permutation seeded by ``r``.

    Not a rotation: a rotation keeps every item's predecessor, and an item that leaves the machine
    slower (ART's numpy threads, a bf16 run's caches) would then slow the same item every repeat.
    """
    items = list(items)
    return items if r == 0 else random.Random(r).sample(items, len(items))


def reseed(seed: int) -> None:
    """Seeds torch's and numpy's global generators (ART draws its random starts from numpy's)."""
    torch.manual_seed(seed)
    np.random.seed(seed)


def timed(fn: Callable[[], Any], repeats: int = 3, warmup: int = 0, seed: int | None = 0) -> Timing:
    """Runs ``fn()`` ``warmup`` + ``repeats`` times; gives the wall times of the repeats.

    With ``seed``, :func:`reseed` runs before each call (outside the time), so every repeat draws
    the same random numbers and does the same work.
    """
    times, result = [], None
    for i in range(warmup + repeats):
        if seed is not None:
            reseed(seed)
        t0 = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
    return Timing(times, result)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """Gives a markdown table; ``align`` has one letter per column, ``l`` or ``r`` (default: the
    first column left, the others right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    if len(align) != len(headers) or any(len(r) != len(headers) for r in rows):
        raise ValueError("every row and the alignment need one entry per header")
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
