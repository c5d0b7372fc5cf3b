"""Out of memory on a large batch: the batch is halved and retried, and the halving is logged."""

from __future__ import annotations

import logging

import pytest
import torch

from robustbench_wbc.bench.batching import is_out_of_memory, map_batches


def fits(limit: int, calls: list):
    def fn(start: int, stop: int):
        calls.append((start, stop))
        if stop - start > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {stop - start} images")
        return list(range(start, stop))
    return fn


def test_a_batch_that_does_not_fit_is_halved_retried_and_logged(caplog):
    calls: list = []
    with caplog.at_level(logging.WARNING, logger="robustbench_wbc.bench.batching"):
        out = map_batches(fits(20, calls), 100, 64, what="pgd on m")
    assert [i for b in out for i in b] == list(range(100))  # every item once, in order
    assert calls[:3] == [(0, 64), (0, 32), (0, 16)]  # halved twice, then kept small
    assert all(stop - start <= 16 for start, stop in calls[3:])
    halvings = [r.getMessage() for r in caplog.records]
    assert len(halvings) == 2 and "pgd on m: out of memory on a batch of 64" in halvings[0]
    assert "halving the batch to 16" in halvings[1]


def test_cpu_allocator_messages_count_as_out_of_memory():
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                                         "can't allocate memory: you tried to allocate 1099511627776 bytes"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only the allocators' errors


def test_other_errors_and_a_single_image_that_does_not_fit_propagate():
    def broken(start, stop):
        raise RuntimeError("shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        map_batches(broken, 10, 4)
    with pytest.raises(torch.OutOfMemoryError):
        map_batches(fits(0, []), 3, 2)
    assert map_batches(fits(5, []), 0, 8) == []


class OnlySmallBatches(torch.nn.Module):
    """A classifier whose forward pass 'runs out of memory' on more than ``limit`` images."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                       torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5))
        self.limit = limit

    def forward(self, x):
        if len(x) > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate a batch of {len(x)}")
        return self.net(x)


def test_a_run_on_a_model_that_runs_out_of_memory_halves_its_batches(caplog):
    import robustbench_wbc as rw

    with caplog.at_level(logging.WARNING):
        table = rw.benchmark(OnlySmallBatches(2), name="small_batches", splits=["synth:test"], attacks=["pgd"],
                             eps=[8 / 255], n_images=20, image_size=32)
    assert set(table["status"]) == {"ok"}  # no cell lost to the memory limit
    assert set(table.loc[table["metric"] == "accuracy", "n"]) == {20}  # every image scored
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "predictions: out of memory on a batch of 20" in messages
    assert "pgd on small_batches: out of memory" in messages
