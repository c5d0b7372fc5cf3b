"""robustbench-wbc: how robust are white-blood-cell image models to distribution shift and attack?

The Python API mirrors the command line::

    import robustbench_wbc as rw

    rw.list_models()                        # the zoo
    model, card = rw.load_model("resnet10t_multitask")   # trained on first use, cached
    summary = rw.run(["resnet10t_cls"], ["synth:test"], ["pgd"], out="runs/x", eps=[8 / 255])
    print(rw.to_markdown(rw.leaderboard(rw.ResultStore("runs/x").table())))
"""

from robustbench_wbc._version import __version__
from robustbench_wbc.attacks import (
    ATTACKS,
    AttackSpec,
    ThreatModelViolation,
    build_attack,
    check_threat_model,
    parse_eps,
    register_attack,
)
from robustbench_wbc.bench import Cell, ResultStore, run
from robustbench_wbc.bench.custom import benchmark
from robustbench_wbc.data import CLASSES, SPLITS, Domain, SplitData, generate
from robustbench_wbc.models import MODELS, ModelCard, WBCNet, list_models, load_model, register_model
from robustbench_wbc.plugins import load_model_plugin
from robustbench_wbc.report import leaderboard, to_markdown

__all__ = [
    "ATTACKS", "CLASSES", "MODELS", "SPLITS", "AttackSpec", "Cell", "Domain", "ModelCard", "ResultStore",
    "SplitData", "ThreatModelViolation", "WBCNet", "__version__", "benchmark", "build_attack", "check_threat_model",
    "generate", "leaderboard", "list_models", "load_model", "load_model_plugin", "parse_eps", "register_attack",
    "register_model", "run", "to_markdown",
]
