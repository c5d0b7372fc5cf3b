"""The numbers the READMEs quote, rendered from committed tables between markers: nothing typed.

A marked section is an HTML comment naming what to render, then the rendered text, then an end
marker::

    <!-- wbc:render leaderboard results/demo columns=model,clean_acc_id -->
    …rendered text…
    <!-- wbc:end -->

``python -m robustbench_wbc.report.readme`` (``make readme``) rewrites every marked section of
:data:`DOCUMENTS` from the committed tables; ``--check`` only compares, and exits 1 naming each
section that differs (the test suite runs the same comparison). What may be rendered
(:data:`SECTIONS`):

``provenance DIR``
    when, on what machine, from which commit and by which command ``DIR``'s table was made (its
    ``provenance.json``, written by ``wbc-robust publish``).
``leaderboard DIR [by=linf|l2|ood|seg|seg-l2] [columns=a,b,…]``
    the leaderboard of ``DIR``'s table (paired ranks from its ``samples.parquet``), its legend,
    and the provenance line; ``columns`` keeps those (``rank`` and ``model`` always).
``shift DIR``
    the effective-robustness fit and the corruption error of ``DIR``'s table.
``cross-task DIR``
    the cross-task matrix of ``DIR``'s multitask models.
``claim DIR name=ood|id|basophil|attack``
    one of the mission's claims as paired comparisons (:mod:`robustbench_wbc.report.claims`).
``claims-summary DIR``
    one line per claim: how many of its comparisons show either model ahead, or no difference.
``seeds DIR [key=clean_acc_ood]``
    each model's leaderboard number ``key`` per training seed, and the spread between seeds.
``attacks DIR [target=cls] [metrics=robust_accuracy,…] [eps=8/255] [attacks=a,b,…]``
    a model × attack table of each metric at one eps on one head, and each attack's backward passes.
``finetune DIR [metrics=balanced_accuracy,nucleus_dice]``
    the fine-tuning table ``DIR/finetune.parquet`` (``wbc-robust finetune``), mean ± sd over folds.
``bench DIR [names=a,b,…]``
    the sections ``make bench`` committed as ``DIR/<name>.md`` (their tables, machine, date, commit).

Paths are relative to the repository root. A renderer's output is deterministic (bootstraps are
seeded), so a section changes only when its table does.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from robustbench_wbc.bench.results import PROVENANCE, ResultsError, open_results

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = ("README.md", "results/README.md", "benchmarks/README.md")
START = re.compile(r"<!-- wbc:render (?P<spec>[^>]*?) -->\n")
END = "<!-- wbc:end -->"


class SectionError(ValueError):
    """A marker that names no known section, or whose arguments or table are wrong."""


def _args(words: list[str]) -> tuple[list[str], dict[str, str]]:
    pos, kw = [], {}
    for w in words:
        if "=" in w:
            k, v = w.split("=", 1)
            kw[k] = v
        else:
            pos.append(w)
    return pos, kw


def provenance_line(directory: Path) -> str:
    """One sentence: when, where, from which commit and by which command the table in ``directory`` was made."""
    path = directory / PROVENANCE
    if not path.is_file():
        raise SectionError(f"{path} is missing: write it with `wbc-robust publish`")
    p = json.loads(path.read_text())
    shas = ", ".join(f"`{s}`" for s in p["commits"]) or "an unknown commit"
    return (f"_From `{directory.relative_to(ROOT) if directory.is_relative_to(ROOT) else directory}` "
            f"({p['cells']:,} cells), made on {p['date']} on {p['machine']} at commit {shas} by "
            f"`{p['command']}`._\n")


def _leaderboard(directory: Path, kw: dict[str, str]) -> str:
    from robustbench_wbc.report.ensemble import ensemble_or_reason
    from robustbench_wbc.report.leaderboard import leaderboard, to_markdown

    results = open_results(directory)
    table = results.table()
    ens, why = ensemble_or_reason(results, table)
    board = leaderboard(table, ens, by=kw.get("by"), samples=results.samples)
    if why:
        board.attrs["notes"].append(why)
    if "columns" in kw:
        keep = ["rank", "tied", "model", *[c for c in kw["columns"].split(",") if c not in ("rank", "model")]]
        unknown = [c for c in keep if c not in board.columns]
        if unknown:
            raise SectionError(f"leaderboard {directory}: no columns {unknown}; it has {list(board.columns)}")
        board = board[[c for c in board.columns if c in keep or any(c == f"{k}_sd" for k in keep)]]
    return provenance_line(directory) + "\n" + to_markdown(board)


def _shift(directory: Path, kw: dict[str, str]) -> str:
    from robustbench_wbc.report.shift import shift_report

    return provenance_line(directory) + "\n" + shift_report(open_results(directory).table())


def _cross_task(directory: Path, kw: dict[str, str]) -> str:
    from robustbench_wbc.report.ensemble import cross_task, cross_task_markdown

    return provenance_line(directory) + "\n" + cross_task_markdown(cross_task(open_results(directory).table()))


def _provenance(directory: Path, kw: dict[str, str]) -> str:
    return provenance_line(directory)


def _claim(directory: Path, kw: dict[str, str]) -> str:
    from robustbench_wbc.report.claims import CLAIMS, claim_markdown

    if kw.get("name") not in CLAIMS:
        raise SectionError(f"claim {directory}: give name= one of {', '.join(CLAIMS)}")
    return provenance_line(directory) + "\n" + claim_markdown(open_results(directory), kw["name"])


def _claims_summary(directory: Path, kw: dict[str, str]) -> str:
    from robustbench_wbc.report.claims import claims_summary_markdown

    return provenance_line(directory) + "\n" + claims_summary_markdown(open_results(directory))


def _seeds(directory: Path, kw: dict[str, str]) -> str:
    from robustbench_wbc.report.claims import seed_spread_markdown

    return provenance_line(directory) + "\n" + seed_spread_markdown(open_results(directory), kw.get("key", "clean_acc_ood"))


def _attacks(directory: Path, kw: dict[str, str]) -> str:
    import pandas as pd

    from robustbench_wbc.attacks.base import parse_eps
    from robustbench_wbc.report.leaderboard import threat_label
    from robustbench_wbc.report.rows import current_rows

    t = current_rows(open_results(directory).table())
    target, metrics = kw.get("target", "cls"), kw.get("metrics", "robust_accuracy").split(",")
    eps = parse_eps(kw.get("eps", "8/255"))[0]
    sel = t[(t["status"] == "ok") & (t["target"] == target) & ((t["eps"] - eps).abs() < 1e-9)]
    if sel.empty:
        raise SectionError(f"attacks {directory}: no {target} cells at eps {kw.get('eps', '8/255')}")
    attacks = list(dict.fromkeys(kw["attacks"].split(","))) if "attacks" in kw else sorted(sel["attack"].unique())
    norm = sel["norm"].iloc[0]
    lines = []
    for metric in metrics:
        m = sel[sel["metric"] == metric]
        wide = m.pivot_table(index="model", columns="attack", values="value", aggfunc="mean").reindex(columns=attacks)
        lines += [f"{metric.replace('_', ' ')} %, attacks on `{target}` at {threat_label(norm, eps)}:", "",
                  "| model | " + " | ".join(attacks) + " |", "|---|" + "---|" * len(attacks)]
        for model, row in wide.iterrows():
            lines.append(f"| {model} | " + " | ".join("–" if pd.isna(v) else f"{100 * v:.1f}" for v in row) + " |")
        lines.append("")
    cells = t[(t["status"] == "ok") & (t["target"] == target)].drop_duplicates("cell_id")
    passes = cells.groupby("attack")["backward_passes"].sum().reindex(attacks)
    lines += [f"Backward passes, every `{target}` cell of each attack (all models and eps): "
              + ", ".join(f"{a} {int(v):,}" for a, v in passes.items() if not pd.isna(v)) + "."]
    return provenance_line(directory) + "\n" + "\n".join(lines) + "\n"


def _finetune(directory: Path, kw: dict[str, str]) -> str:
    import pandas as pd

    from robustbench_wbc.models.finetune import summary_markdown

    path = directory / "finetune.parquet"
    if not path.is_file():
        raise SectionError(f"finetune {directory}: no finetune.parquet; run `make real` and `make publish-real`")
    table = pd.read_parquet(path)
    return "\n".join(f"{m.replace('_', ' ')} %, mean ± sd over folds:\n\n" + summary_markdown(table, m)
                     for m in kw.get("metrics", "balanced_accuracy,nucleus_dice").split(","))


def _bench(directory: Path, kw: dict[str, str]) -> str:
    names = kw["names"].split(",") if "names" in kw else sorted(p.stem for p in directory.glob("*.md"))
    missing = [n for n in names if not (directory / f"{n}.md").is_file()]
    if missing:
        raise SectionError(f"bench {directory}: no {', '.join(f'{n}.md' for n in missing)}; run `make bench`")
    return "\n".join((directory / f"{n}.md").read_text().rstrip() + "\n" for n in names)


SECTIONS: dict[str, Callable[[Path, dict[str, str]], str]] = {
    "provenance": _provenance, "leaderboard": _leaderboard, "shift": _shift, "cross-task": _cross_task,
    "claim": _claim, "claims-summary": _claims_summary, "seeds": _seeds, "bench": _bench, "attacks": _attacks,
    "finetune": _finetune}


def render_section(spec: str, root: Path = ROOT) -> str:
    """Renders the section a marker's ``spec`` names (``leaderboard results/demo by=ood``)."""
    words = spec.split()
    if not words or words[0] not in SECTIONS:
        raise SectionError(f"unknown section {words[0] if words else ''!r}; known: {', '.join(SECTIONS)}")
    pos, kw = _args(words[1:])
    if len(pos) != 1:
        raise SectionError(f"section {spec!r}: give one table directory, relative to the repository")
    text = SECTIONS[words[0]](root / pos[0], kw)
    return text if text.endswith("\n") else text + "\n"


