"""The ``wbc-robust`` command line, through typer's CliRunner."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import WIDE, cli_text, per_image_rows
from typer.testing import CliRunner

from robustbench_wbc._version import __version__
from robustbench_wbc.attacks import register_attack
from robustbench_wbc.attacks.base import eps_label
from robustbench_wbc.bench import ResultStore
from robustbench_wbc.cli import app
from robustbench_wbc.data import SPLITS
from robustbench_wbc.models import MODELS, list_models
from robustbench_wbc.models.zoo_cards import ZooCard

REPO = Path(__file__).resolve().parents[1]

COMMANDS = [[], ["run"], ["leaderboard"], ["models"], ["models", "list"], ["models", "train"], ["train"],
            ["models", "cards"], ["data", "compare"], ["finetune"], ["attacks"], ["attacks", "list"],
            ["splits"], ["splits", "list"]]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "wbc-robust")
def test_help(cli, args):
    result = cli.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_version(cli):
    result = cli.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_run_help_lists_options(cli):
    text = cli_text(cli.invoke(app, ["run", "--help"], env=WIDE))
    for opt in ("--models", "--attacks", "--splits", "--eps", "--n-images", "--seed", "--out", "--force"):
        assert opt in text


# --- listings ------------------------------------------------------------------------------------
def test_models_list(cli, tiny_cards):
    result = cli.invoke(app, ["models", "list", "--tiny"], env=WIDE)
    assert result.exit_code == 0
    for m in list_models(include_tiny=True):
        assert m in result.output
    plain = cli.invoke(app, ["models", "list"], env=WIDE)
    assert plain.exit_code == 0
    assert "tiny_cls" not in plain.output and all(m in plain.output for m in list_models())
    filtered = cli.invoke(app, ["models", "list", "--tiny", "tiny_u*"], env=WIDE)
    assert "tiny_unet" in filtered.output and "tiny_cls" not in filtered.output


def test_models_list_ids_are_never_truncated(cli):
    """The listing is where users copy ids from; at 80 columns (a pipe, CI logs) they must stay whole."""
    result = cli.invoke(app, ["models", "list", "--tiny"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    for m in list_models(include_tiny=True):
        assert m in result.output, f"{m!r} is cut in the 80-column listing"


def test_attacks_list(cli):
    result = cli.invoke(app, ["attacks", "list"], env=WIDE)
    assert result.exit_code == 0
    assert "fgsm" in result.output and "pgd" in result.output and "8/255" in result.output


@pytest.mark.parametrize("columns", ["250", "80"])
def test_splits_list_one_line_per_split(cli, columns):
    result = cli.invoke(app, ["splits", "list"], env={"COLUMNS": columns})
    assert result.exit_code == 0
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert [line.split()[0] for line in lines] == SPLITS.list()
    assert len(lines) == len(SPLITS.list())


def test_models_cards(cli, tmp_path):
    out = tmp_path / "cards"
    result = cli.invoke(app, ["models", "cards", "--out", str(out)])
    assert result.exit_code == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"{m}.yaml" for m in list_models())
    for m in list_models():  # what the registry decides is what was committed
        assert ZooCard.read(out / f"{m}.yaml").static() == ZooCard.read(REPO / "models" / f"{m}.yaml").static()


def test_models_train(cli, tiny_cards):
    result = cli.invoke(app, ["models", "train", "tiny_cls"], env=WIDE)
    assert result.exit_code == 0, cli_text(result)
    assert tiny_cards["tiny_cls"].weights_sha256[:12] in result.output


# --- usage errors exit 2 -------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "expected"), [
    (["--models", "nope"], "Unknown model 'nope'"),
    (["--models", "tiny_clss"], "Did you mean: tiny_cls"),
    (["--models", "nothing*"], "matches nothing"),
    (["--attacks", "pgdd"], "Did you mean: pgd"),
    (["--splits", "synth:tset"], "Did you mean: synth:test"),
    (["--eps", "8/2x55"], "malformed eps"),
    (["--eps", "-1/255"], "eps must be ≥ 0"),
    (["--eps=-1/255"], "eps must be ≥ 0"),
    (["--eps", "1/0"], "division by zero"),
    (["--eps", "0.9"], "--force"),
    (["--eps", ""], "no eps given"),
    (["--n-images", "0"], "n-images"),
])
def test_run_usage_errors_exit_2(cli, tmp_path, args, expected):
    base = ["run", "--models", "tiny_cls", "--splits", "synth:test", "--out", str(tmp_path / "out")]
    result = cli.invoke(app, [*base, *args])
    assert result.exit_code == 2, cli_text(result)
    assert expected in cli_text(result)
    assert not (tmp_path / "out" / "cells").exists()


def test_run_decimal_fraction_eps_does_not_crash(cli, tmp_path):
    """Regression: `--eps 0.5/255` (accepted by the eps grammar) raised a bare ValueError."""
    result = cli.invoke(app, ["run", "--models", "tiny_cls", "--splits", "synth:test", "--attacks", "fgsm",
                              "--eps", "0.5/255", "--n-images", "5", "--out", str(tmp_path / "out")])
    assert result.exit_code in (0, 2), repr(result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


def test_leaderboard_on_empty_dir_exits_1(cli, tmp_path):
    result = cli.invoke(app, ["leaderboard", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "no results" in cli_text(result)


# --- end to end ----------------------------------------------------------------------------------
E2E_MODELS = "tiny_cls,tiny_unet,tiny_multitask"


@pytest.fixture(scope="module")
def e2e_out(tmp_path_factory, tiny_cards):
    out = tmp_path_factory.mktemp("cli_e2e")
    result = CliRunner().invoke(app, ["run", "--models", E2E_MODELS, "--attacks", "fgsm,pgd",
                                      "--eps", "2/255,8/255", "--n-images", "20", "--out", str(out)])
    return out, result


def test_e2e_run(e2e_out):
    out, result = e2e_out
    assert result.exit_code == 0, cli_text(result) + repr(result.exception)
    assert "0 already done" in cli_text(result) and "0 failed" in cli_text(result)
    assert (out / "results.parquet").is_file() and (out / "results.csv").is_file()
    table = pd.read_parquet(out / "results.parquet")
    assert set(table["model"]) == set(E2E_MODELS.split(","))
    assert set(table["split"]) == {"synth:test", "synth:ood-lab-b"}  # the default splits
    assert set(table["attack"]) == {"none", "fgsm", "pgd"}
    assert set(table["status"]) == {"ok"} and (per_image_rows(table)["n"] == 20).all()


def test_e2e_rerun_skips(cli, e2e_out):
    out, first = e2e_out
    assert first.exit_code == 0
    before = pd.read_parquet(out / "results.parquet")
    result = cli.invoke(app, ["run", "--models", E2E_MODELS, "--attacks", "fgsm,pgd",
                              "--eps", "2/255,8/255", "--n-images", "20", "--out", str(out)])
    assert result.exit_code == 0
    n_cells = before["cell_id"].nunique()
    assert f"{n_cells} cells: {n_cells} already done, 0 run, 0 failed" in cli_text(result)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), before)


def test_e2e_leaderboard_csv(cli, e2e_out, tmp_path):
    out, first = e2e_out
    assert first.exit_code == 0
    written = tmp_path / "board" / "lb.csv"
    result = cli.invoke(app, ["leaderboard", "--out", str(out), "--format", "csv", "--write", str(written)])
    assert result.exit_code == 0, cli_text(result)
    board = pd.read_csv(written)
    assert pd.read_csv(io.StringIO(result.stdout)).equals(board)  # what is printed is what is written
    assert sorted(board["model"]) == sorted(E2E_MODELS.split(","))
    assert board["rank"].tolist()[0] == 1 and board["rank"].is_monotonic_increasing
    robust = [c for c in board.columns if "@" in c and not c.endswith("_sd")]
    assert all(board[f"{c}_sd"].isna().all() for c in robust)  # one training seed: no spread
    assert sorted(robust) == ["ensemble@linf=2/255", "ensemble@linf=8/255", "fgsm:joint@linf=2/255",
                              "fgsm:joint@linf=8/255", "fgsm@linf=2/255", "fgsm@linf=8/255", "pgd:joint@linf=2/255",
                              "pgd:joint@linf=8/255", "pgd@linf=2/255", "pgd@linf=8/255"]
    joint = [c for c in robust if ":joint" in c]  # joint attacks: the multitask model only
    assert board.set_index("family").loc[["classifier", "unet"], joint].isna().all().all()
    assert board.set_index("family").loc["multitask", joint].notna().all()
    for _, row in board.iterrows():
        if row["family"] == "unet":
            assert pd.isna(row["clean_acc_id"]) and all(pd.isna(row[c]) for c in robust)
            assert 0 <= row["nucleus_dice_id"] <= 1
        else:
            for c in robust:
                assert pd.isna(row[c]) or row[c] <= row["clean_acc_id"] + 1e-12, (row["model"], c)
            assert row["worst_robust_acc"] == row["ensemble@linf=8/255"]
    # the ensemble columns: the per-image worst case over the attacks on the class head, from the stored samples
    expected = ensemble_by_hand(out)
    assert {m for m, *_ in expected} == {"tiny_cls", "tiny_multitask"}  # the U-Net has no class head
    assert_ensemble_columns(board, expected)


def ensemble_by_hand(out: Path) -> dict[tuple[str, str, float], float]:
    """Gives, per (model, norm, eps) where two or more attacks on the class head ran, the fraction of the
    in-distribution test images classified correctly that no such attack (target cls or joint) fooled: worked
    out here from the tidy table and each cell's per-sample ``robust``, not by the report's code; the mean over
    training seeds."""
    store = ResultStore(out)
    t = store.table()
    cells = t[(t["status"] == "ok") & (t["attack"] != "none") & t["target"].isin(["cls", "joint"]) & (t["eps"] > 0)
              & (t["split"].map(lambda s: SPLITS.get(s).role) == "test")].drop_duplicates("cell_id")
    per_seed: dict[tuple[str, str, float], list[float]] = {}
    for (model, _seed, _split, norm, eps), grp in cells.groupby(["model", "model_seed", "split", "norm", "eps"]):
        if len(grp) < 2:
            continue
        robust = pd.concat([store.samples(c).set_index("index")["robust"].astype(bool) for c in grp["cell_id"]],
                           axis=1)
        assert not robust.isna().any().any()  # every cell scored the same images
        per_seed.setdefault((model, norm, eps), []).append(float(robust.all(axis=1).mean()))
    return {key: sum(v) / len(v) for key, v in per_seed.items()}


def assert_ensemble_columns(board: pd.DataFrame, expected: dict[tuple[str, str, float], float]) -> None:
    """Each expected value is in its model's row of the board's one ensemble column at its eps (found by name:
    'ensemble' and the eps as the suite writes it, whatever else the name holds)."""
    rows = board.set_index("model")
    for (model, norm, eps), value in expected.items():
        label = re.escape(eps_label(eps, norm))
        cols = [c for c in board.columns if "ensemble" in c and not c.endswith("_sd")
                and re.search(rf"(?<![\w./]){label}(?![\w./])", c)]
        assert len(cols) == 1, (eps, norm, list(board.columns))
        assert rows.loc[model, cols[0]] == pytest.approx(value, abs=1e-12), (model, cols[0])


def _pgd_on_half(bright: bool):
    """An attack plugin: torchattacks' PGD on the brighter half of the images it is given (or the darker), the
    rest left alone; two such attacks fool different images, so their per-image worst case is below both."""

    def factory(model, eps):
        import torchattacks

        pgd = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=10, random_start=False)

        def attack(images, labels):
            mean = images.mean((1, 2, 3))
            chosen = mean >= mean.median() if bright else mean < mean.median()
            adv = images.clone()
            if chosen.any():
                adv[chosen] = pgd(images[chosen], labels[chosen])
            return adv
        return attack

    return factory


def test_leaderboard_ensemble_is_the_per_image_worst_case(cli, tmp_path, restore_attacks, tiny_cards):
    for name, bright in (("bright_half_cli_test", True), ("dark_half_cli_test", False)):
        register_attack(name, norm="linf", backend="test", default_eps=(8 / 255,))(_pgd_on_half(bright))
    out = tmp_path / "out"
    run = cli.invoke(app, ["run", "--models", "tiny_cls", "--splits", "synth:test", "--attacks",
                           "bright_half_cli_test,dark_half_cli_test", "--n-images", "20", "--out", str(out)], env=WIDE)
    assert run.exit_code == 0, cli_text(run)
    result = cli.invoke(app, ["leaderboard", "--out", str(out), "--format", "csv"])
    assert result.exit_code == 0, cli_text(result)
    board = pd.read_csv(io.StringIO(result.stdout))
    expected = ensemble_by_hand(out)
    assert list(expected) == [("tiny_cls", "linf", pytest.approx(8 / 255))]
    assert_ensemble_columns(board, expected)
    # these data tell a per-image worst case from the worst attack: each attack leaves robust images the other fools
    singles = [c for c in board.columns if "half_cli_test" in c and not c.endswith("_sd")]
    assert len(singles) == 2 and next(iter(expected.values())) < board[singles].min(axis=1).item()


def test_e2e_leaderboard_markdown(cli, e2e_out):
    out, first = e2e_out
    assert first.exit_code == 0
    result = cli.invoke(app, ["leaderboard", "--out", str(out)], env=WIDE)
    assert result.exit_code == 0
    lines = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + 3
    assert "pgd L∞ 8/255 robust acc %" in lines[0]


def test_run_with_cheating_attack_exits_1(cli, tmp_path, restore_attacks, tiny_cards):
    @register_attack(norm="linf", backend="test", default_eps=(8 / 255,))
    def cheat_cli_test(model, eps):
        """Adds twice the budget."""
        return lambda images, labels: (images + 2 * eps).clamp(0, 1)

    result = cli.invoke(app, ["run", "--models", "tiny_cls", "--splits", "synth:test", "--attacks",
                              "cheat_cli_test", "--n-images", "10", "--out", str(tmp_path)])
    assert result.exit_code == 1
    text = cli_text(result)
    assert "1 failed" in text and "invalid" in text and "threat model violated" in text
    # the leaderboard still shows the model, with its failed cell counted
    board = cli.invoke(app, ["leaderboard", "--out", str(tmp_path), "--format", "csv"])
    assert board.exit_code == 0
    df = pd.read_csv(io.StringIO(board.stdout))
    assert df["model"].tolist() == ["tiny_cls"] and df["failed_cells"].tolist() == [1]
    assert MODELS.get("tiny_cls").family == df["family"].item()


@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_run_with_attack_returning_another_dtype_is_invalid(cli, tmp_path, restore_attacks, tiny_cards, dtype):
    """An adversarial of another float dtype than the images' (here within budget) is refused, not cast."""
    name = f"dtype_cli_test_{dtype}"
    register_attack(name, norm="linf", backend="test", default_eps=(8 / 255,))(
        lambda model, eps: lambda images, labels: images.to(getattr(torch, dtype)))
    result = cli.invoke(app, ["run", "--models", "tiny_cls", "--splits", "synth:test", "--attacks", name,
                              "--n-images", "10", "--out", str(tmp_path)], env=WIDE)
    assert result.exit_code == 1, cli_text(result)
    why = f"attack returned dtype torch.{dtype}, expected torch.float32"
    assert "1 failed" in cli_text(result) and why in cli_text(result)
    cells = pd.read_parquet(tmp_path / "results.parquet")
    cells = cells[cells["attack"] == name]
    assert set(cells["status"]) == {"invalid"} and cells["reason"].str.contains(why, regex=False).all()


