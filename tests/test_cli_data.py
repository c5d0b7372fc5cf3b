"""``wbc-robust data generate|show``, ``splits list --data`` and ``run --data/--skip-bad``, through typer's CliRunner."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import WIDE, cli_text, make_mini_dataset, per_image_rows
from PIL import Image
from typer.testing import CliRunner

from robustbench_wbc.cli import app
from robustbench_wbc.data.real import register_dataset, registered_datasets, unregister_dataset
from robustbench_wbc.data.splits import SPLITS, TEST_SEED
from robustbench_wbc.data.synth import CLASSES

NEW_SPLITS = ("synth:ood-stain-b", "synth:ood-camera-b", "synth:probe-grayscale", "synth:probe-stain-random",
              "synth:train-confounded")


@pytest.fixture
def mini(tmp_path) -> Path:
    """The path of a small generic dataset; whatever registers it as ``mini`` is undone afterwards."""
    root = make_mini_dataset(tmp_path / "mini")
    yield root
    unregister_dataset("mini")
    assert "mini:all" not in SPLITS and "mini" not in registered_datasets()


@pytest.fixture
def mini_corrupt(mini) -> tuple[Path, Path]:
    """``mini`` with a file of garbage bytes named like a PNG; it sorts first among the neutrophils."""
    bad = mini / "neutrophil" / "bad.png"
    bad.write_bytes(b"\x00garbage, not an image" * 10)
    return mini, bad


def _card(out: Path) -> dict:
    return json.loads((out / "card.json").read_text())


# --- data generate -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "set"
    result = CliRunner().invoke(app, ["data", "generate", "--split", "synth:test", "--n", "300", "--size", "32",
                                      "--out", str(out)], env=WIDE)
    return out, result


def test_generate_writes_the_set(generated):
    out, result = generated
    assert result.exit_code == 0, cli_text(result)
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "images.npy", "labels.npy", "masks.npy"]
    card = _card(out)
    assert card["n"] == 300 and card["size"] == 32 and card["params"]["seed"] == TEST_SEED
    assert card["params"]["domain"] == "source" and card["name"] == "synth:test"
    assert card["class_counts"] == {c: 60 for c in CLASSES}
    images = np.load(out / "images.npy")
    assert images.shape == (300, 32, 32, 3) and images.dtype == np.uint8
    assert np.load(out / "masks.npy").shape == (300, 32, 32) and np.load(out / "labels.npy").shape == (300,)
    text = cli_text(result)
    assert re.search(r"\d+ images/s", text), text
    assert "300 images of synth:test" in text and card["sha256"][:12] in text


def test_generate_matches_the_split(generated):
    out, result = generated
    assert result.exit_code == 0, cli_text(result)
    data = SPLITS.get("synth:test").load(20, 32)
    images = np.load(out / "images.npy")[:20].transpose(0, 3, 1, 2).astype(np.float32) / 255
    np.testing.assert_array_equal(images, data.images.numpy())
    np.testing.assert_array_equal(np.load(out / "masks.npy")[:20], data.masks.numpy())


def test_generate_seed_changes_the_stream(cli, generated, tmp_path):
    base, first = generated
    assert first.exit_code == 0
    out = tmp_path / "s7"
    result = cli.invoke(app, ["data", "generate", "--split", "synth:test", "--n", "20", "--size", "32",
                              "--seed", "7", "--out", str(out)])
    assert result.exit_code == 0, cli_text(result)
    assert _card(out)["params"]["seed"] == 7
    assert not np.array_equal(np.load(out / "images.npy"), np.load(base / "images.npy")[:20])
    assert not np.array_equal(np.load(out / "masks.npy"), np.load(base / "masks.npy")[:20])


def test_generate_natural_priors(cli, tmp_path):
    out = tmp_path / "natural"
    result = cli.invoke(app, ["data", "generate", "--split", "synth:test", "--n", "300", "--size", "16",
                              "--priors", "natural", "--out", str(out)])
    assert result.exit_code == 0, cli_text(result)
    card = _card(out)
    counts = card["class_counts"]
    assert sum(counts.values()) == 300 and card["params"]["class_probs"] is not None
    assert counts["neutrophil"] > 150 and counts["lymphocyte"] > 60  # expected 186 and 90
    assert counts["basophil"] < 10 and counts["eosinophil"] < 20  # expected 1.2 and 6.9
    labels = np.load(out / "labels.npy")
    assert counts == {c: int((labels == k).sum()) for k, c in enumerate(CLASSES)}


def test_generate_bad_priors_exit_2(cli, tmp_path):
    result = cli.invoke(app, ["data", "generate", "--split", "synth:test", "--n", "5", "--size", "16",
                              "--priors", "weird", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2, cli_text(result)
    assert "balanced" in cli_text(result) and "natural" in cli_text(result)
    assert not (tmp_path / "x").exists()


def test_generate_refuses_a_real_split(cli, mini, tmp_path):
    register_dataset("mini", mini)
    result = cli.invoke(app, ["data", "generate", "--split", "mini:all", "--n", "5", "--size", "16",
                              "--out", str(tmp_path / "x")], env=WIDE)
    assert result.exit_code == 2, cli_text(result)
    assert "not a SynthWBC split" in cli_text(result)
    assert not (tmp_path / "x").exists()


def test_generate_unknown_split_suggests(cli, tmp_path):
    result = cli.invoke(app, ["data", "generate", "--split", "synth:tset", "--n", "5", "--size", "16",
                              "--out", str(tmp_path / "x")], env=WIDE)
    assert result.exit_code == 2, cli_text(result)
    assert "Did you mean" in cli_text(result) and "synth:test" in cli_text(result)
    assert not (tmp_path / "x").exists()


# --- data show -----------------------------------------------------------------------------------
def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255


@pytest.fixture(scope="module")
def grids(tmp_path_factory):
    """``data show`` with and without the other domains: ``{True: (png, result), False: ...}``."""
    out = tmp_path_factory.mktemp("show")
    runs = {}
    for domains in (True, False):
        png = out / f"grid-{domains}.png"
        args = ["data", "show", "--split", "synth:test", "--out", str(png), "--per-class", "2", "--size", "32"]
        runs[domains] = png, CliRunner().invoke(app, args + ([] if domains else ["--no-domains"]), env=WIDE)
    return runs


def test_show_writes_a_grid_with_the_domains_side_by_side(grids):
    png, result = grids[True]
    assert result.exit_code == 0, cli_text(result)
    img = _png(png)
    assert img.std() > 0.05  # not blank
    height, width = img.shape[:2]
    assert width > height
    assert "4 domains" in cli_text(result)


def test_show_without_domains_is_narrower(grids):
    (wide, r1), (narrow, r2) = grids[True], grids[False]
    assert r1.exit_code == 0 and r2.exit_code == 0, cli_text(r2)
    a, b = _png(wide), _png(narrow)
    assert b.shape[1] < a.shape[1] and b.std() > 0.05
    assert "1 domains" in cli_text(r2)


def test_show_a_real_split_without_masks(cli, mini, tmp_path):
    png = tmp_path / "real.png"
    result = cli.invoke(app, ["data", "show", "--split", "mini:all", "--data", f"mini={mini}", "--per-class", "2",
                              "--size", "16", "--out", str(png)], env=WIDE)
    assert result.exit_code == 0, cli_text(result) + repr(result.exception)
    assert _png(png).std() > 0.05


# --- splits list ---------------------------------------------------------------------------------
def _first_tokens(result) -> list[str]:
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def test_splits_list_shows_the_new_splits_once(cli):
    result = cli.invoke(app, ["splits", "list"], env=WIDE)
    assert result.exit_code == 0, cli_text(result)
    ids = _first_tokens(result)
    for sid in NEW_SPLITS:
        assert ids.count(sid) == 1, sid
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert lines["synth:probe-grayscale"].split()[1] == "probe"
    assert lines["synth:ood-camera-b"].split()[1:3] == ["ood", "camera-b"]


def test_splits_list_with_data(cli, mini):
    result = cli.invoke(app, ["splits", "list", "--data", f"mini={mini}"], env=WIDE)
    assert result.exit_code == 0, cli_text(result)
    ids = _first_tokens(result)
    assert ids.count("mini:all") == 1 and "synth:test" in ids
    line = next(line for line in result.stdout.splitlines() if line.startswith("mini:all"))
    assert "n=10" in line


@pytest.mark.parametrize(("option", "expected"), [
    ("bad", "expected name=PATH"),
    ("mini=/nonexistent/wbc-data", "does not exist"),
])
def test_splits_list_bad_data_option_exits_2(cli, option, expected):
    result = cli.invoke(app, ["splits", "list", "--data", option], env=WIDE)
    assert result.exit_code == 2, cli_text(result)
    assert expected in cli_text(result)
    assert "mini:all" not in SPLITS


# --- run --data ----------------------------------------------------------------------------------
RUN = ["run", "--splits", "mini:all", "--models", "tiny_cls", "--attacks", "fgsm", "--eps", "2/255",
       "--n-images", "6"]


def test_run_on_a_real_dataset_and_its_leaderboard(cli, mini, tmp_path, tiny_cards):
    out = tmp_path / "out"
    result = cli.invoke(app, [*RUN, "--data", f"mini={mini}", "--out", str(out)], env=WIDE)
    assert result.exit_code == 0, cli_text(result) + repr(result.exception)
    assert "0 failed" in cli_text(result)
    table = pd.read_parquet(out / "results.parquet")
    assert set(table["split"]) == {"mini:all"} and set(table["status"]) == {"ok"} and (per_image_rows(table)["n"] == 6).all()
    written = tmp_path / "lb.csv"
    board = cli.invoke(app, ["leaderboard", "--out", str(out), "--format", "csv", "--write", str(written)])
    assert board.exit_code == 0, cli_text(board)
    df = pd.read_csv(written)
    assert df["model"].tolist() == ["tiny_cls"]


def test_run_stops_on_a_corrupt_image_naming_it(cli, mini_corrupt, tmp_path, tiny_cards):
    root, bad = mini_corrupt
    out = tmp_path / "out"
    result = cli.invoke(app, [*RUN, "--data", f"mini={root}", "--out", str(out)], env=WIDE)
    assert result.exit_code == 2, cli_text(result) + repr(result.exception)
    assert "bad.png" in cli_text(result)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


def test_run_skip_bad_goes_on(cli, mini_corrupt, tmp_path, tiny_cards):
    root, _ = mini_corrupt
    out = tmp_path / "out"
    result = cli.invoke(app, [*RUN, "--data", f"mini={root}", "--skip-bad", "--out", str(out)], env=WIDE)
    assert result.exit_code == 0, cli_text(result) + repr(result.exception)
    table = pd.read_parquet(out / "results.parquet")
    assert set(table["status"]) == {"ok"} and (per_image_rows(table)["n"] == 6).all()


# --- data compare ------------------------------------------------------------------------------------
ZHENG = Path(__file__).resolve().parents[2] / "shared" / "data" / "zheng2018-dataset1"


def test_data_compare_without_masks_keeps_synthwbc_field(cli, tmp_path):
    root = make_mini_dataset(tmp_path / "mini")
    out = tmp_path / "cmp.png"
    try:
        result = cli.invoke(app, ["data", "compare", "--real", f"cmpmini={root}", "--out", str(out), "--per-class", "1",
                                  "--size", "32"], env=WIDE)
    finally:
        unregister_dataset("cmpmini")
    assert result.exit_code == 0, cli_text(result)
    assert "SynthWBC's own field" in cli_text(result)
    assert Image.open(out).size[0] > 100


@pytest.mark.skipif(not ZHENG.is_dir(), reason=f"real Zheng2018 data not found at {ZHENG} (CI puts ../shared/data beside it)")
def test_data_compare_real_cells_at_their_scale(cli, tmp_path):
    from robustbench_wbc.cli.data import field_of_view_um

    register_dataset("cmpz", ZHENG)
    try:
        field = field_of_view_um(SPLITS.get("cmpz:all").load(None, 64))
    finally:
        unregister_dataset("cmpz")
    assert 15 < field < 25  # 120 px at ≈ 0.16 µm/px: the neutrophils' median fills 12.5/19.6 of the image
    out = tmp_path / "cmp.png"
    result = cli.invoke(app, ["data", "compare", "--real", f"cmpz2={ZHENG}", "--out", str(out), "--per-class", "2",
                              "--size", "48"], env=WIDE)
    unregister_dataset("cmpz2")
    assert result.exit_code == 0, cli_text(result)
    assert "estimated from the real neutrophils" in cli_text(result) and out.is_file()
