"""`make bench`: every benchmark, one after another, into benchmarks/README.md.

    .venv/bin/python benchmarks/run_all.py            # the full set (about 30 min on 2 cores)
    .venv/bin/python benchmarks/run_all.py --quick    # small sizes: checks the scripts run (minutes)
    .venv/bin/python benchmarks/run_all.py --only attack_throughput,overhead --no-write

Each script runs in its own process (so one's memory and threads don't colour the next) and
prints a markdown section (its tables, with the machine, the date and the versions); each section is
committed as ``benchmarks/results/<name>.md`` with the command, its wall time and the commit it ran
at, and the README's section between its ``wbc:render bench`` markers is rendered from those files
(``robustbench_wbc/report/readme.py``; with ``--no-write`` nothing is written, only printed). A
script that fails is reported in its section with its exit status and the end of its output; the
others still run. ``--quick`` sections are printed only, never written: they are not for reading.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

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


def commit() -> str:
    """The checkout's commit, marked ``-dirty`` where tracked files differ from it."""
    sys.path.insert(0, str(HERE.parent))
    from robustbench_wbc.bench.runner import git_sha

    return git_sha() or "unknown"


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
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return f"### {name}\n\n`{shown}` ({took:.0f} s)\n\n- commit: `{commit()}` (`make bench`, {stamp})\n\n{body}\n"


def write_results(sections: dict[str, str]) -> None:
    """Commits each section as benchmarks/results/<name>.md, then renders the README's sections from them."""
    RESULTS.mkdir(exist_ok=True)
    for name, text in sections.items():
        (RESULTS / f"{name}.md").write_text(text)
    subprocess.run([sys.executable, "-m", "robustbench_wbc.report.readme"], cwd=HERE.parent, check=True)


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
    sections = {}
    for n in names:
        print(f"[make bench] {n} …", file=sys.stderr, flush=True)
        sections[n] = run_one(n, args.quick, args.timeout)
        print(sections[n], flush=True)
    if not args.no_write and not args.quick:
        write_results(sections)


if __name__ == "__main__":
    main()