def test_corrupt_checkpoint_names_the_fix(cli, tmp_path, monkeypatch):
    """A damaged card stops the run with exit 1 and says how to repair it; listing still works."""
    from robustbench_wbc import paths
    from robustbench_wbc.models import load_model

    monkeypatch.setenv("WBC_ROBUST_HOME", str(tmp_path / "home"))
    load_model("tiny_cls")
    (paths.checkpoint_dir("tiny_cls") / "card.json").write_text("{not json")
    result = cli.invoke(app, ["run", "--models", "tiny_cls", "--splits", "synth:test", "--attacks", "fgsm",
                              "--eps", "1/255", "--n-images", "5", "--out", str(tmp_path / "out")], env=WIDE)
    assert result.exit_code == 1, cli_text(result)
    assert "wbc-robust models train tiny_cls --force" in cli_text(result)
    listing = cli.invoke(app, ["models", "list", "--tiny"], env=WIDE)
    assert listing.exit_code == 0 and "corrupt" in listing.output


def test_run_seeds_option(cli, tmp_path, tiny_cards):
    out = tmp_path / "out"
    base = ["run", "--models", "tiny_cls", "--splits", "synth:test", "--attacks", "fgsm", "--eps", "2/255",
            "--n-images", "10", "--out", str(out)]
    bad = cli.invoke(app, [*base, "--seeds", "0,x"], env=WIDE)
    assert bad.exit_code == 2 and "--seeds" in cli_text(bad)
    ok = cli.invoke(app, [*base, "--seeds", "0,2"], env=WIDE)
    assert ok.exit_code == 0, cli_text(ok)
    table = pd.read_parquet(out / "results.parquet")
    assert set(table["model_seed"]) == {0, 2} and set(table["model"]) == {"tiny_cls"}


