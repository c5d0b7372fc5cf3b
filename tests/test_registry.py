"""The generic registry: ids, lookups with suggestions, listing, resolving, entry-point plugins."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustbench_wbc.attacks import ATTACKS, build_attack, check_threat_model
from robustbench_wbc.data import SPLITS
from robustbench_wbc.models import MODELS
from robustbench_wbc.registry import PluginError, Registry, UnknownNameError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_PLUGIN = REPO / "attacks" / "examples"


@pytest.fixture
def reg() -> Registry[str]:
    r: Registry[str] = Registry("widget", list_command="widgets list")
    for name in ("m10", "m2", "resnet10t_cls", "m1", "a"):
        r.add(name, f"entry-{name}")
    return r


# --- add / get ---------------------------------------------------------------------------------
def test_add_and_get(reg):
    assert reg.get("m2") == "entry-m2"
    assert "m10" in reg and "m3" not in reg
    assert len(reg) == 5


def test_add_returns_entry_and_same_entry_twice_is_fine(reg):
    entry = object()
    assert reg.add("x1", entry) is entry
    assert reg.add("x1", entry) is entry  # re-registering the very same entry (a re-import)
    assert reg.get("x1") is entry


def test_duplicate_id_raises(reg):
    with pytest.raises(ValueError, match="already registered"):
        reg.add("m2", "another entry")
    assert reg.get("m2") == "entry-m2"


@pytest.mark.parametrize("bad", ["", "Upper", "_lead", "-lead", "has space", "semi;colon", "a/b"])
def test_invalid_id_raises(reg, bad):
    with pytest.raises(ValueError, match="Invalid widget id"):
        reg.add(bad, "x")
    assert bad not in reg


@pytest.mark.parametrize("good", ["synth:test", "a.b-c_d", "pgd@8", "0x"])
def test_valid_ids(reg, good):
    reg.add(good, "x")
    assert reg.get(good) == "x"


def test_remove(reg):
    reg.remove("m2")
    assert "m2" not in reg
    reg.remove("never-there")  # forgetting an unknown id is a no-op
    assert len(reg) == 4


def test_unknown_name_suggests_closest(reg):
    with pytest.raises(UnknownNameError) as info:
        reg.get("resnet10t_clss")
    err = info.value
    assert isinstance(err, KeyError)
    assert err.suggestions[0] == "resnet10t_cls"
    msg = str(err)
    assert msg.startswith("Unknown widget 'resnet10t_clss'.")
    assert "Did you mean: resnet10t_cls?" in msg
    assert "wbc-robust widgets list" in msg


def test_unknown_name_without_close_match_has_no_suggestion(reg):
    with pytest.raises(UnknownNameError) as info:
        reg.get("zzzzzzzz")
    assert info.value.suggestions == []
    assert "Did you mean" not in str(info.value)


@pytest.mark.parametrize(("registry", "typo", "expected"), [
    (MODELS, "tiny_clss", "tiny_cls"),
    (MODELS, "resnet10t_unett", "resnet10t_unet"),
    (ATTACKS, "pgdd", "pgd"),
    (SPLITS, "synth:tset", "synth:test"),
])
def test_real_registries_suggest(registry, typo, expected):
    with pytest.raises(UnknownNameError, match="Did you mean") as info:
        registry.get(typo)
    assert expected in info.value.suggestions
    assert f"wbc-robust {registry.list_command}" in str(info.value)


def test_top_level_api_exports_the_registries():
    import robustbench_wbc as rw

    missing = [name for name in rw.__all__ if not hasattr(rw, name)]
    assert missing == []
    assert rw.MODELS is MODELS and rw.ATTACKS is ATTACKS and rw.SPLITS is SPLITS


# --- list / resolve ----------------------------------------------------------------------------
def test_list_is_naturally_sorted(reg):
    assert reg.list() == ["a", "m1", "m2", "m10", "resnet10t_cls"]
    assert list(reg) == reg.list()


def test_list_wildcards_excludes_and_where(reg):
    assert reg.list("m*") == ["m1", "m2", "m10"]
    assert reg.list(["m1*", "a"]) == ["a", "m1", "m10"]
    assert reg.list("m?") == ["m1", "m2"]
    assert reg.list("m*", exclude_filters="m1*") == ["m2"]
    assert reg.list(where=lambda e: e.endswith("0")) == ["m10"]
    assert reg.list("nothing*") == []


def test_resolve_all(reg):
    assert reg.resolve("all") == reg.list()
    assert reg.resolve("all", all_filter=lambda e: e.startswith("entry-m")) == ["m1", "m2", "m10"]


def test_resolve_comma_lists_keep_order_and_dedupe(reg):
    assert reg.resolve("m10, a ,m2") == ["m10", "a", "m2"]
    assert reg.resolve(["m2", "a,m2"]) == ["m2", "a"]
    assert reg.resolve("m1,m*") == ["m1", "m2", "m10"]
    assert reg.resolve("m1,,") == ["m1"]


def test_resolve_wildcards(reg):
    assert reg.resolve("m*") == ["m1", "m2", "m10"]
    assert reg.resolve("res*,a") == ["resnet10t_cls", "a"]


def test_resolve_unknown_name_raises(reg):
    with pytest.raises(UnknownNameError, match="Did you mean: m1"):
        reg.resolve("a,m11x")


def test_resolve_pattern_matching_nothing_raises(reg):
    with pytest.raises(UnknownNameError, match="matches nothing"):
        reg.resolve("a,zz*")


@pytest.mark.parametrize("empty", ["", " , ", []])
def test_resolve_nothing_raises(reg, empty):
    with pytest.raises(ValueError, match="No widget given"):
        reg.resolve(empty)


def test_models_resolve_all_excludes_tiny_when_filtered():
    zoo = MODELS.resolve("all", all_filter=lambda e: not e.tiny)
    assert zoo and not any(MODELS.get(m).tiny for m in zoo)
    assert set(MODELS.resolve("tiny_*")) == {m for m in MODELS.list() if MODELS.get(m).tiny}


# --- entry-point plugins -----------------------------------------------------------------------
def _make_dist(root: Path, dist: str, group: str, entry_points: dict[str, str]) -> None:
    """Writes a minimal installed distribution (``<dist>-0.1.dist-info``) into ``root``."""
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    eps = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{eps}")


@pytest.fixture
def forget_modules():
    """Removes the named modules from ``sys.modules`` after the test (so each test re-imports)."""
    names: list[str] = []
    yield names
    for name in list(sys.modules):
        if any(name == n or name.startswith(n + ".") for n in names):
            del sys.modules[name]


def test_entry_point_plugin_registers_an_attack(tmp_path, monkeypatch, restore_attacks, forget_modules):
    forget_modules.append("fakeplug_mod")
    _make_dist(tmp_path, "fakeplug", "robustbench_wbc.attacks", {"fake": "fakeplug_mod"})
    (tmp_path / "fakeplug_mod.py").write_text(
        "from robustbench_wbc.attacks import register_attack\n\n"
        "@register_attack(norm='linf', backend='fake', default_eps=(1/255,), targets=('cls',))\n"
        "def fake_plugin_attack(model, eps):\n"
        "    '''A plugin attack that changes nothing.'''\n"
        "    return lambda images, labels: images.clone()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "fake_plugin_attack" not in ATTACKS._entries
    ATTACKS._plugins_loaded = False
    assert "fake_plugin_attack" in ATTACKS.list()
    entry = ATTACKS.get("fake_plugin_attack")
    assert (entry.backend, entry.targets, entry.description) == ("fake", ("cls",), "A plugin attack that changes nothing.")
    assert {"fgsm", "pgd"} <= set(ATTACKS.list())  # built-ins survive a reload
    assert ATTACKS._plugins_loaded


def test_entry_point_plugins_load_once(tmp_path, monkeypatch, restore_attacks, forget_modules):
    """A second lookup does not import the plugins again."""
    forget_modules.append("countplug_mod")
    _make_dist(tmp_path, "countplug", "robustbench_wbc_tests.widgets", {"count": "countplug_mod"})
    (tmp_path / "countplug_mod.py").write_text("import builtins\n"
                                               "builtins._countplug_loads = getattr(builtins, '_countplug_loads', 0) + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r: Registry[str] = Registry("widget", group="robustbench_wbc_tests.widgets")
    import builtins
    monkeypatch.setattr(builtins, "_countplug_loads", 0, raising=False)
    r.list()
    r.list()
    assert "x" not in r
    assert builtins._countplug_loads == 1


@pytest.mark.parametrize("via_attacks", [False, True], ids=["own-registry", "ATTACKS"])
def test_plugin_failing_on_import_raises_plugin_error(tmp_path, monkeypatch, restore_attacks,
                                                      forget_modules, via_attacks):
    group = "robustbench_wbc.attacks" if via_attacks else "robustbench_wbc_tests.gizmos"
    forget_modules.append("badplug_mod")
    _make_dist(tmp_path, "badplug", group, {"broken": "badplug_mod"})
    (tmp_path / "badplug_mod.py").write_text("raise RuntimeError('boom in plugin')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    if via_attacks:
        registry = ATTACKS
        ATTACKS._plugins_loaded = False
    else:
        registry = Registry("gizmo", group=group)
    with pytest.raises(PluginError) as info:
        registry.get("anything")
    msg = str(info.value)
    assert "'broken'" in msg and "badplug_mod" in msg and group in msg
    assert "RuntimeError: boom in plugin" in msg
    assert isinstance(info.value.__cause__, RuntimeError)


def test_example_plugin_attacks(tmp_path, monkeypatch, restore_attacks, forget_modules, load_tiny):
    """The repository's example plugin, installed as an entry point: a factory and a torchattacks subclass,
    each within its budget. (CI also pip-installs it: `make example-plugin`.)"""
    assert (EXAMPLE_PLUGIN / "wbc_example_plugin" / "attacks.py").is_file()
    forget_modules.append("wbc_example_plugin")
    _make_dist(tmp_path, "wbc_example_plugin", "robustbench_wbc.attacks",
               {"example": "wbc_example_plugin.attacks"})
    monkeypatch.syspath_prepend(str(EXAMPLE_PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "noise-linf" not in ATTACKS._entries
    ATTACKS._plugins_loaded = False
    assert {"noise-linf", "fgsm-ll"} <= set(ATTACKS.list())
    data = SPLITS.get("synth:test").load(20, 32)
    eps = 8 / 255
    model = load_tiny("tiny_cls")
    for attack_id, params in (("noise-linf", {"samples": 2}), ("fgsm-ll", {})):
        entry = ATTACKS.get(attack_id)
        assert entry.norm == "linf" and entry.backend == "example" and entry.targets == ("cls",)
        attack = build_attack(entry.spec(eps, "cls", **params), model)
        torch.manual_seed(0)
        adv = attack(data.images, data.labels, None)
        check_threat_model(data.images, adv, "linf", eps)
        assert (adv - data.images).abs().max().item() == pytest.approx(eps, abs=1e-6)
        assert attack.passes[0] > 0 and not model.training


def test_lookup_falls_back_to_lower_case():
    """Ids are lower-case; a user who types a dataset's own spelling (raabin:TestB) still finds it."""
    reg = Registry("thing")
    reg.add("raabin:testb", 1)
    assert reg.get("raabin:TestB") == 1
    assert reg.resolve("raabin:TestB") == ["raabin:testb"]
    with pytest.raises(UnknownNameError):
        reg.get("raabin:TestC")


def test_example_plugin_loads_in_a_fresh_interpreter(tmp_path):
    """Regression: the suite registers its presets while `robustbench_wbc` is being imported; had that
    loaded the entry-point plugins, a plugin doing `from robustbench_wbc import register_attack` would
    hit a partially initialised package (a circular import) in a fresh process, as `make example-plugin` did."""
    _make_dist(tmp_path, "wbc_example_plugin", "robustbench_wbc.attacks", {"example": "wbc_example_plugin.attacks"})
    code = ("import robustbench_wbc as rw; ids = rw.ATTACKS.list(); "
            "assert {'noise-linf', 'fgsm-ll', 'pgd-linf-8'} <= set(ids), ids; print('ok')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(EXAMPLE_PLUGIN)])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
