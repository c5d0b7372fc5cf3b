"""The HTML report: self-contained (no external URL, figures inline), complete, and rendered by a real browser.

The browser checks run headless Chromium (Debian's ``chromium``; ``make test`` installs it when it
can) and are skipped, saying so, where it is not installed.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import typer
from conftest import BENCH_MODELS, WIDE, cli_text
from PIL import Image

from robustbench_wbc.bench.store import ResultStore
from robustbench_wbc.cli.report import report
from robustbench_wbc.report import figures
from robustbench_wbc.report.ensemble import ensemble
from robustbench_wbc.report.html import leaderboard_html, render_report
from robustbench_wbc.report.leaderboard import leaderboard

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BROWSER_TIMEOUT_S = 120


class Page(HTMLParser):
    """The parts of a page the tests read: every tag's attributes, the tables' classes and their text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: list[dict] = []  # {"class": ..., "text": [...], "rows": [attrs of each <tr>]}
        self._open: list[dict] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table":
            self._open.append({"class": a.get("class") or "", "text": [], "rows": []})
        elif tag == "tr" and self._open:
            self._open[-1]["rows"].append(a)

    def handle_endtag(self, tag):
        if tag == "table" and self._open:
            self.tables.append(self._open.pop())

    def handle_data(self, data):
        self.text.append(data)
        for t in self._open:
            t["text"].append(data)

    def table(self, cls: str) -> dict:
        found = [t for t in self.tables if cls in t["class"].split()]
        assert len(found) == 1, f"expected one table of class {cls!r}, got {len(found)}"
        return found[0]

    def attrs(self, name: str) -> list[str]:
        return [a[name] or "" for _, a in self.tags if name in a]


EXTERNAL = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.I)  # http://, https://, //host, file://, …


@pytest.fixture(scope="module")
def page(bench_run) -> str:
    out, _ = bench_run
    return render_report(ResultStore(out), title="Tiny bench <report> & co")


@pytest.fixture(scope="module")
def report_file(page, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("html_report") / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def test_report_is_self_contained(page):
    p = Page(page)
    links = p.attrs("src") + p.attrs("href")
    assert not [u for u in links if EXTERNAL.match(u) or u.lower().startswith(("http:", "https:"))], links
    assert not re.search(r"https?://", page), "no external URL anywhere in the page"
    assert "<script" not in page.lower() and "<link" not in page.lower()  # no script, no external stylesheet
    assert all(h.startswith("#") for h in p.attrs("href"))  # in-page navigation only
    imgs = [a.get("src") or "" for tag, a in p.tags if tag == "img"]
    for src in imgs:
        assert src.startswith("data:image/png;base64,"), src[:60]
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(PNG_MAGIC)
    # the title was escaped, not parsed
    assert "Tiny bench &lt;report&gt; &amp; co" in page and "<report>" not in page


def test_report_has_the_tables_and_the_run(page, bench_table):
    p = Page(page)
    board = p.table("leaderboard")
    text = " ".join(board["text"])
    for model in BENCH_MODELS:
        assert model in text
    assert len(board["rows"]) == 1 + len(BENCH_MODELS)  # header + a row per model
    for head in ("clean acc ID %", "worst robust acc L∞ %", "pgd L∞ 8/255 robust acc %", "ensemble L∞ 8/255 robust acc %"):
        assert head in text
    assert "key_low" not in text and "tied" not in text  # ranking internals stay out, as in the markdown
    for cls in ("runs", "cross-task", "by-class", "params", "models"):
        assert p.tables and any(cls in t["class"].split() for t in p.tables), cls
    for section in ("run", "leaderboard", "reliability", "cross-task", "by-class", "figures", "parameters"):
        assert f'<section id="{section}">' in page
    # the run: ids, git sha, every library version
    body = " ".join(p.text)
    for run_id in bench_table["run_id"].unique():
        assert run_id in body
    for sha in bench_table["git_sha"].unique():
        assert str(sha) in body
    for col in [c for c in bench_table.columns if c.startswith("v_")]:
        assert col[2:] in body
        for v in bench_table[col].unique():
            assert str(v) in body, (col, v)
    # the attacks' parameters as run (e.g. PGD's steps)
    params = " ".join(p.table("params")["text"])
    for token in {t for s in bench_table["params"].unique() for t in str(s).split(";") if t}:
        assert token in params
    assert "No check was violated" in body or p.table("diagnostics")


def test_leaderboard_html_highlights_unreliable_and_escapes(bench_run, bench_table):
    out, _ = bench_run
    board = leaderboard(bench_table, ensemble(ResultStore(out), bench_table)).copy()
    board["model"] = board["model"].astype(object)
    board.loc[0, "model"] = "<script>alert(1)</script>"
    board["unreliable"] = [True] + [False] * (len(board) - 1)
    board["unreliable_reason"] = ['synth:test: PGD <is> weaker than FGSM & "so"'] + [""] * (len(board) - 1)
    board["clean_acc_id_sd"] = board["clean_acc_id_sd"].astype(float)
    board.loc[0, "clean_acc_id_sd"] = 0.023
    text = leaderboard_html(board)
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    p = Page(text)
    rows = p.table("leaderboard")["rows"][1:]
    flagged = [r for r in rows if "unreliable" in (r.get("class") or "").split()]
    assert len(flagged) == 1 and flagged[0]["title"] == 'synth:test: PGD <is> weaker than FGSM & "so"'
    assert "background" in flagged[0]["style"]  # shows without the report's CSS too
    assert f"{100 * board.loc[0, 'clean_acc_id']:.1f} ± 2.3" in text  # mean ± sd, as in the markdown
    assert "yes" in " ".join(p.text)
    assert leaderboard_html(board.iloc[0:0]).startswith("<p")  # no results: a sentence, not an empty table


def test_figures_missing_failing_or_drawn(bench_run, monkeypatch):
    out, _ = bench_run

    def draws(table, path):
        Image.new("RGB", (40, 30), (200, 30, 30)).save(path)

    def no_data(table, path):
        raise ValueError("the results have no OOD split of that kind")

    monkeypatch.delattr(figures, "robust_vs_eps", raising=False)
    monkeypatch.setattr(figures, "ood_by_shift", no_data, raising=False)
    monkeypatch.setattr(figures, "id_vs_ood", draws, raising=False)
    page = render_report(ResultStore(out))
    p = Page(page)
    imgs = [a["src"] for tag, a in p.tags if tag == "img"]
    assert len(imgs) == 1
    png = base64.b64decode(imgs[0].split(",", 1)[1])
    assert Image.open(io.BytesIO(png)).size == (40, 30)
    assert "no figures.robust_vs_eps" in page
    assert "Not drawn: the results have no OOD split of that kind" in page


def test_report_of_an_empty_store(tmp_path):
    page = render_report(ResultStore(tmp_path))
    assert "No results yet" in page and "<table" not in page


# --- in a real browser --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    pytest.skip("chromium is not installed (`make test` installs Debian's chromium where apt can): "
                "the report is not checked in a browser")