# --- model plugins from a file, and top-level train ---------------------------------------------------
PLUGIN = '''
from robustbench_wbc.models import WBCNet, register_model

@register_model(family="classifier", encoder="resnet10t-w8", recipe="tiny-full", tiny=True)
def plugged_cls():
    """A classifier from a plugin file."""
    return WBCNet("classifier", "resnet10t", encoder_kwargs={"channels": (8, 16, 32, 64), "stem_width": 8})
'''


def test_model_plugin_file_joins_list_train_and_run(cli, tmp_path, restore_models):
    plugin = tmp_path / "my_models.py"
    plugin.write_text(PLUGIN)
    listed = cli.invoke(app, ["models", "list", "plugged*", "--tiny", "--model-plugin", str(plugin)], env=WIDE)
    assert listed.exit_code == 0, cli_text(listed)
    assert "plugged_cls" in listed.stdout and "A classifier from a plugin file." in listed.stdout
    out = tmp_path / "run"
    result = cli.invoke(app, ["run", "--model-plugin", str(plugin), "--models", "plugged_cls", "--splits", "synth:test",
                              "--attacks", "fgsm", "--eps", "2/255", "--n-images", "8", "--out", str(out)], env=WIDE)
    assert result.exit_code == 0, cli_text(result)
    assert set(pd.read_parquet(out / "results.parquet")["model"]) == {"plugged_cls"}


