"""Every rendered table shows each number under its own threat model, in its norm's form.

One multitask model is attacked on all three heads (cls, seg, joint) by L∞ attacks (2/255, 8/255)
and an L2 attack (0.5, 1.0); every table the suite renders (markdown, CSV, HTML, ``--by seg``,
``--cross-task``) is then read back cell by cell and checked against numbers worked out here from
the tidy table and the per-sample outcomes. The L2 eps 1.0 is larger than 8/255: a column that
took the largest eps across norms would show the L2 number under an L∞ label.
"""

from __future__ import annotations

import io
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from conftest import WIDE, cli_text

from robustbench_wbc.bench.cells import CLEAN
from robustbench_wbc.bench.store import ResultStore
from robustbench_wbc.cli import app
from robustbench_wbc.report.html import _diagnostics_section

MODEL = "tiny_multitask"
LINF, L2 = (2 / 255, 8 / 255), (0.5, 1.0)
LABEL = {("linf", 2 / 255): "L∞ 2/255", ("linf", 8 / 255): "L∞ 8/255", ("l2", 0.5): "L2 0.5", ("l2", 1.0): "L2 1"}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, tiny_cards, cli):
    out = tmp_path_factory.mktemp("mixed_norms")
    common = ["--models", MODEL, "--splits", "synth:test", "--n-images", "16", "--out", str(out)]
    for attacks, eps in (("fgsm,pgd", "2/255,8/255"), ("pgd-l2", "0.5,1")):
        result = cli.invoke(app, ["run", *common, "--attacks", attacks, "--eps", eps])
        assert result.exit_code == 0, cli_text(result)
    store = ResultStore(out)
    return out, store, store.table()


def _value(t: pd.DataFrame, metric: str, **where) -> float:
    sel = t[t["metric"] == metric]
    for k, v in where.items():
        sel = sel[np.isclose(sel[k], v)] if k == "eps" else sel[sel[k] == v]
    assert len(sel) == 1, (metric, where, len(sel))
    return float(sel["value"].iloc[0])


def expected(store: ResultStore, t: pd.DataFrame) -> dict[str, str]:
    """What every leaderboard must show, by rendered column title, worked out from the tidy table here."""
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    out = {"clean acc ID %": pct(_value(t, "accuracy", attack=CLEAN))}
    for (norm, eps), label in LABEL.items():
        attacks = ("fgsm", "pgd") if norm == "linf" else ("pgd-l2",)
        robust = []
        for a in attacks:
            for target in ("cls", "joint"):
                v = _value(t, "robust_accuracy", attack=a, target=target, norm=norm, eps=eps)
                out[f"{a}{'' if target == 'cls' else ':joint'} {label} robust acc %"] = pct(v)
                cell = t[(t["attack"] == a) & (t["target"] == target) & np.isclose(t["eps"], eps)]["cell_id"].iloc[0]
                robust.append(store.samples(cell)["robust"].to_numpy(bool))
        out[f"ensemble {label} robust acc %"] = pct(np.logical_and.reduce(robust).mean())
        worst = np.logical_and.reduce(robust).mean()  # the ensemble is the worst case where two attacks or more ran
        if eps == max(e for n, e in LABEL if n == norm):
            suffix = "L∞" if norm == "linf" else "L2"
            out[f"worst robust acc {suffix} %"] = pct(worst)
            out[f"{suffix} eps"] = label.split()[1]
            dice = min(_value(t, "nucleus_dice", attack=a, target="seg", norm=norm, eps=eps) for a in attacks)
            out[f"nucleus Dice under {suffix} seg attack %"] = pct(dice)
            out[f"seg attack {suffix} eps"] = label.split()[1]
    return out


def _md_row(text: str, model: str = MODEL) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    row = next(line for line in lines[2:] if f"| {model} |" in line)
    return dict(zip(head, [c.strip() for c in row.strip("|").split("|")]))


