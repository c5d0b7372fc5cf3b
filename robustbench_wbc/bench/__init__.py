"""The bench: cells, the result store, and the runner of the matrix."""

from robustbench_wbc.bench.cells import CLEAN, Cell
from robustbench_wbc.bench.runner import COLUMNS, LocalExecutor, RunSummary, evaluate_cell, plan, run
from robustbench_wbc.bench.store import ResultStore

__all__ = ["CLEAN", "COLUMNS", "Cell", "LocalExecutor", "ResultStore", "RunSummary", "evaluate_cell",
           "plan", "run"]
