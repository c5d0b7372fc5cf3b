"""An example robustbench-wbc plugin: two attacks, registered by importing ``.attacks``."""
