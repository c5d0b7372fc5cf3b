"""`make bench`: every benchmark, one after another, into benchmarks/README.md.

    .venv/bin/python benchmarks/run_all.py            # the full set (about 30 min on 2 cores)
    .venv/bin/python benchmarks/run_all.py --quick    # small sizes: checks the scripts run (minutes)
    .venv/bin/python benchmarks/run_all.py --only attack_throughput,overhead --no-write

Each script runs in its own process (so one's memory and threads don't colour the next) and
prints a markdown section; the sections replace what lies between the ``make-bench`` markers of
``benchmarks/README.md`` (with ``--no-write``, they are only printed). A script that fails is
reported in its section with its exit status and the end of its output; the others still run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
START, END = "<!-- make-bench:start -->", "<!-- make-bench:end -->"

# name → (script, full arguments, quick arguments)
BENCHMARKS = {
    "attack_throughput": ("bench_attack_throughput.py", ["--zoo", "--explore"], ["--quick"]),
    "autoattack_cost": ("bench_autoattack_cost.py", ["--version", "standard", "--n-images", "64", "--repeats", "3"],
                        ["--version", "fast", "--n-images", "16", "--repeats", "1"]),
    "synth": ("bench_synth.py", [], ["--n", "512", "--repeats", "1"]),
    "training": ("bench_training.py", [], ["--steps", "2", "--repeats", "1", "--models", "resnet10t_cls"]),
    "batch_size": ("bench_batch_size.py", [], ["--models", "resnet10t_cls", "--sizes", "32,128", "--n-images", "64",
                                               "--repeats", "1"]),
    "overhead": ("bench_overhead.py", [], ["--cells", "300"]),
    "dask": ("bench_dask.py", ["--models", "resnet10t_cls,resnet10t_multitask", "--n-images", "256"], ["--n-images", "16"]),
}


def run_one(name: str, quick: bool, timeout: float) -> str:
    script, full, small = BENCHMARKS[name]
    cmd = [sys.executable, str(HERE / script), *(small if quick else full)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent)
    except subprocess.TimeoutExpired:
        return f"### {name}\n\n_Stopped after {timeout:.0f} s: `{' '.join(cmd[1:])}`._\n"
    took = time.perf_counter() - t0
    shown = " ".join(["python", f"benchmarks/{script}", *cmd[2:]])
    if p.returncode != 0:
        tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-15:])
        return f"### {name}\n\n_`{shown}` failed (exit {p.returncode}):_\n\n```\n{tail}\n```\n"
    body = "\n".join("#### " + line[3:] if line.startswith("## ") else line for line in p.stdout.strip().splitlines())
    return f"### {name}\n\n`{shown}` ({took:.0f} s)\n\n{body}\n"


def write_section(readme: Path, body: str) -> None:
    text = readme.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        text = f"{head}{START}\n{body}\n{END}{tail}"
    else:
        text = f"{text.rstrip()}\n\n## The latest `make bench`\n\n{START}\n{body}\n{END}\n"
    readme.write_text(text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a check that every script runs")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per script")
    ap.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/README.md as it is")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; expected {', '.join(BENCHMARKS)}")
    sections = []
    for n in names:
        print(f"[make bench] {n} …", file=sys.stderr, flush=True)
        sections.append(run_one(n, args.quick, args.timeout))
        print(sections[-1], flush=True)
    if not args.no_write:
        mode = " (--quick: small sizes, not for reading)" if args.quick else ""
        write_section(HERE / "README.md", f"_Written by `make bench`{mode}._\n\n" + "\n".join(sections))


if __name__ == "__main__":
    main()
