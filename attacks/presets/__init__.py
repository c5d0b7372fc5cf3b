"""The suite's attack presets (YAML), installed as the package ``robustbench_wbc.presets``."""
