"""Where tensors live: ``--device auto|cpu|cuda`` for training and attacks alike.

The CPU is the default and every default is sized for it; ``auto`` takes a CUDA GPU when torch sees
one. Data stay on the CPU (splits, per-sample outcomes, the store); a model and the batch it is
given move to the device, and what comes back is moved to the CPU, so results are the same up to
floating-point noise wherever they were computed.
"""

from __future__ import annotations

import torch
from torch import nn

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Gives the device ``name`` stands for: ``auto`` is ``cuda`` when available, else ``cpu``.

    Raises:
        ValueError: an unknown name, or ``cuda`` on a machine where torch sees no GPU (the message
            says how to run on the CPU instead).
    """
    if isinstance(name, torch.device):
        return name
    text = (name or "auto").strip().lower()
    kind = text.split(":")[0]
    if kind not in DEVICES:
        raise ValueError(f"unknown device {name!r}; expected one of {', '.join(DEVICES)} (or cuda:N)")
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: torch sees no CUDA GPU on this machine; use --device cpu (or auto)")
    return torch.device(text)


def model_device(model: nn.Module) -> torch.device:
    """Gives the device of the model's first parameter or buffer (the CPU for a model with neither)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def describe_machine() -> str:
    """Names this machine as a benchmark table should: cores, CPU model, memory, GPU (or none), torch.

    >>> "torch" in describe_machine()
    True
    """
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    memory = ""
    try:
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal"))
        memory = f", {kib / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cores} cores of {cpu}{memory}, {gpu}, torch {torch.__version__}"