def _browser(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    # --no-sandbox: Chromium's sandbox refuses to run as root (containers, CI)
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=False)


def looks_rendered(png: Path) -> bool:
    """A page with content: many colours (text antialiasing, table rules, figures), pixels that vary, ink on it."""
    a = np.asarray(Image.open(png).convert("RGB"), dtype=float)
    colours = len(np.unique(a.reshape(-1, 3), axis=0))
    ink = float((a.min(axis=2) < 200).mean())  # not white-ish
    return colours > 20 and float(a.std()) > 8 and ink > 0.01


def test_blank_check_tells_blank_from_not(tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (1400, 2000), "white").save(blank)
    assert not looks_rendered(blank)


def test_report_renders_in_chromium(chromium, report_file, tmp_path):
    shot = tmp_path / "report.png"
    r = _browser(chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,2000", report_file.as_uri())
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    assert Image.open(shot).size == (1400, 2000)
    assert looks_rendered(shot), "the screenshot of the report is blank"


def test_report_tables_in_the_browsers_dom(chromium, report_file, tmp_path):
    r = _browser(chromium, tmp_path / "profile", "--dump-dom", report_file.as_uri())
    assert r.returncode == 0, r.stderr[-2000:]
    dom = Page(r.stdout)
    assert len(dom.tables) >= 6  # runs, leaderboard, cross-task, per class, attacks, models
    board = " ".join(dom.table("leaderboard")["text"])
    for model in BENCH_MODELS:
        assert model in board
    imgs = [a.get("src") or "" for tag, a in dom.tags if tag == "img"]
    assert all(s.startswith("data:image/png;base64,") for s in imgs)


# --- the command --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def app() -> typer.Typer:
    """A local app with only ``report`` (the real one mounts it in robustbench_wbc.cli)."""
    a = typer.Typer()
    a.command()(report)

    @a.callback()
    def main() -> None:
        """Test app."""

    return a


def test_report_command_writes_the_file(cli, app, bench_run, tmp_path):
    out, _ = bench_run
    dest = tmp_path / "sub" / "report.html"
    result = cli.invoke(app, ["report", "--results", str(out), "--out", str(dest), "--title", "My run"], env=WIDE)
    assert result.exit_code == 0, cli_text(result)
    assert str(dest) in cli_text(result)
    text = dest.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "<title>My run</title>" in text
    assert [p.name for p in dest.parent.iterdir()] == ["report.html"]  # no temporary file left behind


def test_report_command_defaults_to_the_results_dir(cli, app, bench_run, tmp_path):
    out, _ = bench_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    result = cli.invoke(app, ["report", "--results", str(copy)], env=WIDE)
    assert result.exit_code == 0, cli_text(result)
    assert (copy / "report.html").is_file()


@pytest.mark.parametrize("where", ["empty", "missing"])
def test_report_command_without_results(cli, app, tmp_path, where):
    results = tmp_path / "results"
    if where == "empty":
        results.mkdir()
    dest = tmp_path / "report.html"
    result = cli.invoke(app, ["report", "--results", str(results), "--out", str(dest)], env=WIDE)
    assert result.exit_code == 1
    assert "no results in" in cli_text(result)
    assert not dest.exists()


def test_report_command_help(cli, app):
    result = cli.invoke(app, ["report", "--help"], env=WIDE)
    assert result.exit_code == 0
    text = cli_text(result)
    assert "HTML report" in text and "--results" in text and "--out" in text
