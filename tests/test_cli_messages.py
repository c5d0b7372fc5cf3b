"""What the CLI prints is shown as it is: paths, names and messages that hold rich markup (``[x]``, ``[/x]``, ``:x:``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import WIDE, cli_text, make_mini_dataset

from robustbench_wbc.attacks import register_attack
from robustbench_wbc.cli import app
from robustbench_wbc.data.real import unregister_dataset

# a closing tag with no opening one (rich raises MarkupError), a style tag (rich would swallow it), both, and
# an emoji code (rich would draw it)
MARKUP = ("[/x]", "[x]", "[bold]b[/bold]", ":x:")


def _clean_exit(result, code: int, logged_traceback: bool = False) -> str:
    """The text of a command that exited with ``code`` by itself: no exception but the exit, and no
    traceback printed unless ``logged_traceback`` (a failed cell's, which the run logs)."""
    text = cli_text(result)
    assert result.exit_code == code, text + repr(result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "MarkupError" not in text and (logged_traceback or "Traceback" not in text)
    return text


@pytest.fixture
def odd_dir(tmp_path, request) -> Path:
    """A folder whose path holds markup (``[/x]`` makes a folder ``a[`` and one ``x]`` below it)."""
    path = tmp_path / f"a{request.param}b"
    path.mkdir(parents=True)
    return path


@pytest.mark.parametrize("odd_dir", MARKUP, indirect=True)
def test_data_path_that_does_not_exist(cli, odd_dir):
    missing = odd_dir / "missing"
    text = _clean_exit(cli.invoke(app, ["splits", "list", "--data", f"odd={missing}"], env=WIDE), 2)
    assert f"{missing} does not exist" in text


@pytest.mark.parametrize("odd_dir", MARKUP, indirect=True)
def test_data_path_with_an_unknown_layout(cli, odd_dir):
    (odd_dir / "nothing-known").mkdir()
    text = _clean_exit(cli.invoke(app, ["splits", "list", "--data", f"odd={odd_dir}"], env=WIDE), 2)
    assert f"Error: {odd_dir}: no known dataset layout" in text
    assert "the generic <root>[/<split>]/<class>/<image>;" in text  # the layout hint, itself markup to rich


@pytest.mark.parametrize("odd_dir", MARKUP, indirect=True)
def test_listing_a_dataset_whose_path_holds_markup(cli, odd_dir):
    root = make_mini_dataset(odd_dir / "mini")
    try:
        text = _clean_exit(cli.invoke(app, ["splits", "list", "--data", f"oddmini={root}"], env=WIDE), 0)
    finally:
        unregister_dataset("oddmini")
    assert "oddmini:all" in text and str(root) in text


@pytest.mark.parametrize("option", ["--plugin", "--model-plugin"])
@pytest.mark.parametrize("odd_dir", MARKUP, indirect=True)
def test_plugin_file_that_fails_to_import(cli, odd_dir, option, restore_attacks, restore_models):
    plugin = odd_dir / "plugin[/y].py"
    plugin.parent.mkdir(parents=True, exist_ok=True)
    plugin.write_text("import a_module_that_is_not_there_wbc\n")
    command = ["attacks", "list"] if option == "--plugin" else ["models", "list"]
    text = _clean_exit(cli.invoke(app, [*command, option, str(plugin)], env=WIDE), 1)
    assert f"plugin {plugin} failed to import" in text and f"`python {plugin}`" in text


@pytest.mark.parametrize(("option", "kind"), [("--models", "model"), ("--attacks", "attack"), ("--splits", "split")])
@pytest.mark.parametrize("markup", MARKUP)
def test_unknown_name_with_markup(cli, tmp_path, option, kind, markup):
    name = f"zz{markup}"
    text = _clean_exit(cli.invoke(app, ["run", option, name, "--out", str(tmp_path)], env=WIDE), 2)
    assert f"Error: Unknown {kind} '{name}'." in text


@pytest.mark.parametrize("markup", MARKUP)
def test_bad_parameter_with_markup(cli, tmp_path, markup):
    """typer renders BadParameter as text already; pinned, as the CLI relies on it."""
    text = _clean_exit(cli.invoke(app, ["run", "--seeds", f"0,{markup}", "--out", str(tmp_path)], env=WIDE), 2)
    assert f"malformed '0,{markup}'" in text


@pytest.mark.parametrize("command", [["leaderboard", "--out"], ["report", "--results"], ["show", "figures", "--out"]])
@pytest.mark.parametrize("odd_dir", MARKUP, indirect=True)
def test_no_results_in_a_directory_whose_path_holds_markup(cli, odd_dir, command):
    text = _clean_exit(cli.invoke(app, [*command, str(odd_dir)], env=WIDE), 1)
    assert f"Error: no results in {odd_dir}. Run `wbc-robust run --out {odd_dir}` first." in text


@pytest.fixture
def failing_plugin(restore_attacks):
    """An attack whose description and error hold markup."""

    @register_attack("markup_cli_test", norm="linf", backend="test", default_eps=(8 / 255,))
    def markup_cli_test(model, eps):
        """Fails with [/x] [bold]markup[/bold] in its message."""

        def attack(images, labels):
            raise RuntimeError("broke at [/x] [bold]here[/bold]")
        return attack

    return "markup_cli_test"


def test_attack_listing_shows_a_description_with_markup(cli, failing_plugin):
    listing = _clean_exit(cli.invoke(app, ["attacks", "list", failing_plugin], env=WIDE), 0)
    assert "Fails with [/x] [bold]markup[/bold] in its message." in listing


def test_failed_cell_shows_its_reason_and_the_out_path_with_markup(cli, tmp_path, failing_plugin, tiny_cards):
    out = tmp_path / "out[/x]"
    result = cli.invoke(app, ["run", "--models", "tiny_cls", "--splits", "synth:test", "--attacks", failing_plugin,
                              "--n-images", "5", "--out", str(out)], env=WIDE)
    text = _clean_exit(result, 1, logged_traceback=True)
    assert f"1 failed → {out}/results.parquet" in text
    assert "broke at [/x] [bold]here[/bold]" in text