def test_broken_model_plugin_names_the_file(cli, tmp_path, restore_models):
    plugin = tmp_path / "broken.py"
    plugin.write_text("raise RuntimeError('no GPU here')\n")
    result = cli.invoke(app, ["models", "list", "--model-plugin", str(plugin)], env=WIDE)
    assert result.exit_code == 1
    assert "broken.py" in cli_text(result) and "no GPU here" in cli_text(result)


def test_train_trains_what_is_missing_at_each_seed(cli, tiny_cards):
    result = cli.invoke(app, ["train", "tiny_cls", "--seeds", "0,5"], env=WIDE)
    assert result.exit_code == 0, cli_text(result)
    text = cli_text(result)
    assert "tiny_cls: cached" in text and "tiny_cls@5: trained in" in text
    again = cli.invoke(app, ["train", "tiny_cls", "--seeds", "0,5"], env=WIDE)
    assert "tiny_cls@5: cached" in cli_text(again)
    bad = cli.invoke(app, ["train", "tiny_cls", "--seeds", "a"], env=WIDE)
    assert bad.exit_code == 2 and "--seeds" in cli_text(bad)


def test_profile_option(cli, monkeypatch):
    monkeypatch.setenv("WBC_ROBUST_PROFILE", "default")  # restored after: the option sets it for the process
    bad = cli.invoke(app, ["models", "list", "--profile", "huge"], env=WIDE)
    assert bad.exit_code == 2 and "unknown profile 'huge'" in cli_text(bad)
    ok = cli.invoke(app, ["models", "list", "resnet10t_cls", "--profile", "paper"], env=WIDE)
    assert ok.exit_code == 0 and "full+paper" in ok.stdout and " no " in ok.stdout


