"""The HTML report: one self-contained page of a run's results that opens without a server.

Everything is inline: the CSS in a ``<style>`` element, the figures as base64 ``data:image/png``
URIs; there is no script and no external URL, so the file can be mailed, attached to a CI run or
opened from disk. The page holds, in order: the run(s) (run ids, git sha, library versions, date
range, what was run), the leaderboard (an unreliable model's row highlighted with its reason), the
reliability diagnostics, the cross-task matrix of multitask models, per-class results, the figures
of :mod:`robustbench_wbc.report.figures` that this version has, and the parameters (models and
attacks as run, failed cells).

Numbers are formatted as in the markdown leaderboard (percent with one decimal, ``mean ± sd`` over
training seeds where there are two or more); all text from the table is escaped.
"""

from __future__ import annotations

import base64
import html
import importlib
import logging
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from robustbench_wbc._version import __version__
from robustbench_wbc.attacks.base import eps_label
from robustbench_wbc.bench.cells import CLEAN
from robustbench_wbc.bench.store import ResultStore
from robustbench_wbc.data.synth import CLASSES
from robustbench_wbc.report.by_class import by_class
from robustbench_wbc.report.ensemble import cross_task, cross_task_rows, ensemble_or_reason
from robustbench_wbc.report.leaderboard import HEADERS, leaderboard, legend, rendered, threat_label
from robustbench_wbc.report.reliability import CHECKS, diagnose
from robustbench_wbc.report.rows import current_rows

logger = logging.getLogger(__name__)

