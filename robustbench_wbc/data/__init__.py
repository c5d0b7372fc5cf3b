"""Data: SynthWBC, the generated blood-smear cells, and the registry of named splits."""

from robustbench_wbc.data.splits import DEFAULT_EVAL_SPLITS, SPLITS, SplitData, SplitDef, register_synth_split
from robustbench_wbc.data.synth import CLASSES, LAB_B, SOURCE_LAB, Camera, Domain, Stain, generate, render_cell

__all__ = [
    "CLASSES", "DEFAULT_EVAL_SPLITS", "LAB_B", "SOURCE_LAB", "SPLITS", "Camera", "Domain",
    "SplitData", "SplitDef", "Stain", "generate", "register_synth_split", "render_cell",
]
