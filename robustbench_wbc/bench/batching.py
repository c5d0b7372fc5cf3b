"""Batches that fit: a batch that runs out of memory is halved and retried, and the halving logged.

Attacks hold a graph per step and models differ by orders of magnitude in activation memory, so a
batch size right for one model can exhaust the memory (CPU or GPU) for another. Rather than fail
the cell, :func:`map_batches` halves the batch that failed, retries it, and keeps the smaller size
for the rest of the cell; only a single image that does not fit fails the cell.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import torch

logger = logging.getLogger(__name__)

R = TypeVar("R")

# what the allocators say when they give up: CUDA's (torch.OutOfMemoryError) and the CPU's
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocator running out of memory (CPU or GPU), not another error."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MESSAGES)


def map_batches(fn: Callable[[int, int], R], n: int, batch_size: int, what: str = "batch") -> list[R]:
    """Gives ``[fn(start, stop) for each batch of [0, n)]``, halving a batch that runs out of memory.

    A batch that raises an out-of-memory error (:func:`is_out_of_memory`) is retried at half the
    size (logged as a warning naming ``what``), down to one item; the smaller size is kept for the
    batches after it. Any other error propagates unchanged.
    """
    out: list[R] = []
    size, start = max(1, int(batch_size)), 0
    while start < n:
        stop = min(n, start + size)
        try:
            out.append(fn(start, stop))
        except Exception as exc:
            if not is_out_of_memory(exc) or stop - start == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            size = max(1, (stop - start) // 2)
            logger.warning("%s: out of memory on a batch of %d (%s); halving the batch to %d and retrying",
                           what, stop - start, type(exc).__name__, size)
            continue
        start = stop
    return out