DEFAULT_TITLE = "robustbench-wbc report"
UNRELIABLE_STYLE = "background:#fde2e1"
# (function in robustbench_wbc.report.figures, title, caption): drawn where this version has the function
FIGURES = (
    ("robust_vs_eps", "Robust accuracy against eps",
     "Accuracy under each attack on the in-distribution test split as the budget grows."),
    ("ood_by_shift", "Accuracy out of distribution, by shift",
     "Clean accuracy on each out-of-distribution split."),
    ("id_vs_ood", "In-distribution against out-of-distribution accuracy",
     "Each model's clean accuracy in distribution against out of distribution."),
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PART_LABEL = {"accuracy": "accuracy", "nucleus_dice": "nucleus Dice", "cytoplasm_dice": "cytoplasm Dice"}
ROLE_LABEL = {"test": "ID", "ood": "OOD", "real": "real"}

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1d2330; background: #ffffff; margin: 0; padding: 24px 32px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; color: #12355b; }
h2 { font-size: 19px; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 2px solid #12355b; color: #12355b; }
h3 { font-size: 15px; margin: 18px 0 6px; }
nav { margin: 10px 0 0; }
nav a { margin-right: 14px; color: #1f5fa8; text-decoration: none; }
.meta { color: #4a5263; margin: 0; }
.note { color: #4a5263; font-size: 13px; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 12.5px; }
th, td { border: 1px solid #c9cfdb; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #e6ecf5; font-weight: 600; }
tbody tr:nth-child(even) { background: #f6f8fb; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.reason { min-width: 260px; max-width: 560px; }
tr.unreliable, tbody tr.unreliable:nth-child(even) { background: #fde2e1; }
tr.unreliable td:first-child { border-left: 4px solid #c0392b; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; margin: 10px 0; }
dl.summary dt { font-weight: 600; }
dl.summary dd { margin: 0; }
figure { margin: 12px 0 20px; }
figure img { max-width: 100%; height: auto; border: 1px solid #c9cfdb; }
figcaption { color: #4a5263; font-size: 13px; }
code { background: #eef1f6; padding: 0 3px; border-radius: 3px; }
.flag { color: #a32a1f; font-weight: 600; }
.ok { color: #1e7a3c; font-weight: 600; }
"""


class Raw(str):
    """Markup that :func:`_table` puts in a cell as it is (everything else is escaped)."""


def esc(value: object) -> str:
    """Escapes any value as HTML text (quotes included)."""
    return html.escape(str(value), quote=True)


def _cell(value: object) -> str:
    return value if isinstance(value, Raw) else esc(value)


def _table(head: Sequence[str], rows: Iterable[Sequence[object]], *, num: Iterable[int] = (), cls: str = "",
           row_attrs: Sequence[str] | None = None, wide: Iterable[int] = ()) -> str:
    """An HTML table: ``head`` the column titles, ``rows`` the cells (escaped unless :class:`Raw`).

    ``num`` are the indices of right-aligned numeric columns, ``wide`` of long-text columns,
    ``row_attrs`` extra attributes (already escaped) for each ``<tr>``.
    """
    num, wide = set(num), set(wide)
    cls_attr = f' class="{esc(cls)}"' if cls else ""
    out = [f'<div class="scroll"><table{cls_attr}>',
           "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead>", "<tbody>"]
    for i, row in enumerate(rows):
        attrs = f" {row_attrs[i]}" if row_attrs and row_attrs[i] else ""
        tds = []
        for j, v in enumerate(row):
            klass = "num" if j in num else "reason" if j in wide else ""
            tds.append(f'<td class="{klass}">{_cell(v)}</td>' if klass else f"<td>{_cell(v)}</td>")
        out.append(f"<tr{attrs}>" + "".join(tds) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out) + "\n"


def _note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>\n'


def _is_true(v: object) -> bool:
    return isinstance(v, (bool, np.bool_)) and bool(v)


def leaderboard_html(board: pd.DataFrame) -> str:
    """Renders a leaderboard as a plain HTML ``<table>``, then its legend (what ranks it, by which rule, notes).

    The cells and titles are :func:`robustbench_wbc.report.leaderboard.rendered`'s, as in the
    markdown leaderboard: percent with one decimal, ``mean ± sd`` over seeds, each eps in its norm's
    form, ``n=`` for a shared rank. A model flagged ``unreliable`` gets a highlighted row (class
    ``unreliable`` and an inline background, so it shows without the report's CSS) whose ``title``
    is the reason.
    """
    if board.empty:
        return '<p class="note"><em>No results yet: run <code>wbc-robust run</code> first.</em></p>\n'
    cols, titles, rows = rendered(board)
    num = [j for j, c in enumerate(cols)
           if c not in ("rank", "unreliable") and pd.api.types.is_numeric_dtype(board[c])
           and not pd.api.types.is_bool_dtype(board[c])]
    wide = [j for j, c in enumerate(cols) if c == "unreliable_reason"]
    attrs = []
    for _, row in board.iterrows():
        if "unreliable" in board and _is_true(row["unreliable"]):
            reason = row.get("unreliable_reason", "") or "flagged unreliable"
            attrs.append(f'class="unreliable" style="{UNRELIABLE_STYLE}" title="{esc(reason)}"')
        else:
            attrs.append("")
    out = _table(titles, rows, num=num, wide=wide, cls="leaderboard", row_attrs=attrs)
    return out + "".join(_note(line.replace("`", "").replace("**", "")) for line in legend(board))


# --- the sections -------------------------------------------------------------------------------

def _when(ts: pd.Series) -> tuple[str, str]:
    t = pd.to_datetime(ts, utc=True, errors="coerce").dropna()
    if t.empty:
        return "–", "–"
    return t.min().strftime("%Y-%m-%d %H:%M UTC"), t.max().strftime("%Y-%m-%d %H:%M UTC")


def _eps_labels(df: pd.DataFrame) -> list[str]:
    pairs = df[df["eps"].astype(float) > 0][["norm", "eps"]].drop_duplicates().sort_values(["norm", "eps"])
    return [f"{eps_label(float(e), n)} ({n})" for n, e in zip(pairs["norm"], pairs["eps"])]


def _names(values: Iterable[object]) -> str:
    return ", ".join(str(v) for v in values)


def _runs_section(table: pd.DataFrame, root: Path) -> str:
    versions = [c for c in table.columns if c.startswith("v_")]
    cells = table.drop_duplicates("cell_id")
    ok = cells[cells["status"] == "ok"]
    attacked = table[table["attack"] != CLEAN]
    first, last = _when(table["finished_at"]) if "finished_at" in table else ("–", "–")
    per_image = table[table["metric"].isin(["accuracy", "robust_accuracy", "nucleus_dice"])]
    n_images = sorted({int(n) for n in per_image["n"].dropna()})
    shas = sorted({str(s) for s in table.get("git_sha", pd.Series(dtype=str)).dropna() if str(s)})
    summary = [
        ("results", esc(root)),
        ("runs", f"{table['run_id'].nunique()}: " + esc(_names(sorted(table["run_id"].astype(str).unique())))),
        ("git sha", esc(_names(shas)) or "–"),
        ("finished", f"{esc(first)} – {esc(last)}"),
        ("models", f"{table['model'].nunique()}: " + esc(_names(sorted(table["model"].unique())))),
        ("training seeds", esc(_names(sorted(table["model_seed"].unique())))),
        ("splits", f"{table['split'].nunique()}: " + esc(_names(sorted(table["split"].unique())))),
        ("attacks", f"{attacked['attack'].nunique()}: " + esc(_names(sorted(attacked["attack"].unique())) or "none")),
        ("eps", f"{len(_eps_labels(attacked))}: " + esc(_names(_eps_labels(attacked)) or "none")),
        ("images per cell", esc(_names(n_images)) or "–"),
        ("cells", f"{len(cells)} ({len(ok)} ok, {len(cells) - len(ok)} failed or invalid)"),
    ]
    for col in versions:
        vals = sorted({str(v) for v in table[col].dropna() if str(v)})
        summary.append((col[2:], esc(_names(vals)) or "–"))
    out = ['<dl class="summary">'] + [f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in summary] + ["</dl>"]
    rows = []
    for run_id, grp in table.groupby("run_id", sort=False):
        start, end = _when(grp["finished_at"]) if "finished_at" in grp else ("–", "–")
        rows.append([run_id, _names(sorted({str(s) for s in grp.get("git_sha", pd.Series(dtype=str)).dropna()})),
                     start, end, grp["cell_id"].nunique(),
                     *[_names(sorted({str(v) for v in grp[c].dropna() if str(v)})) or "–" for c in versions]])
    rows.sort(key=lambda r: r[2])
    out.append("<h3>Runs</h3>")
    out.append(_table(["run id", "git sha", "first cell", "last cell", "cells", *[c[2:] for c in versions]], rows,
                      num=[4], cls="runs"))
    return "\n".join(out)


def _diagnostics_section(table: pd.DataFrame) -> str:
    diag = diagnose(table)
    checks = "; ".join(CHECKS.values())
    if diag.empty:
        return (f'<p><span class="ok">No check was violated.</span> Checked where the results allow: {esc(checks)}.</p>\n')
    rows = [[r["model"], r["model_seed"], r["split"], CHECKS.get(r["check"], r["check"]), r["target"], r["attack"],
             threat_label(r["norm"], float(r["eps"])) if r["norm"] in ("linf", "l2") else "–", r["reason"]]
            for _, r in diag.iterrows()]
    flagged = diag["model"].nunique()
    return (f'<p><span class="flag">{len(diag)} violated check{"s" * (len(diag) != 1)} in {flagged} '
            f'model{"s" * (flagged != 1)}</span>: their numbers may overstate robustness. All checks: {esc(checks)}.</p>\n'
            + _table(["model", "seed", "split", "check", "target", "attack", "eps", "reason"], rows, wide=[7],
                     cls="diagnostics"))


def _cross_task_section(table: pd.DataFrame) -> str:
    matrix = cross_task(table)
    if matrix.empty:
        return _note("No attacked cells with a clean reference yet.")
    m = matrix[matrix["family"] == "multitask"]
    if m.empty:
        return _note("No multitask model in the results.")
    rows = [[model, split, f"{eps_label(eps, norm)} ({norm})", target, *cells]
            for model, split, norm, eps, target, cells in cross_task_rows(matrix)]
    return (_note("Drop in points under the strongest attack on each head, clean → attacked; mean over training seeds.")
            + _table(["model", "split", "eps", "attacked head", "accuracy", "nucleus Dice", "cytoplasm Dice"], rows,
                     num=[4, 5, 6], cls="cross-task"))


def _by_class_section(store: ResultStore, table: pd.DataFrame) -> str:
    per_class = by_class(store, table)
    if per_class.empty:
        return _note("No per-class results (no clean cells with per-sample outcomes).")
    out = []
    roles = ("test", "ood", "real")
    for metric in PART_LABEL:
        sel = per_class[(per_class["metric"] == metric) & per_class["role"].isin(roles)]
        if sel.empty:
            continue
        per_seed = sel.groupby(["model", "model_seed", "role", "class"])["value"].mean()
        wide = per_seed.groupby(["model", "role", "class"]).mean().unstack(["role", "class"])
        cols = [(r, k) for r in roles for k in CLASSES if (r, k) in wide.columns]
        rows = [[model, *("–" if np.isnan(v) else f"{100 * v:.1f}" for v in row.to_numpy(dtype=float))]
                for model, row in wide[cols].iterrows()]
        out.append(f"<h3>Clean {esc(PART_LABEL[metric])}, % per class</h3>")
        out.append(_table(["model", *(f"{k} {ROLE_LABEL.get(r, r)}" for r, k in cols)], rows,
                          num=range(1, len(cols) + 1), cls="by-class"))
    return "\n".join(out) if out else _note("No per-class results on the ID, OOD or real splits.")


def _pngs(ret: object, out: Path) -> list[Path]:
    """The PNG files a figure function wrote: what it returned, else ``out``, else anything under its folder."""
    if isinstance(ret, (str, Path)) and Path(ret).is_file():
        return [Path(ret)]
    if isinstance(ret, (list, tuple)) and ret and all(isinstance(p, (str, Path)) and Path(p).is_file() for p in ret):
        return [Path(p) for p in ret]
    if out.is_file():
        return [out]
    return sorted(p for p in out.parent.rglob("*.png") if p.is_file())


def figure_data(table: pd.DataFrame) -> list[tuple[str, str, list[bytes], str | None]]:
    """Draws the figures this version of :mod:`robustbench_wbc.report.figures` has: ``(title, caption, pngs, note)``.

    A function that is absent, raises ``ValueError`` (the results lack its data) or writes no PNG
    gives no image and a note saying why.
    """
    figures = importlib.import_module("robustbench_wbc.report.figures")
    out = []
    with tempfile.TemporaryDirectory(prefix="wbc-report-") as tmp:
        for name, title, caption in FIGURES:
            fn = getattr(figures, name, None)
            if fn is None:
                out.append((title, caption, [], f"Not drawn: this version has no figures.{name}."))
                continue
            path = Path(tmp) / name / f"{name}.png"
            path.parent.mkdir(parents=True)
            try:
                ret = fn(table, path)
            except ValueError as exc:
                out.append((title, caption, [], f"Not drawn: {exc}"))
                continue
            pngs = [p.read_bytes() for p in _pngs(ret, path)]
            pngs = [b for b in pngs if b.startswith(PNG_MAGIC)]
            out.append((title, caption, pngs, None if pngs else f"Not drawn: figures.{name} wrote no PNG."))
    return out


def _figures_section(table: pd.DataFrame) -> str:
    out = []
    for title, caption, pngs, note in figure_data(table):
        out.append(f"<h3>{esc(title)}</h3>")
        for png in pngs:
            data = base64.b64encode(png).decode("ascii")
            out.append(f'<figure><img alt="{esc(title)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{esc(caption)}</figcaption></figure>")
        if note:
            out.append(_note(note))
    return "\n".join(out)


def _params(text: object) -> Raw:
    parts = [p for p in str(text if isinstance(text, str) else "").split(";") if p]
    return Raw("<br>".join(f"<code>{esc(p)}</code>" for p in parts) or "–")


def _parameters_section(table: pd.DataFrame) -> str:
    out = ["<h3>Attacks</h3>"]
    attacked = table[table["attack"] != CLEAN].copy()
    if attacked.empty:
        out.append(_note("No attack was run: clean cells only."))
    else:
        attacked["params"] = attacked["params"].astype(object).fillna("").astype(str)
        rows = []
        for (attack, backend, target, norm, params), grp in attacked.groupby(
                ["attack", "backend", "target", "norm", "params"], sort=True, dropna=False):
            eps = sorted(grp["eps"].astype(float).unique())
            rows.append([attack, backend, target, norm, _names(eps_label(e, norm) for e in eps),
                         _names(sorted(grp["model"].unique())), grp["cell_id"].nunique(), _params(params)])
        out.append(_table(["attack", "backend", "target", "norm", "eps", "models", "cells", "parameters"], rows,
                          num=[6], cls="params"))
    out.append("<h3>Models</h3>")
    cols = [c for c in ("model", "family", "encoder", "recipe", "labelled_images", "masked_images") if c in table]
    models = table.drop_duplicates(["model", "model_seed", "model_sha256"]).sort_values(["model", "model_seed"])
    rows = [[*(r[c] for c in cols), r["model_seed"], str(r.get("model_sha256", ""))[:12]] for _, r in models.iterrows()]
    out.append(_table([HEADERS.get(c, c) for c in cols] + ["seed", "checkpoint sha256"], rows, cls="models"))
    failed = table[table["status"] != "ok"].drop_duplicates("cell_id")
    out.append("<h3>Failed cells</h3>")
    if failed.empty:
        out.append(_note("None: every cell finished with status ok."))
    else:
        rows = [[r["model"], r["split"], r["attack"], r["target"], eps_label(float(r["eps"]), r["norm"]), r["status"],
                 r["reason"]] for _, r in failed.iterrows()]
        out.append(_table(["model", "split", "attack", "target", "eps", "status", "reason"], rows, wide=[6], cls="failed"))
    return "\n".join(out)


SECTIONS = (("run", "Run"), ("leaderboard", "Leaderboard"), ("reliability", "Reliability"), ("cross-task", "Cross-task"),
            ("by-class", "Per class"), ("figures", "Figures"), ("parameters", "Parameters"))


def _page(title: str, subtitle: str, body: dict[str, str]) -> str:
    nav = " ".join(f'<a href="#{key}">{esc(name)}</a>' for key, name in SECTIONS if key in body)
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f'<meta name="generator" content="robustbench-wbc {esc(__version__)}">',
             f"<title>{esc(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
             f"<header><h1>{esc(title)}</h1><p class=\"meta\">{subtitle}</p><nav>{nav}</nav></header>"]
    for key, name in SECTIONS:
        if key in body:
            parts.append(f'<section id="{key}"><h2>{esc(name)}</h2>\n{body[key]}</section>')
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def render_report(store: ResultStore, title: str = DEFAULT_TITLE, table: pd.DataFrame | None = None) -> str:
    """Renders the results in ``store`` as one self-contained HTML page (no script, no external URL).

    ``table`` is ``store.table()`` where the caller already has it. With no results the page says so.
    """
    table = store.table() if table is None else table
    now = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M UTC")
    subtitle = f"Generated {esc(now)} by robustbench-wbc {esc(__version__)} from <code>{esc(store.root)}</code>."
    if table.empty:
        body = {"run": '<p class="note"><em>No results yet: run <code>wbc-robust run</code> first.</em></p>\n'}
        return _page(title, subtitle, body)
    # every section reads the rows the leaderboard reads (the newest checkpoint of each model, one row per
    # measurement): no section may show a number of a row that another section left out
    current = current_rows(table)
    left_out = len(table) - len(current)
    body: dict[str, str] = {"run": _runs_section(current, store.root)
                            + (_note(f"{left_out} rows of older checkpoints or repeated measurements are left out of "
                                     f"every section (the report reads what the leaderboard reads).") if left_out else "")}
    table = current
    notes = ""
    ens, why = ensemble_or_reason(store, table)
    if why:  # per-sample outcomes missing or unreadable: the board without the worst case
        logger.warning(why)
        notes = _note(why[0].upper() + why[1:] + ".")
    try:
        board = leaderboard(table, ens, samples=store.samples)
    except ValueError as exc:
        body["leaderboard"] = _note(f"No leaderboard: {exc}")
    else:
        flagged = int(board["unreliable"].astype(bool).sum()) if "unreliable" in board else 0
        lead = _note("Percent; mean ± sd over training seeds where a model has two or more.")
        if flagged:
            lead += (f'<p><span class="flag">{flagged} model{"s" * (flagged != 1)} flagged unreliable</span> '
                     "(highlighted): see the reason and the reliability section.</p>\n")
        body["leaderboard"] = lead + leaderboard_html(board) + notes
    body["reliability"] = _diagnostics_section(table)
    body["cross-task"] = _cross_task_section(table)
    body["by-class"] = _by_class_section(store, table)
    body["figures"] = _figures_section(table)
    body["parameters"] = _parameters_section(table)
    return _page(title, subtitle, body)
