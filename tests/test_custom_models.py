"""Models from outside the zoo: ``benchmark`` on any module, and model plugins loaded from a file."""

from __future__ import annotations

import textwrap

import pytest
import torch
from conftest import per_image_rows
from torch import nn

import robustbench_wbc as rw
from robustbench_wbc.bench import ResultStore
from robustbench_wbc.bench.custom import HeadDict, custom_card, infer_family, state_dict_sha256
from robustbench_wbc.data import CLASSES
from robustbench_wbc.models import MODELS, WBCNet, list_models
from robustbench_wbc.plugins import load_model_plugin
from robustbench_wbc.registry import PluginError

SIZE, N, EPS = 32, 8, [2 / 255]
SMALL = dict(splits=["synth:test"], attacks=["fgsm"], eps=EPS, n_images=N, image_size=SIZE)


class TinyCNN(nn.Module):
    """A plain classifier: images in, a logits tensor out."""

    def __init__(self, num_classes: int = len(CLASSES)) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Returns(nn.Module):
    """A model returning whatever ``fn(x)`` gives: for the error messages."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.fn(x)


def tiny_multitask() -> WBCNet:
    torch.manual_seed(0)
    return WBCNet("multitask", "resnet10t", decoder_channels=(32, 16, 8, 8),
                  encoder_kwargs={"channels": (8, 16, 32, 64), "stem_width": 8})


def _metrics(table, attack: str) -> set[str]:
    return set(table.loc[table["attack"] == attack, "metric"])


# --- benchmark ---------------------------------------------------------------------------------
def test_benchmark_plain_tensor_classifier():
    model = TinyCNN().train()
    model.features[1].eval()  # a mixed mode, restored as it was
    table = rw.benchmark(model, name="tiny_cnn", **SMALL)
    assert set(table["status"]) == {"ok"}
    assert set(table["model"]) == {"tiny_cnn"}
    assert set(table["family"]) == {"classifier"} and set(table["encoder"]) == {"custom"}
    assert set(table["attack"]) == {"none", "fgsm"} and set(table["split"]) == {"synth:test"}
    assert "accuracy" in _metrics(table, "none")
    assert {"robust_accuracy", "attack_success_rate", "mean_perturbation_linf"} <= _metrics(table, "fgsm")
    adv = table[(table["attack"] == "fgsm") & (table["metric"] == "mean_perturbation_linf")]
    assert (adv["value"] <= EPS[0] + 1e-5).all()  # the threat model holds
    assert set(per_image_rows(table)["n"]) == {N}
    assert set(table["model_sha256"]) == {state_dict_sha256(model)}
    assert model.training and not model.features[1].training and model.head.training


def test_benchmark_multitask_dict_model_gives_dice(tmp_path):
    model = tiny_multitask().eval()
    table = rw.benchmark(model, name="my_multitask", out=tmp_path, **SMALL)
    assert set(table["status"]) == {"ok"} and set(table["family"]) == {"multitask"}
    assert {"accuracy", "nucleus_dice", "cytoplasm_dice"} <= _metrics(table, "none")
    assert set(table.loc[table["attack"] == "fgsm", "target"]) == {"cls", "seg", "joint"}
    assert {"robust_accuracy", "nucleus_dice"} <= _metrics(table, "fgsm")
    assert not model.training
    # written through the result store, exported as run() does; a second call reuses the cells
    assert (tmp_path / "results.csv").exists()
    assert len(ResultStore(tmp_path).table()) == len(table)
    again = rw.benchmark(model, name="my_multitask", out=tmp_path, **SMALL)
    assert set(again["run_id"]) == set(table["run_id"])
    assert sorted(again["cell_id"]) == sorted(table["cell_id"])


def test_wrong_class_count_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match=r"'logits' has 3 classes, expected 5 .*CLASSES.*shape \(2, 3\)"):
        rw.benchmark(TinyCNN(num_classes=3), **SMALL)


@pytest.mark.parametrize(("fn", "error", "match"), [
    (lambda x: (x.mean((2, 3)),), TypeError, r"returned a tuple; expected a logits tensor"),
    (lambda x: {"features": x}, ValueError, r"returned a dict \{'features'.*neither 'logits' nor 'mask'"),
    (lambda x: {"mask": x[:, :2]}, ValueError, r"'mask' must have shape \(2, 3, 32, 32\)"),
    (lambda x: {"logits": x.mean((1, 2, 3))}, ValueError, r"'logits' must have shape \(N, 5\)"),
    (lambda x: x.mean((2, 3)).long(), TypeError, r"must be a float tensor"),
    (lambda x: torch.full((len(x), 5), float("nan")), ValueError, r"non-finite"),
    (lambda x: 1 / 0, TypeError, r"failed on a probe batch.*ZeroDivisionError"),
])
def test_wrong_outputs_say_what_came_back_and_what_is_expected(fn, error, match):
    with pytest.raises(error, match=match):
        infer_family(Returns(fn), SIZE)


def test_family_is_inferred_from_the_outputs():
    def mask(x):
        return torch.zeros(len(x), 3, *x.shape[-2:])

    def logits(x):
        return torch.zeros(len(x), 5)

    assert infer_family(Returns(logits), SIZE) == "classifier"
    assert infer_family(Returns(lambda x: {"logits": logits(x), "features": x}), SIZE) == "classifier"
    assert infer_family(Returns(lambda x: {"mask": mask(x)}), SIZE) == "unet"
    assert infer_family(Returns(lambda x: {"logits": logits(x), "mask": mask(x)}), SIZE) == "multitask"


def test_head_dict_wraps_a_tensor_and_keeps_the_mode():
    model = TinyCNN().eval()
    wrapped = HeadDict(model)
    assert not wrapped.training
    out = wrapped(torch.rand(2, 3, SIZE, SIZE))
    assert set(out) == {"logits"} and out["logits"].shape == (2, 5)
    wrapped.train()
    assert model.training


def test_custom_card_and_weights_digest():
    model = TinyCNN()
    card = custom_card(model, "tiny_cnn", "classifier", SIZE)
    assert (card.id, card.family, card.encoder, card.recipe, card.seed) == ("tiny_cnn", "classifier", "custom", "custom", 0)
    assert card.classes == tuple(CLASSES) and card.normalization == {} and card.data == {"split": "external"}
    assert card.labelled_images == card.masked_images == 0
    assert card.params == sum(p.numel() for p in model.parameters())
    assert card.weights_sha256 == state_dict_sha256(TinyCNN())  # same weights, same digest
    assert set(card.versions) == {"robustbench_wbc", "torch", "timm", "torchattacks"}
    with torch.no_grad():
        model.head.bias.add_(1e-3)
    assert state_dict_sha256(model) != card.weights_sha256


def test_benchmark_refuses_bad_arguments():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        rw.benchmark(lambda x: x, **SMALL)
    with pytest.raises(ValueError, match="@SEED"):
        rw.benchmark(TinyCNN(), name="mine@3", **SMALL)
    with pytest.raises(KeyError, match="Unknown split"):
        rw.benchmark(TinyCNN(), **{**SMALL, "splits": ["synth:nope"]})


# --- model plugins from a file -----------------------------------------------------------------
PLUGIN = '''
from robustbench_wbc.models import WBCNet, register_model


@register_model(family="classifier", encoder="resnet10t-w8", recipe="tiny-full")
def {name}() -> WBCNet:
    """A model from a plugin file."""
    return WBCNet("classifier", "resnet10t", encoder_kwargs={{"channels": (8, 16, 32, 64), "stem_width": 8}})
'''


def _write(tmp_path, text: str, name: str = "my_models.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_plugin_file_registers_its_models(tmp_path, restore_models):
    path = _write(tmp_path, PLUGIN.format(name="plugin_cls"))
    assert load_model_plugin(path) == ["plugin_cls"]
    assert "plugin_cls" in MODELS and "plugin_cls" in list_models()
    assert "plugin_cls" in rw.list_models()
    entry = MODELS.get("plugin_cls")
    assert (entry.family, entry.recipe, entry.description) == ("classifier", "tiny-full", "A model from a plugin file.")
    assert entry.builder().eval()(torch.rand(1, 3, SIZE, SIZE))["logits"].shape == (1, 5)
    # loading it again neither crashes nor registers anything twice
    assert load_model_plugin(str(path)) == ["plugin_cls"]
    assert list_models("plugin_*") == ["plugin_cls"]


def test_changed_plugin_file_replaces_its_models(tmp_path, restore_models):
    path = _write(tmp_path, PLUGIN.format(name="plugin_old"))
    assert load_model_plugin(path) == ["plugin_old"]
    _write(tmp_path, PLUGIN.format(name="plugin_new"))
    assert load_model_plugin(path) == ["plugin_new"]
    assert "plugin_old" not in MODELS and "plugin_new" in MODELS


def test_plugin_that_raises_names_the_file_and_the_error(tmp_path, restore_models):
    path = _write(tmp_path, PLUGIN.format(name="plugin_half") + "\nraise RuntimeError('boom')\n", "broken.py")
    with pytest.raises(PluginError, match=r"broken\.py failed to import: RuntimeError: boom") as info:
        load_model_plugin(path)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "plugin_half" not in MODELS  # what it registered before failing is undone


def test_plugin_registering_an_existing_id_fails(tmp_path, restore_models):
    path = _write(tmp_path, PLUGIN.format(name="tiny_cls"))
    with pytest.raises(PluginError, match="already registered"):
        load_model_plugin(path)
    assert MODELS.get("tiny_cls").builder.__module__ == "robustbench_wbc.models.zoo"


@pytest.mark.parametrize(("make", "match"), [
    (lambda d: d / "missing.py", "does not exist"),
    (lambda d: _write(d, "x = 1\n", "models.txt"), r"not a Python \(\.py\) file"),
    (lambda d: d, r"not a Python \(\.py\) file"),
    (lambda d: _write(d, "x = 1\n", "empty.py"), "registered no model"),
])
def test_plugin_file_errors(tmp_path, restore_models, make, match):
    with pytest.raises(PluginError, match=match):
        load_model_plugin(make(tmp_path))