def test_attacks_none_runs_clean_cells_only(cli, tmp_path, tiny_cards):
    out = tmp_path / "clean"
    result = cli.invoke(app, ["run", "--models", "tiny_cls,tiny_unet", "--splits", "synth:test", "--attacks", "none",
                              "--n-images", "8", "--out", str(out)], env=WIDE)
    assert result.exit_code == 0, cli_text(result)
    table = pd.read_parquet(out / "results.parquet")
    assert set(table["attack"]) == {"none"} and set(table["model"]) == {"tiny_cls", "tiny_unet"}


def test_no_attack_may_be_called_none():
    def none(model, spec):  # pragma: no cover - never registered
        return None

    with pytest.raises(ValueError, match="'none' names the clean cells"):
        register_attack(norm="linf", backend="own", default_eps=(0.1,))(none)


def test_leaderboard_by_class(cli, e2e_out, tmp_path):
    out, first = e2e_out
    assert first.exit_code == 0
    result = cli.invoke(app, ["leaderboard", "--out", str(out), "--by-class"], env=WIDE)
    assert result.exit_code == 0, cli_text(result)
    assert "**Nucleus Dice**" in result.stdout and "basophil OOD" in result.stdout
    csv = cli.invoke(app, ["leaderboard", "--out", str(out), "--by-class", "--format", "csv"], env=WIDE)
    table = pd.read_csv(io.StringIO(csv.stdout))
    assert list(table.columns) == ["model", "model_seed", "split", "role", "class", "n", "metric", "value"]
    assert table["value"].between(0, 1).all()


