"""Provenance: a cell is reused only when it would come out the same, and eps 0 runs the real attack path.

A cell's fingerprint (bench/provenance.py) covers the code versions, the library versions, the data,
the precision and the batching; a re-run recomputes exactly the cells whose fingerprint changed,
saying why, and nothing else. The component versions cannot go stale silently: their source hashes
are recorded and checked here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from conftest import make_mini_dataset
from torch import nn

from robustbench_wbc.bench import ResultStore, provenance, run, runner
from robustbench_wbc.bench.cells import Cell
from robustbench_wbc.data import splits as splits_mod
from robustbench_wbc.data.real import register_dataset, unregister_dataset

MODEL, SPLIT, N, EPS = "tiny_cls", "synth:test", 16, 2 / 255
ATTACKS = ["fgsm", "fgsm@torchattacks"]


def _run(out: Path):
    return run([MODEL], [SPLIT], ATTACKS, out, eps=[EPS], n_images=N)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_cards):
    """The small matrix (a clean cell, an engine attack cell, a torchattacks cell) run once: ``(out, table)``."""
    out = tmp_path_factory.mktemp("provenance_run")
    summary = _run(out)
    assert summary.ok == 3 and not summary.failed and summary.stale == 0
    return out, ResultStore(out).table()


@pytest.fixture
def store_copy(first_run, tmp_path) -> Path:
    out, _ = first_run
    shutil.copytree(out, tmp_path / "out")
    return tmp_path / "out"


def _cell_of(table: pd.DataFrame, attack: str) -> str:
    return table.loc[table["attack"] == attack, "cell_id"].iloc[0]


# --- the guard -----------------------------------------------------------------------------------
def test_component_versions_are_recorded_with_their_current_source():
    problems = provenance.check()
    assert problems == [], "\n".join(problems)


def test_source_digest_ignores_docstrings_and_comments_but_not_code():
    code = 'def f(x):\n    """Doubles."""\n    return 2 * x  # twice\n'
    same = 'def f(x):\n    # another comment\n    """Another docstring."""\n\n    return 2 * x\n'
    other = 'def f(x):\n    return 3 * x\n'
    assert provenance.source_digest(code) == provenance.source_digest(same)
    assert provenance.source_digest(code) != provenance.source_digest(other)
    two = code + "\nLIMIT = 4\n\ndef g():\n    return LIMIT\n"
    assert provenance.source_digest(two, ["f"]) == provenance.source_digest(code, ["f"])
    assert provenance.source_digest(two, ["f", "LIMIT"]) != provenance.source_digest(two.replace("4", "5"), ["f", "LIMIT"])
    with pytest.raises(ValueError, match="defines no h at top level"):
        provenance.source_digest(two, ["f", "h"])


def test_a_changed_source_fails_the_check_with_the_fix(monkeypatch):
    version = provenance.VERSIONS["engine"]
    monkeypatch.setitem(provenance.RECORDED, "engine", (version, "0" * 16))
    (message,) = provenance.check()
    assert message.startswith("the code of engine (attacks/engine.py") and f"since version {version} was recorded" in message
    assert "if the change can move a number, bump its version" in message
    assert "python -m robustbench_wbc.bench.provenance --update" in message
    monkeypatch.setitem(provenance.VERSIONS, "engine", version + 1)  # bumped, but the hash not recorded yet
    (message,) = provenance.check()
    assert f"engine is at version {version + 1}, but the source hash recorded is version {version}'s" in message


def test_update_rewrites_only_the_recorded_table(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "RECORDED", dict(provenance.RECORDED))
    monkeypatch.setitem(provenance.VERSIONS, "art", provenance.VERSIONS["art"] + 1)
    copy = tmp_path / "provenance.py"
    original = Path(provenance.__file__).read_text(encoding="utf-8")
    copy.write_text(original, encoding="utf-8")
    table = provenance.update(copy)
    assert table["art"] == (provenance.VERSIONS["art"], provenance.component_digest("art"))
    assert provenance.check() == []  # the module's table is the one written
    new = copy.read_text(encoding="utf-8")
    changed = [(a, b) for a, b in zip(original.splitlines(), new.splitlines()) if a != b]
    assert len(original.splitlines()) == len(new.splitlines())
    assert [b.split(":")[0].strip() for _, b in changed] == ['"art"']  # one line: the art entry


# --- what each row records -------------------------------------------------------------------------
def test_each_row_records_its_provenance(first_run, tiny_cards):
    _, table = first_run
    by_attack = table.drop_duplicates("cell_id").set_index("attack")
    v = provenance.VERSIONS
    assert (by_attack["code_scoring"] == v["scoring"]).all()
    assert by_attack.loc["none", "code_engine"] == 0 and by_attack.loc["fgsm", "code_engine"] == v["engine"]
    assert by_attack.loc["fgsm@torchattacks", "code_engine"] == v["engine"]
    assert by_attack["code_backend"].to_dict() == {"none": 0, "fgsm": 0, "fgsm@torchattacks": v["torchattacks"]}
    assert (by_attack["code_plugin"] == "").all()
    size = tiny_cards[MODEL].image_size
    assert (by_attack["data_digest"] == splits_mod.SPLITS.get(SPLIT).synth.key(size)).all()
    assert by_attack["precision"].to_dict() == {"none": "none", "fgsm": "fp32", "fgsm@torchattacks": "fp32"}
    assert (by_attack["batching"] == f"pass={runner.BATCH_SIZE}").all()
    for attack, row in by_attack.iterrows():
        cell = next(c for c in runner.plan([MODEL], [SPLIT], ATTACKS, [EPS], N, 0, tiny_cards) if c.id == row["cell_id"])
        assert row["fingerprint"] == runner.cell_provenance(cell, size).fingerprint, attack
    assert table.groupby("cell_id")["fingerprint"].nunique().eq(1).all()


def test_the_fingerprint_takes_only_the_libraries_a_cell_uses(tiny_cards):
    cells = {c.attack: c for c in runner.plan([MODEL], [SPLIT], ["fgsm", "fgsm@torchattacks", "apgd-ce", "pgd@art"],
                                              [EPS], N, 0, tiny_cards)}
    versions = provenance.library_versions()
    libs = {a: dict(runner.cell_provenance(c, 32, versions).libraries) for a, c in cells.items()}
    assert set(libs["none"]) == set(libs["fgsm"]) == {"torch", "timm"}
    assert set(libs["fgsm@torchattacks"]) == {"torch", "timm", "torchattacks"}
    assert set(libs["pgd@art"]) == {"torch", "timm", "art"} and set(libs["apgd-ce"]) == {"torch", "timm", "pyautoattack"}
    other = {**versions, "art": "0.0.1"}
    changed = {a for a, c in cells.items()
               if runner.cell_provenance(c, 32, other).fingerprint != runner.cell_provenance(c, 32, versions).fingerprint}
    assert changed == {"pgd@art"}
    assert runner.cell_provenance(cells["apgd-ce"], 32).batching == (
        f"pass={runner.BATCH_SIZE};aa_batch=250;aa_seeding=once-per-split")


# --- reuse only when the fingerprint matches -------------------------------------------------------
def test_an_unchanged_rerun_recomputes_nothing(first_run, store_copy):
    _, table = first_run
    again = _run(store_copy)
    assert (again.planned, again.skipped, again.ok, again.stale, again.stale_reasons) == (3, 3, 0, 0, {})
    assert set(ResultStore(store_copy).table()["run_id"]) == set(table["run_id"])


def _bump(component: str):
    def change(mp):
        mp.setitem(provenance.VERSIONS, component, provenance.VERSIONS[component] + 1)
    return change


def _library(name: str, version: str):
    def change(mp):
        real = provenance.library_versions
        mp.setattr(provenance, "library_versions", lambda: {**real(), name: version})
    return change


def _generator(mp):
    mp.setattr(splits_mod, "GENERATOR_VERSION", "generator-of-another-day")


V = provenance.VERSIONS
CHANGES = {  # what changes → (the attacks of the cells recomputed, the reason given)
    "engine": (_bump("engine"), {"fgsm", "fgsm@torchattacks"}, f"engine {V['engine']}→{V['engine'] + 1}"),
    "wrapper": (_bump("torchattacks"), {"fgsm@torchattacks"},
                f"torchattacks wrapper {V['torchattacks']}→{V['torchattacks'] + 1}"),
    "scoring": (_bump("scoring"), {"none", "fgsm", "fgsm@torchattacks"}, f"scoring {V['scoring']}→{V['scoring'] + 1}"),
    "autoattack": (_bump("autoattack"), set(), None),  # no cell of the matrix uses it
    "torch": (_library("torch", "9.9.9"), {"none", "fgsm", "fgsm@torchattacks"}, "→9.9.9"),
    "torchattacks": (_library("torchattacks", "9.9.9"), {"fgsm@torchattacks"}, "→9.9.9"),
    "art": (_library("art", "9.9.9"), set(), None),
    "data": (_generator, {"none", "fgsm", "fgsm@torchattacks"}, f"data of {SPLIT} changed"),
}


@pytest.mark.parametrize("what", list(CHANGES))
def test_a_change_recomputes_exactly_the_cells_it_affects(first_run, store_copy, monkeypatch, what):
    _, table = first_run
    change, attacks, reason = CHANGES[what]
    change(monkeypatch)
    again = _run(store_copy)
    assert not again.failed
    assert (again.stale, again.ok, again.skipped) == (len(attacks), len(attacks), 3 - len(attacks))
    if reason is None:
        assert again.stale_reasons == {}
    else:
        ((got, count),) = again.stale_reasons.items()
        assert count == len(attacks) and (got == reason or (reason.startswith("→") and got.endswith(reason))), got
        if what in ("torch", "torchattacks"):
            assert got == f"{what} {table[f'v_{what}'].iloc[0]}{reason}"
    new = ResultStore(store_copy).table()
    recomputed = set(new.loc[~new["run_id"].isin(set(table["run_id"])), "attack"])
    assert recomputed == attacks
    assert new["cell_id"].nunique() == 3 and len(list((store_copy / "cells").glob("*.parquet"))) == 3  # replaced, same ids
    assert _run(store_copy).stale == 0  # and now they are current


def test_a_store_written_before_fingerprints_is_recomputed(first_run, store_copy):
    _, table = first_run
    for path in (store_copy / "cells").glob("*.parquet"):  # as an older version of the suite wrote them
        old = pq.read_table(path).to_pandas().drop(columns=provenance.COLUMNS)
        old.to_parquet(path, index=False)
    assert ResultStore(store_copy).stored(_cell_of(table, "fgsm")) == ("ok", None)
    again = _run(store_copy)
    assert (again.stale, again.ok, again.stale_reasons) == (3, 3, {provenance.NO_FINGERPRINT: 3})
    new = ResultStore(store_copy).table()
    assert (new["fingerprint"] != "").all()
    value = ["cell_id", "metric", "value"]  # the same code gives the same numbers
    pd.testing.assert_frame_equal(new[value].sort_values(value).reset_index(drop=True),
                                  table[value].sort_values(value).reset_index(drop=True))


def test_a_failure_replaces_a_stale_ok_cell_but_never_a_current_one(tmp_path):
    store = ResultStore(tmp_path)

    def rows(status: str, fingerprint: str | None) -> pd.DataFrame:
        df = pd.DataFrame({"cell_id": ["c"], "metric": ["accuracy"], "value": [0.5], "status": [status]})
        return df if fingerprint is None else df.assign(fingerprint=fingerprint)

    store.put("c", rows("ok", "aaaa"))
    assert not store.put("c", rows("failed", "aaaa")) and store.stored("c") == ("ok", "aaaa")
    assert not store.put("c", rows("failed", None)) and store.is_done("c", "aaaa")
    assert store.put("c", rows("failed", "bbbb"))  # the ok cell was computed by other code
    assert store.stored("c") == ("failed", "bbbb") and not store.is_done("c")


# --- for the report: stale and mixed rows ----------------------------------------------------------
def test_stale_rows_compare_the_code_and_library_versions(first_run, monkeypatch):
    _, table = first_run
    assert not provenance.stale_rows(table).any()
    t = table.copy()
    t.loc[t["attack"] == "fgsm@torchattacks", "v_torchattacks"] = "0.0.1"
    t.loc[t["attack"] == "none", "v_art"] = "0.0.1"  # a library the clean cell does not use
    t.loc[t["attack"] == "fgsm", "data_digest"] = "other data"  # not compared: needs the data
    assert set(t.loc[provenance.stale_rows(t), "attack"]) == {"fgsm@torchattacks"}
    monkeypatch.setitem(provenance.VERSIONS, "engine", provenance.VERSIONS["engine"] + 1)
    assert set(table.loc[provenance.stale_rows(table), "attack"]) == {"fgsm", "fgsm@torchattacks"}
    older = table.drop(columns=provenance.COLUMNS)
    assert provenance.stale_rows(older).all()


def test_mixed_versions_names_the_component_and_its_values(first_run):
    _, table = first_run
    assert provenance.mixed_versions(table).empty
    t = table.copy()
    t.loc[t["attack"] == "fgsm", "code_engine"] = 7
    t.loc[t["attack"] == "none", "v_torch"] = "0.0.1"
    failed = table[table["attack"] == "none"].assign(status="failed", v_timm="0.0.1")  # only ok rows count
    mixed = provenance.mixed_versions(pd.concat([t, failed]))
    assert list(mixed.columns) == ["model", "model_seed", "reason"] and len(mixed) == 1
    assert mixed.iloc[0]["model"] == MODEL
    torch_version = table["v_torch"].iloc[0]
    assert mixed.iloc[0]["reason"] == f"engine: {provenance.VERSIONS['engine']}, 7; torch: 0.0.1, {torch_version}"
    two = pd.concat([table, table.assign(model_seed=1, code_scoring=0)])  # seed 1 from an older store
    mixed = provenance.mixed_versions(pd.concat([two, two[two["model_seed"] == 0].assign(model_seed=1)]))
    assert mixed["model_seed"].tolist() == [1]
    assert mixed.iloc[0]["reason"] == f"scoring: {provenance.VERSIONS['scoring']}, not recorded"


# --- the data's digest ---------------------------------------------------------------------------
def test_a_real_split_is_digested_from_its_listing_once_per_process(tmp_path, monkeypatch):
    root = make_mini_dataset(tmp_path / "mini")
    try:
        (split_id,) = register_dataset("provmini", root)
        stats = []
        real_size = provenance._file_size
        monkeypatch.setattr(provenance, "_file_size", lambda p: stats.append(p) or real_size(p))
        first = provenance.data_digest(split_id, 32)
        assert len(stats) == 10  # one stat per file, nothing decoded
        assert provenance.data_digest(split_id, 32) == first and len(stats) == 10  # cached
        assert provenance.data_digest(split_id, 64) != first  # the images are resized to the model's size
        moved = tmp_path / "elsewhere"
        shutil.copytree(root, moved)
        register_dataset("provmini", moved)
        assert provenance.data_digest(split_id, 32) == first  # paths are relative to the dataset
        img = next((moved / "basophil").glob("*.png"))
        img.write_bytes(img.read_bytes() + b"\0")  # a file that changed size
        register_dataset("provmini", moved)
        assert provenance.data_digest(split_id, 32) != first
    finally:
        unregister_dataset("provmini")


# --- eps 0 runs the attack -----------------------------------------------------------------------
def test_eps_0_runs_the_real_attack_path_and_leaves_the_clean_accuracy(tmp_path, tiny_cards):
    summary = run([MODEL], [SPLIT], ["fgsm", "pgd", "pgd-l2"], tmp_path, eps=[0.0], n_images=N)
    assert summary.ok == 4 and not summary.failed
    t = ResultStore(tmp_path).table()
    attacked = t[t["attack"] != "none"]
    assert (attacked.groupby("attack")["backward_passes"].first() > 0).all()
    clean = t.loc[(t["attack"] == "none") & (t["metric"] == "accuracy"), "value"].item()
    robust = attacked.loc[attacked["metric"] == "robust_accuracy"].set_index("attack")["value"]
    assert robust.to_dict() == dict.fromkeys(["fgsm", "pgd", "pgd-l2"], clean)
    assert (attacked.loc[attacked["metric"].str.startswith("mean_perturbation"), "value"] == 0).all()


def test_cw_at_eps_0_returns_the_images(load_tiny):
    from robustbench_wbc.attacks import ATTACKS, build_attack

    model = load_tiny(MODEL)
    x = splits_mod.SPLITS.get(SPLIT).load(4, 32).images
    with torch.no_grad():
        y = model(x)["logits"].argmax(1)
    attack = build_attack(ATTACKS.get("cw-l2").spec(0.0, "cls", binary_search_steps=2, steps=5), model)
    assert torch.equal(attack(x, y, None), x) and attack.passes[1] > 0


def test_the_libraries_at_eps_0(tmp_path, tiny_cards):
    """torchattacks' FGSM and PGD-L∞ run at eps 0; its PGD-L2 divides by the perturbation's norm (0/0) and returns
    NaN, which the threat-model check refuses; ART refuses eps_step 0: each cell says so."""
    attacks = ["fgsm@torchattacks", "pgd@torchattacks", "pgd-l2@torchattacks", "pgd@art"]
    run([MODEL], [SPLIT], attacks, tmp_path, eps=[0.0], n_images=N)
    cells = ResultStore(tmp_path).table().drop_duplicates("cell_id").set_index("attack")
    assert cells["status"].to_dict() == {"none": "ok", "fgsm@torchattacks": "ok", "pgd@torchattacks": "ok",
                                         "pgd-l2@torchattacks": "invalid", "pgd@art": "failed"}
    assert "non-finite" in cells.loc["pgd-l2@torchattacks", "reason"]
    assert "eps_step" in cells.loc["pgd@art", "reason"]


class Noisy(nn.Module):
    """A randomized model: fresh noise on its logits at every call, large enough to flip its predictions."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * 32 * 32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc(x.flatten(1))
        return logits + 20 * torch.randn_like(logits)


