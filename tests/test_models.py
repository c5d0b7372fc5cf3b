"""The model registry, the three families on one encoder, checkpoints and cards."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
import torch
import yaml

from robustbench_wbc import paths
from robustbench_wbc.data import CLASSES
from robustbench_wbc.models import (
    FAMILIES,
    HEADS,
    MODELS,
    RECIPES,
    CardError,
    CheckpointError,
    HeadView,
    ModelCard,
    load_checkpoint,
    load_model,
    read_card,
)
from robustbench_wbc.models.hub import CARD, WEIGHTS, sha256_file
from robustbench_wbc.models.zoo import MASKED_SUBSET, list_models
from robustbench_wbc.registry import UnknownNameError

REPO = Path(__file__).resolve().parents[1]
ALL_MODELS = list_models(include_tiny=True)
ZOO_MODELS = list_models()
TINY = [m for m in ALL_MODELS if MODELS.get(m).tiny]


def test_registry_has_every_family_in_zoo_and_tiny():
    assert ZOO_MODELS and TINY
    assert not set(ZOO_MODELS) & set(TINY)
    assert set(ALL_MODELS) == set(ZOO_MODELS) | set(TINY)
    assert {MODELS.get(m).family for m in ZOO_MODELS} == set(FAMILIES)
    assert {MODELS.get(m).family for m in TINY} == set(FAMILIES)
    assert {"tiny_cls", "tiny_unet", "tiny_multitask"} <= set(TINY)


# --- architecture ------------------------------------------------------------------------------
@pytest.mark.parametrize("model_id", ALL_MODELS)
def test_untrained_forward_heads_and_shapes(model_id):
    entry = MODELS.get(model_id)
    assert entry.id == model_id and entry.family in FAMILIES and entry.description
    size = entry.recipe_spec.image_size
    assert size == (32 if entry.tiny else 64)
    torch.manual_seed(0)
    model = entry.builder().eval()
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, dict)
    assert tuple(out) == HEADS[entry.family]
    if "logits" in out:
        assert out["logits"].shape == (2, len(CLASSES))
    if "mask" in out:
        assert out["mask"].shape == (2, 3, size, size)
    assert all(torch.isfinite(v).all() for v in out.values())


def _encoder_signature(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items() if k.startswith("encoder.")]


def _by_encoder() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for m in ALL_MODELS:
        groups[MODELS.get(m).encoder].append(m)
    return dict(groups)


@pytest.mark.parametrize(("encoder", "model_ids"), sorted(_by_encoder().items()))
def test_families_share_the_encoder(encoder, model_ids):
    """The classifier, U-Net and multitask network of one size differ only in their heads."""
    assert {MODELS.get(m).family for m in model_ids} == set(FAMILIES)
    sigs = {m: _encoder_signature(MODELS.get(m).builder()) for m in model_ids}
    first = next(iter(sigs.values()))
    assert first
    for m, sig in sigs.items():
        assert sig == first, f"{m} has another encoder than {model_ids[0]}"


def test_head_view_takes_the_model_mode():
    model = MODELS.get("tiny_multitask").builder().eval()
    view = HeadView(model, "mask")
    assert not view.training
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(view(x), model(x)["mask"])
    assert HeadView(model.train(), "logits").training


def test_unknown_model_suggests():
    with pytest.raises(UnknownNameError, match="Did you mean: tiny_cls") as info:
        load_model("tiny_clz")
    assert "models list" in str(info.value)


# --- recipes -----------------------------------------------------------------------------------
def test_masked_subset_ratio():
    assert RECIPES["full"].train_images / RECIPES["masked-small"].train_images == 14.5
    assert MASKED_SUBSET == RECIPES["masked-small"].train_images


@pytest.mark.parametrize("model_id", ALL_MODELS)
def test_recipe_matches_family(model_id):
    e = MODELS.get(model_id)
    r = e.recipe_spec
    assert r.use_labels == ("logits" in HEADS[e.family])
    assert r.use_masks == ("mask" in HEADS[e.family])
    assert e.recipe in RECIPES


def test_same_compute_budget_across_families():
    """A family that sees fewer images sees them more often (same steps × batch size)."""
    for size_models in (ZOO_MODELS, TINY):
        budgets = {(MODELS.get(m).recipe_spec.steps, MODELS.get(m).recipe_spec.batch_size) for m in size_models}
        assert len(budgets) == 1


# --- checkpoints and cards ---------------------------------------------------------------------
def _check_card_facts(card: ModelCard, model_id: str) -> None:
    e = MODELS.get(model_id)
    assert card.id == model_id and card.family == e.family and card.recipe == e.recipe
    assert card.classes == CLASSES and card.image_size == e.recipe_spec.image_size
    if e.family == "classifier":
        assert card.labelled_images > 0 and card.masked_images == 0
    elif e.family == "unet":
        assert card.labelled_images == 0 and card.masked_images > 0
    else:
        assert card.labelled_images > 0 and card.masked_images > 0


@pytest.mark.parametrize("model_id", TINY)
def test_tiny_cards_are_valid(tiny_cards, model_id):
    card = tiny_cards[model_id]
    assert card.validate() is card
    _check_card_facts(card, model_id)
    assert read_card(model_id) == card
    d = paths.checkpoint_dir(model_id)
    assert sha256_file(d / WEIGHTS) == card.weights_sha256
    assert card.params == sum(p.numel() for p in MODELS.get(model_id).builder().parameters())
    assert card.train_steps > 0
    assert card.data["split"] == "synth:train" and len(card.data["sha256"]) == 64
    expected_metrics = {"accuracy"} if card.family == "classifier" else {"nucleus_dice", "cytoplasm_dice"}
    assert expected_metrics <= set(card.val_metrics)
    assert all(0.0 <= v <= 1.0 for v in card.val_metrics.values())


def test_multitask_uses_the_smaller_masked_subset(tiny_cards):
    cls, mt, unet = tiny_cards["tiny_cls"], tiny_cards["tiny_multitask"], tiny_cards["tiny_unet"]
    assert mt.masked_images < cls.labelled_images
    assert mt.masked_images == mt.labelled_images == unet.masked_images


def test_load_model_trains_once(tmp_path, monkeypatch):
    monkeypatch.setenv("WBC_ROBUST_HOME", str(tmp_path))
    assert read_card("tiny_cls") is None
    with pytest.raises(CheckpointError, match="not trained yet"):
        load_model("tiny_cls", train=False)

    calls = []
    model, card = load_model("tiny_cls", progress=lambda step, total, m: calls.append(step))
    d = tmp_path / "checkpoints" / "tiny_cls"
    assert (d / WEIGHTS).is_file() and (d / CARD).is_file()
    assert sorted(p.name for p in d.parent.iterdir() if not p.name.startswith(".")) == ["tiny_cls"]
    assert not [p for p in d.parent.iterdir() if p.is_dir() and p.name.startswith(".")]  # no tmp dirs
    assert calls and calls[-1] <= RECIPES["tiny-full"].steps
    assert not model.training
    _check_card_facts(card, "tiny_cls")

    card_text, mtime = (d / CARD).read_text(), (d / WEIGHTS).stat().st_mtime_ns
    calls.clear()
    model2, card2 = load_model("tiny_cls", progress=lambda step, total, m: calls.append(step))
    assert calls == []  # not retrained
    assert card2 == card and (d / CARD).read_text() == card_text
    assert (d / WEIGHTS).stat().st_mtime_ns == mtime
    for (k, v), (k2, v2) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_training_is_deterministic(tmp_path, monkeypatch, tiny_cards):
    monkeypatch.setenv("WBC_ROBUST_HOME", str(tmp_path))
    _, first = load_model("tiny_cls", force=True)
    _, second = load_model("tiny_cls", force=True)
    assert first.weights_sha256 == second.weights_sha256
    assert first.weights_sha256 == tiny_cards["tiny_cls"].weights_sha256
    assert first.val_metrics == second.val_metrics


@pytest.fixture
def ckpt_copy(tmp_path, tiny_cards) -> Path:
    """A copy of the trained tiny_cls checkpoint that a test may damage."""
    dst = tmp_path / "tiny_cls"
    shutil.copytree(paths.checkpoint_dir("tiny_cls"), dst)
    return dst


def test_load_checkpoint_copy_loads(ckpt_copy, tiny_cards):
    model, card = load_checkpoint(ckpt_copy, MODELS.get("tiny_cls"))
    assert card == tiny_cards["tiny_cls"] and not model.training


def test_tampered_weights_raise(ckpt_copy):
    w = ckpt_copy / WEIGHTS
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(ckpt_copy, MODELS.get("tiny_cls"))


def test_missing_weights_raise(ckpt_copy):
    (ckpt_copy / WEIGHTS).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(ckpt_copy, MODELS.get("tiny_cls"))


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "", '{"id": "tiny_cls"}'])
def test_corrupt_card_raises(ckpt_copy, content):
    (ckpt_copy / CARD).write_text(content)
    with pytest.raises(CheckpointError, match="retrain"):
        load_checkpoint(ckpt_copy, MODELS.get("tiny_cls"))


def test_card_for_another_model_raises(ckpt_copy):
    with pytest.raises(CheckpointError, match="card is for 'tiny_cls'"):
        load_checkpoint(ckpt_copy, MODELS.get("tiny_unet"))


def test_corrupt_card_in_cache_raises_through_load_model(tmp_path, monkeypatch, wbc_home, tiny_cards):
    shutil.copytree(wbc_home / "checkpoints" / "tiny_cls", tmp_path / "checkpoints" / "tiny_cls")
    monkeypatch.setenv("WBC_ROBUST_HOME", str(tmp_path))
    (tmp_path / "checkpoints" / "tiny_cls" / CARD).write_text("{corrupt")
    with pytest.raises(CheckpointError, match="cannot read model card"):
        load_model("tiny_cls")
    with pytest.raises(CheckpointError, match="wbc-robust models train tiny_cls --force"):
        read_card("tiny_cls")


# --- card validation ---------------------------------------------------------------------------
def _card_dict(tiny_cards) -> dict:
    return json.loads(tiny_cards["tiny_multitask"].to_json())


def test_card_round_trip(tiny_cards):
    card = tiny_cards["tiny_multitask"]
    assert ModelCard.from_dict(json.loads(card.to_json())) == card


@pytest.mark.parametrize(("field", "value", "message"), [
    ("family", "transformer", "family"),
    ("labelled_images", -1, "labelled_images"),
    ("masked_images", 1.5, "masked_images"),
    ("seed", True, "seed"),
    ("params", "12", "params"),
    ("weights_sha256", "abc", "sha256"),
    ("val_metrics", {"accuracy": "high"}, "val metric"),
])
def test_invalid_card_values_raise(tiny_cards, field, value, message):
    d = _card_dict(tiny_cards)
    d[field] = value
    with pytest.raises(CardError, match=message):
        ModelCard.from_dict(d)


def test_card_unknown_or_missing_fields_raise(tiny_cards):
    d = _card_dict(tiny_cards)
    with pytest.raises(CardError, match="unknown fields"):
        ModelCard.from_dict({**d, "surprise": 1})
    del d["params"]
    with pytest.raises(CardError, match="params"):
        ModelCard.from_dict(d)


# --- the reviewed zoo cards in models/ ---------------------------------------------------------
@pytest.mark.parametrize("model_id", ZOO_MODELS)
def test_zoo_yaml_card_matches_registry(model_id):
    """models/<id>.yaml is generated from the registry (`wbc-robust models cards --out models`)."""
    from robustbench_wbc.cli.listing import zoo_card

    path = REPO / "models" / f"{model_id}.yaml"
    assert path.is_file(), f"{path} is missing: run `wbc-robust models cards --out models`"
    assert yaml.safe_load(path.read_text()) == zoo_card(model_id)


def test_no_stale_zoo_yaml_cards():
    cards = sorted(p.stem for p in (REPO / "models").glob("*.yaml"))
    assert cards == sorted(ZOO_MODELS)


def test_confounded_track_is_separate_from_the_clean_zoo():
    """The confounded track's models train on the confounded split and are not in the clean 'all'."""
    from robustbench_wbc.models.zoo import list_models as zoo_list

    confounded = zoo_list(track="confounded")
    clean = zoo_list(track="clean")
    assert confounded and clean and not set(confounded) & set(clean)
    for mid in confounded:
        assert MODELS.get(mid).recipe_spec.train_split == "synth:train-confounded"
    for mid in clean:
        assert MODELS.get(mid).recipe_spec.train_split == "synth:train"
    clean_all = MODELS.resolve("all", all_filter=lambda e: not e.tiny and e.track == "clean")
    assert sorted(clean_all) == sorted(clean)
