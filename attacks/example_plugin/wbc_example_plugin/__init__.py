"""An example robustbench-wbc plugin: one attack, registered by importing ``.attacks``."""
