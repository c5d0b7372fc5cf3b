"""How fast SynthWBC renders, and how much memory a large set takes. Not a test: numbers to read.

    .venv/bin/python benchmarks/bench_synth.py            # 64 px, 8,192 images, median of 3
    .venv/bin/python benchmarks/bench_synth.py --large    # also a 100,000-image set to disk

Prints images/s (images with masks, 64×64, per domain) and, with --large, the peak resident
memory of writing 100,000 images in batches (in a child process, so this one's memory doesn't count).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from robustbench_wbc.data.synth import DOMAINS, generate


def rate(n: int, size: int, domain: str, repeats: int) -> float:
    generate(1, 256, size, DOMAINS[domain])  # warm up (FFT plans, allocator)
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        generate(100 + r, n, size, DOMAINS[domain])
        times.append(time.perf_counter() - t0)
    return n / statistics.median(times)


def large(n: int) -> None:
    code = (
        "import resource, sys, time; from pathlib import Path\n"
        "from robustbench_wbc.data.cache import write_set\n"
        "from robustbench_wbc.data.splits import SPLITS\n"
        f"t = time.perf_counter(); card = write_set(SPLITS.get('synth:train').synth, {n}, 64, Path(sys.argv[1]))\n"
        "print(f'{card[\"n\"]} images written in {time.perf_counter() - t:.1f} s; '\n"
        "      f'peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB')\n"
    )
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, "-c", code, d], check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=8192)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--large", action="store_true", help="also write a 100,000-image set and report memory")
    a = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    for name in DOMAINS:
        print(f"{name:<13} {rate(a.n, a.size, name, a.repeats):8.0f} images/s  ({a.n} images with masks, {a.size} px)")
    print(f"this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if a.large:
        large(100_000)


if __name__ == "__main__":
    main()