def render(text: str, root: Path = ROOT, where: str = "") -> str:
    """Gives ``text`` with every marked section rendered anew."""
    out, pos = [], 0
    for m in START.finditer(text):
        if m.start() < pos:
            continue
        end = text.find(END, m.end())
        if end < 0:
            raise SectionError(f"{where}: the section `{m.group('spec')}` has no {END} after it")
        try:
            rendered = render_section(m.group("spec"), root)
        except (SectionError, ResultsError, OSError) as exc:
            raise SectionError(f"{where}: section `{m.group('spec')}`: {exc}") from None
        out += [text[pos:m.end()], rendered]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def sections(text: str) -> list[tuple[str, str]]:
    """Gives each marked section of ``text`` as ``(spec, its current text)``."""
    found = []
    for m in START.finditer(text):
        end = text.find(END, m.end())
        found.append((m.group("spec"), text[m.end():end] if end >= 0 else ""))
    return found


def main(argv: list[str] | None = None, root: Path = ROOT, documents: tuple[str, ...] = DOCUMENTS) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 naming the sections that differ")
    args = ap.parse_args(argv)
    stale = []
    for name in documents:
        path = root / name
        text = path.read_text()
        try:
            new = render(text, root, name)
        except (SectionError, ResultsError, OSError) as exc:  # a section that cannot be rendered: say which, exit 1
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
        if new != text:
            stale += [f"{name}: {spec}" for (spec, old), (_, now) in zip(sections(text), sections(new)) if old != now]
            if not args.check:
                path.write_text(new)
    if stale:
        print(("differ from their tables:\n  " if args.check else "rewrote:\n  ") + "\n  ".join(stale), file=sys.stderr)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