def test_leaderboard_by(cli, e2e_out):
    out, first = e2e_out
    result = cli.invoke(app, ["leaderboard", "--out", str(out), "--by", "seg", "--format", "csv"])
    assert result.exit_code == 0, cli_text(result)
    board = pd.read_csv(io.StringIO(result.stdout))
    assert board["model"].iloc[-1] == "tiny_cls"  # no mask head: ranked last by Dice under attack
    md = cli.invoke(app, ["leaderboard", "--out", str(out), "--by", "ood"], env=WIDE)
    assert md.exit_code == 0 and "Ranked by clean accuracy out of distribution" in cli_text(md)
    for bad, message in (("speed", "unknown ranking"), ("l2", "nothing to rank by 'l2'")):
        result = cli.invoke(app, ["leaderboard", "--out", str(out), "--by", bad])
        assert result.exit_code == 2 and message in cli_text(result)


def test_leaderboard_shift(cli, e2e_out):
    out, _ = e2e_out
    result = cli.invoke(app, ["leaderboard", "--out", str(out), "--shift"], env=WIDE)
    assert result.exit_code == 0, cli_text(result)
    text = cli_text(result)
    # two models with a class head: no trend across models yet, and no corruption splits; both said plainly
    assert "Effective robustness" in text and "fewer than the 4 a line needs" in text
    assert "Corruption error" in text and "no clean accuracy on corruption splits" in text
    dice = cli.invoke(app, ["leaderboard", "--out", str(out), "--shift", "--metric", "nucleus_dice"], env=WIDE)
    assert dice.exit_code == 0 and "Corruption error of nucleus_dice" in cli_text(dice)
    bad = cli.invoke(app, ["leaderboard", "--out", str(out), "--shift", "--metric", "acuracy"], env=WIDE)
    assert bad.exit_code == 2 and "unknown metric 'acuracy'" in cli_text(bad) and "Did you mean: accuracy" in cli_text(bad)
    bad = cli.invoke(app, ["leaderboard", "--out", str(out), "--shift", "--mce-baseline", "alexnet"], env=WIDE)
    assert bad.exit_code == 2 and "unknown model 'alexnet'" in cli_text(bad) and "tiny_cls" in cli_text(bad)


def test_leaderboard_html(cli, e2e_out):
    out, _ = e2e_out
    result = cli.invoke(app, ["leaderboard", "--out", str(out), "--format", "html"])
    assert result.exit_code == 0, cli_text(result)
    assert "<table class=\"leaderboard\">" in result.stdout and all(m in result.stdout for m in E2E_MODELS.split(","))
    bad = cli.invoke(app, ["leaderboard", "--out", str(out), "--format", "html", "--by-class"], env=WIDE)
    assert bad.exit_code == 2 and "wbc-robust report" in cli_text(bad)
