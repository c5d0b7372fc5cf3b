"""Data: SynthWBC (generated cells), its splits and cache, corruptions, and real-dataset loaders."""

from robustbench_wbc.data.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from robustbench_wbc.data.real import DataError, get_report, parse_data_option, register_dataset, unregister_dataset
from robustbench_wbc.data.splits import (
    DEFAULT_EVAL_SPLITS,
    SPLITS,
    SplitData,
    SplitDef,
    SynthSpec,
    register_synth_split,
    render,
)
from robustbench_wbc.data.synth import CLASSES, DOMAINS, LAB_B, SOURCE_LAB, Camera, Domain, Stain, generate, render_cell

__all__ = [
    "CLASSES", "CORRUPTIONS", "DEFAULT_EVAL_SPLITS", "DOMAINS", "LAB_B", "SEVERITIES", "SOURCE_LAB", "SPLITS",
    "Camera", "DataError", "Domain", "SplitData", "SplitDef", "Stain", "SynthSpec", "corrupt", "generate",
    "get_report", "parse_data_option", "register_dataset", "register_synth_split", "render", "render_cell",
    "unregister_dataset",
]