def test_a_randomized_model_at_eps_0_is_diagnosed(tmp_path):
    from robustbench_wbc.bench.custom import benchmark
    from robustbench_wbc.report.reliability import diagnose

    table = benchmark(Noisy(), name="noisy", splits=[SPLIT], attacks=["pgd"], eps=[0.0], n_images=64, image_size=32,
                      out=tmp_path)
    assert set(table["status"]) == {"ok"}
    assert table.loc[table["attack"] == "pgd", "backward_passes"].iloc[0] > 0
    checks = diagnose(table)
    assert "eps0_not_clean" in set(checks["check"]), checks
    row = checks[checks["check"] == "eps0_not_clean"].iloc[0]
    assert row["attack"] == "pgd" and row["eps"] == 0


def test_a_plugin_cell_is_recomputed_when_its_source_changes(tiny_cards, restore_attacks):
    from robustbench_wbc.attacks import ATTACKS, register_attack

    @register_attack("prov-noise", norm="linf")
    def prov_noise(model, eps):
        return lambda images, labels: (images + eps * torch.ones_like(images)).clamp(0, 1)

    cell = next(c for c in runner.plan([MODEL], [SPLIT], ["prov-noise"], [EPS], N, 0, tiny_cards) if not c.is_clean)
    before = runner.cell_provenance(cell, 32)
    assert before.code_plugin and before.code_backend == 0 and before.code_engine == provenance.VERSIONS["engine"]
    ATTACKS.remove("prov-noise")

    @register_attack("prov-noise", norm="linf")
    def prov_noise_edited(model, eps):  # the plugin edited: other numbers
        return lambda images, labels: (images - eps * torch.ones_like(images)).clamp(0, 1)

    after = runner.cell_provenance(cell, 32)
    assert after.code_plugin != before.code_plugin and after.fingerprint != before.fingerprint
    stored = {**before.columns(), **{f"v_{k}": v for k, v in before.libraries}}
    assert provenance.stale_reasons(cell, after, stored) == ["plugin prov-noise source changed"]


def test_cells_keep_their_coordinate_ids():
    cell = Cell(MODEL, SPLIT, "pgd", EPS, "cls", 0, N, "a" * 64, "linf", "wbc", {"steps": 10})
    assert cell.id == "a4ce7e8f7332d4ac021a"  # the id of these coordinates before fingerprints were recorded
