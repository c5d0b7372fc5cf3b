"""Models: the registry, the three families on one encoder, recipes, cards and checkpoints."""

from robustbench_wbc.models.card import CardError, ModelCard
from robustbench_wbc.models.hub import CheckpointError, load_checkpoint, load_model, read_card
from robustbench_wbc.models.networks import FAMILIES, HEADS, HeadView, WBCNet
from robustbench_wbc.models.zoo import MODELS, RECIPES, ModelEntry, Recipe, list_models, register_model

__all__ = [
    "FAMILIES", "HEADS", "MODELS", "RECIPES", "CardError", "CheckpointError", "HeadView",
    "ModelCard", "ModelEntry", "Recipe", "WBCNet", "list_models", "load_checkpoint", "load_model",
    "read_card", "register_model",
]
