"""The attack options of the CLI: --target, --backend, --plugin (Python and YAML), the cross-task view."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import WIDE, cli_text

from robustbench_wbc.attacks import ATTACKS
from robustbench_wbc.cli import app

PLUGIN = '''
import torch
from robustbench_wbc import register_attack


@register_attack("{name}", norm="linf", backend="mine", samples=2)
def attack_factory(model, eps, samples):
    """Random sign noise at eps, the worst of `samples` draws."""
    def attack(images, labels):
        {body}
    return attack
'''
NOISE = "return (images + eps * torch.randn_like(images).sign()).clamp(0, 1)"


def _plugin(tmp_path, name, body=NOISE):
    p = tmp_path / f"{name.replace('-', '_')}.py"
    p.write_text(PLUGIN.format(name=name, body=body))
    return p


def _run(cli, out, *args):
    return cli.invoke(app, ["run", "--models", "tiny_cls", "--splits", "synth:test", "--n-images", "12",
                            "--eps", "8/255", "--out", str(out), *args])


def test_plugin_file_attack_is_listed_and_run(cli, tmp_path, restore_attacks, tiny_cards):
    plugin = _plugin(tmp_path, "noise-mine")
    listed = cli.invoke(app, ["attacks", "list", "noise*", "--plugin", str(plugin)])
    assert listed.exit_code == 0 and "noise-mine" in cli_text(listed)
    result = _run(cli, tmp_path / "out", "--plugin", str(plugin), "--attacks", "noise-mine")
    assert result.exit_code == 0, cli_text(result)
    t = pd.read_parquet(tmp_path / "out" / "results.parquet")
    rows = t[t["attack"] == "noise-mine"]
    assert set(rows["backend"]) == {"mine"} and set(rows["params"]) == {"samples=2"}
    assert (rows["forward_passes"] > 0).all()


def test_plugin_that_raises_fails_its_cells_and_the_run_goes_on(cli, tmp_path, restore_attacks, tiny_cards):
    plugin = _plugin(tmp_path, "boom-mine", body="raise RuntimeError('boom in my attack')")
    result = _run(cli, tmp_path / "out", "--plugin", str(plugin), "--attacks", "boom-mine,fgsm")
    assert result.exit_code == 1
    text = cli_text(result)
    assert "failed tiny_cls synth:test boom-mine" in text and "RuntimeError: boom in my attack" in text
    t = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert set(t.loc[t["attack"] == "fgsm", "status"]) == {"ok"}  # the other cells ran
    assert set(t.loc[t["attack"] == "boom-mine", "status"]) == {"failed"}


def test_plugin_that_breaks_its_budget_is_invalid(cli, tmp_path, restore_attacks, tiny_cards):
    plugin = _plugin(tmp_path, "cheat-mine", body="return (images + 3 * eps).clamp(0, 1)")
    result = _run(cli, tmp_path / "out", "--plugin", str(plugin), "--attacks", "cheat-mine")
    assert result.exit_code == 1 and "invalid" in cli_text(result) and "exceeds eps" in cli_text(result)


def test_preset_file_runs_with_its_params(cli, tmp_path, restore_attacks, tiny_cards):
    preset = tmp_path / "pgd3.yaml"
    preset.write_text("name: pgd3-mine\nbase: pgd\nparams: {steps: 3}\n")
    result = _run(cli, tmp_path / "out", "--plugin", str(preset), "--attacks", "pgd3-mine")
    assert result.exit_code == 0, cli_text(result)
    t = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert "steps=3" in set(t.loc[t["attack"] == "pgd3-mine", "params"]).pop()


def test_broken_plugin_file_names_it(cli, tmp_path, restore_attacks):
    bad = tmp_path / "bad_attacks.py"
    bad.write_text("raise ImportError('no such thing')\n")
    result = _run(cli, tmp_path / "out", "--plugin", str(bad), "--attacks", "fgsm")
    assert result.exit_code == 1
    assert "bad_attacks.py" in cli_text(result) and "no such thing" in cli_text(result)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_backend_option_runs_the_library_version(cli, tmp_path, tiny_cards):
    result = _run(cli, tmp_path / "out", "--attacks", "fgsm,pgd", "--backend", "torchattacks")
    assert result.exit_code == 0, cli_text(result)
    t = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert set(t["attack"]) == {"none", "fgsm@torchattacks", "pgd@torchattacks"}
    assert set(t.loc[t["attack"] != "none", "backend"]) == {"torchattacks"}


@pytest.mark.parametrize(("args", "expected"), [
    (["--attacks", "pgd", "--backend", "nolib"], "no 'nolib' backend"),
    (["--attacks", "pgd", "--target", "head"], "unknown target"),
])
def test_attack_option_usage_errors_exit_2(cli, tmp_path, args, expected):
    result = _run(cli, tmp_path / "out", *args)
    assert result.exit_code == 2 and expected in cli_text(result)


def test_target_option_and_the_cross_task_matrix(cli, tmp_path, tiny_cards):
    out = tmp_path / "out"
    result = cli.invoke(app, ["run", "--models", "tiny_multitask,tiny_cls", "--splits", "synth:test", "--n-images", "12",
                              "--attacks", "fgsm", "--eps", "8/255", "--target", "seg,joint", "--out", str(out)])
    assert result.exit_code == 0, cli_text(result)
    t = pd.read_parquet(out / "results.parquet")
    attacked = t[t["attack"] != "none"]
    assert set(attacked["model"]) == {"tiny_multitask"}  # a classifier has no seg or joint target
    assert set(attacked["target"]) == {"seg", "joint"}
    joint = attacked[attacked["target"] == "joint"]
    assert {"robust_accuracy", "nucleus_dice", "cytoplasm_dice"} <= set(joint["metric"])
    assert (joint["backward_passes"] > 0).all()
    matrix = cli.invoke(app, ["leaderboard", "--out", str(out), "--cross-task"])
    assert matrix.exit_code == 0
    text = cli_text(matrix)
    assert "tiny_multitask" in text and "| seg |" in text and "| joint |" in text and "| cls |" not in text


def test_every_builtin_attack_is_listed(cli):
    result = cli.invoke(app, ["attacks", "list"], env=WIDE)
    assert result.exit_code == 0
    for a in ATTACKS.list():
        assert a in result.stdout
