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
    Recipe,
    load_checkpoint,
    load_model,
    read_card,
)
from robustbench_wbc.models.hub import CARD, WEIGHTS, sha256_file
from robustbench_wbc.models.zoo import MASKED_SUBSET, list_models
from robustbench_wbc.models.zoo_cards import ZooCard, flops_per_image, norm_layers, zoo_card
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
    """The classifier, U-Net and multitask network of one size differ only in their heads; every
    zoo encoder exists in every family (the tiny ConvNeXt and ViT twins only test the code path)."""
    if not all(MODELS.get(m).tiny for m in model_ids) or encoder == "resnet10t-w8":
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
    path = REPO / "models" / f"{model_id}.yaml"
    assert path.is_file(), f"{path} is missing: run `wbc-robust models cards --out models`"
    committed = ZooCard.read(path)
    derived = zoo_card(model_id)
    assert committed.static() == derived.static()
    assert derived.params > 0 and derived.flops_per_image > derived.params  # at least a multiply-add per weight
    if committed.trained is not None:  # measured where the cards were written: on the data the registry names
        assert committed.trained["trained_on_this_data"] is True


def test_no_stale_zoo_yaml_cards():
    """Both ways: every card names a registered model, and every non-tiny model has a card."""
    cards = sorted(p.stem for p in (REPO / "models").glob("*.yaml"))
    assert cards == sorted(ZOO_MODELS)
    for cid in cards:
        assert not MODELS.get(cid).tiny


def test_zoo_card_takes_what_training_measured(tiny_cards):
    card = zoo_card("tiny_multitask", tiny_cards["tiny_multitask"])
    assert card.trained["weights_sha256"] == tiny_cards["tiny_multitask"].weights_sha256
    assert card.trained["trained_on_this_data"] is True
    assert card.trained["val_metrics"] == tiny_cards["tiny_multitask"].val_metrics
    assert card.norm_layers == ["batchnorm"] and card.input_size == 32
    assert zoo_card("tiny_multitask").trained is None


def test_zoo_card_validation(tmp_path):
    good = zoo_card("tiny_cls")
    path = tmp_path / "c.yaml"
    path.write_text(good.to_yaml())
    assert ZooCard.read(path) == good
    bad = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**bad, "params": -1}))
    with pytest.raises(CardError, match="params must be a non-negative integer"):
        ZooCard.read(path)
    path.write_text(yaml.safe_dump({**bad, "colour": "red"}))
    with pytest.raises(CardError, match="unknown fields"):
        ZooCard.read(path)
    path.write_text(yaml.safe_dump({**bad, "trained": {"weights_sha256": "abc"}}))
    with pytest.raises(CardError, match="sha256"):
        ZooCard.read(path)
    path.write_text("[1, 2")
    with pytest.raises(CardError, match="cannot read zoo card"):
        ZooCard.read(path)


def test_flops_count_a_known_layer():
    """A 3→4 channel 3×3 conv on 8×8 without padding: 6×6×4 outputs × 27 multiply-adds × 2."""
    conv = torch.nn.Conv2d(3, 4, 3, bias=False)
    assert flops_per_image(conv, 8) == 6 * 6 * 4 * 27 * 2


def test_norm_layers_of_each_encoder():
    assert norm_layers(MODELS.get("resnet10t_gn_cls").builder()) == ["groupnorm"]
    assert norm_layers(MODELS.get("convnext_multitask").builder()) == ["groupnorm", "layernorm"]
    assert norm_layers(MODELS.get("vit_cls").builder()) == ["layernorm"]


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


# --- adversarial training and the λ sweep ---------------------------------------------------------
def test_fgsm_rs_stays_in_the_ball_and_raises_the_loss():
    from robustbench_wbc.models.train import fgsm_rs

    torch.manual_seed(0)
    model = MODELS.get("tiny_cls").builder().eval()
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 5, (8,))
    eps = 4 / 255

    def loss_fn(out):
        return torch.nn.functional.cross_entropy(out["logits"], y)

    adv = fgsm_rs(model, x, loss_fn, eps, torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    noise = (x + (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1) * eps).clamp(0, 1)
    with torch.no_grad():
        assert loss_fn(model(adv)) > loss_fn(model(noise))


def test_adversarially_trained_model_selects_on_robust_accuracy(tiny_cards):
    card = tiny_cards["tiny_multitask_at"]
    assert "robust_accuracy" in card.val_metrics and "nucleus_dice" in card.val_metrics
    assert "robust_accuracy" not in tiny_cards["tiny_multitask"].val_metrics
    assert card.recipe == "tiny-masked-small-at"


def test_recipe_rejects_unknown_adversarial_training():
    with pytest.raises(ValueError, match="unknown adv_train 'trades'"):
        Recipe("x", 10, use_labels=True, use_masks=False, steps=1, adv_train="trades", adv_eps=0.1)
    with pytest.raises(ValueError, match="adv_eps must be > 0"):
        Recipe("x", 10, use_labels=True, use_masks=False, steps=1, adv_train="fgsm-rs")


def test_adversarial_zoo_pairs_each_family_with_its_control():
    at = {m: MODELS.get(m) for m in list_models("*_at")}
    assert {e.family for e in at.values()} == {"classifier", "multitask"}
    assert {e.recipe_spec.adv_train for e in at.values()} == {"fgsm-rs"}
    assert {e.recipe_spec.adv_eps for e in at.values()} == {2 / 255}
    small = {e.recipe_spec.train_images for e in at.values() if e.family == "classifier"}
    assert small == {RECIPES["full"].train_images, RECIPES["masked-small"].train_images}


def test_seg_weight_sweep_is_the_ablation_track():
    sweep = list_models(track="ablation")
    assert len(sweep) == 4
    weights = sorted(MODELS.get(m).recipe_spec.seg_weight for m in sweep)
    assert weights == [0.1, 0.3, 3.0, 10.0]
    for m in sweep:  # the same model and data as the reference, λ aside
        r, ref = MODELS.get(m).recipe_spec, MODELS.get("resnet10t_multitask").recipe_spec
        assert {**r.__dict__, "name": "", "seg_weight": 1.0} == {**ref.__dict__, "name": ""}
        assert _encoder_signature(MODELS.get(m).builder()) == _encoder_signature(MODELS.get("resnet10t_multitask").builder())


# --- training profiles ------------------------------------------------------------------------------
def test_paper_profile_scales_every_recipe_alike(monkeypatch):
    from robustbench_wbc.models.zoo import PROFILES, recipe_for

    paper = PROFILES["paper"]
    full, small = recipe_for("full", "classifier", paper), recipe_for("masked-small", "multitask", paper)
    assert (full.name, full.train_images, full.image_size, full.steps) == ("full+paper", 14500, 128, 1600)
    assert full.train_images / small.train_images == 14.5 and small.steps == full.steps
    assert recipe_for("tiny-full", "classifier", paper) == recipe_for("tiny-full", "classifier", PROFILES["default"])
    default_dir = paths.checkpoint_dir("resnet10t_cls")
    monkeypatch.setenv("WBC_ROBUST_PROFILE", "paper")
    assert MODELS.get("resnet10t_cls").recipe_spec == full
    assert paths.checkpoint_dir("resnet10t_cls") == default_dir.parent / "paper" / "resnet10t_cls"
    monkeypatch.setenv("WBC_ROBUST_PROFILE", "huge")
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        _ = MODELS.get("resnet10t_cls").recipe_spec