class Tables(HTMLParser):
    """Each HTML table of a page as rows of cell texts, by its class."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[list[str]]] = {}
        self._cls, self._cell = None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._cls = dict(attrs).get("class") or ""
            self.tables[self._cls] = []
        elif tag == "tr" and self._cls is not None:
            self.tables[self._cls].append([])
        elif tag in ("td", "th") and self._cls is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._cls][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._cls = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_markdown_csv_and_html_leaderboards_show_each_number_under_its_norm(cli, mixed, tmp_path):
    out, store, t = mixed
    want = expected(store, t)
    md = cli.invoke(app, ["leaderboard", "--out", str(out)], env=WIDE)
    assert md.exit_code == 0, cli_text(md)
    row = _md_row(md.stdout)
    for title, value in want.items():
        assert row.get(title) == value, (title, row.get(title), value)
    assert not any("255/255" in v for v in row.values())  # no L2 budget written as an L∞ one
    assert not any(k.endswith("eps") and "." in v and "/" not in v and v != "–" and k.startswith("L∞") for k, v in row.items())

    html = cli.invoke(app, ["leaderboard", "--out", str(out), "--format", "html"], env=WIDE)
    assert html.exit_code == 0, cli_text(html)
    rows = Tables(html.stdout).tables["leaderboard"]
    cells = dict(zip(rows[0], next(r for r in rows[1:] if MODEL in r)))
    for title, value in want.items():
        assert cells.get(title) == value, (title, cells.get(title), value)

    csv = cli.invoke(app, ["leaderboard", "--out", str(out), "--format", "csv"], env=WIDE)
    board = pd.read_csv(io.StringIO(csv.stdout)).set_index("model").loc[MODEL]
    assert board["worst_robust_eps"] == pytest.approx(8 / 255) and board["worst_robust_eps_l2"] == pytest.approx(1.0)
    assert board["nucleus_dice_adv_eps"] == pytest.approx(8 / 255) and board["nucleus_dice_adv_eps_l2"] == pytest.approx(1.0)
    for (norm, _), label in LABEL.items():
        tag = f"{norm}={label.split()[1]}"
        for a in (("fgsm", "pgd") if norm == "linf" else ("pgd-l2",)):
            assert f"{100 * board[f'{a}@{tag}']:.1f}" == want[f"{a} {label} robust acc %"]
            assert f"{100 * board[f'{a}:joint@{tag}']:.1f}" == want[f"{a}:joint {label} robust acc %"]


def test_by_seg_ranks_by_the_linf_dice_and_says_so(cli, mixed):
    out, store, t = mixed
    want = expected(store, t)
    for by, suffix in (("seg", "L∞"), ("seg-l2", "L2")):
        md = cli.invoke(app, ["leaderboard", "--out", str(out), "--by", by], env=WIDE)
        assert md.exit_code == 0, cli_text(md)
        row = _md_row(md.stdout)
        assert row[f"nucleus Dice under {suffix} seg attack %"] == want[f"nucleus Dice under {suffix} seg attack %"]
        assert f"nucleus Dice under {suffix} attacks on the masks" in md.stdout


def test_cross_task_blocks_are_keyed_by_norm(cli, mixed):
    out, store, t = mixed
    md = cli.invoke(app, ["leaderboard", "--out", str(out), "--cross-task"], env=WIDE)
    assert md.exit_code == 0, cli_text(md)
    text = md.stdout
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    for (norm, eps), label in LABEL.items():
        eps_text = label.split()[1]
        head = f"**{MODEL}** on `synth:test`, eps {eps_text} ({norm})"
        assert head in text, head
        block = text.split(head, 1)[1].split("**", 1)[0]
        attacks = ("fgsm", "pgd") if norm == "linf" else ("pgd-l2",)
        for target in ("cls", "seg", "joint"):
            line = next(x for x in block.splitlines() if x.startswith(f"| {target} |"))
            cells = [c.strip() for c in line.strip("|").split("|")][1:]
            for cell, (metric, clean_metric) in zip(cells, (("robust_accuracy", "accuracy"), ("nucleus_dice", "nucleus_dice"),
                                                            ("cytoplasm_dice", "cytoplasm_dice"))):
                clean = _value(t, clean_metric, attack=CLEAN)
                worst = min(_value(t, metric, attack=a, target=target, norm=norm, eps=eps) for a in attacks)
                assert cell == f"{pct(clean - worst)} ({pct(clean)} → {pct(worst)})", (label, target, metric, cell)


def test_html_reliability_table_writes_each_eps_in_its_norm():
    """A diagnosis at L2 eps 1.0 reads ``L2 1``, not ``255/255`` (every eps was labelled as L∞)."""
    base = {"model": "m", "model_seed": 0, "split": "synth:test", "target": "cls", "seed": 0, "params": "",
            "status": "ok", "family": "classifier", "model_sha256": "w", "finished_at": pd.Timestamp("2026-01-01", tz="UTC")}
    rows = [{**base, "attack": CLEAN, "norm": "none", "eps": 0.0, "metric": "accuracy", "value": 0.9, "n": 200,
             "cell_id": "c0"}]
    for eps, value in ((0.5, 0.1), (1.0, 0.6)):  # robust accuracy rising with eps: the check fires at eps 1.0
        rows.append({**base, "attack": "pgd-l2", "norm": "l2", "eps": eps, "metric": "robust_accuracy", "value": value,
                     "n": 200, "cell_id": f"c{eps}"})
    section = _diagnostics_section(pd.DataFrame(rows))
    cells = Tables(section).tables["diagnostics"]
    eps_col = cells[0].index("eps")
    assert [r[eps_col] for r in cells[1:]] == ["L2 1"]
    assert "255/255" not in section
