"""Cells, the unit of work: (model, split, attack, eps, target, seed, n) → tidy rows.

A clean evaluation is the cell whose attack is ``none`` at eps 0.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

CLEAN = "none"


@dataclass(frozen=True)
class Cell:
    """The coordinates of one measurement.

    ``model_sha256`` is the checkpoint's weights digest: retraining a model changes its cells'
    ids, so stale results are never reused. What the cell was computed *by* (code and library
    versions, data digest, precision, batching) is not a coordinate: it is the cell's fingerprint,
    recorded with its rows and checked before a stored cell is reused
    (:mod:`robustbench_wbc.bench.provenance`), so that a cell recomputed by newer code keeps its id.
    """

    model: str
    split: str
    attack: str
    eps: float
    target: str
    seed: int
    n_images: int
    model_sha256: str
    norm: str = "none"
    backend: str = "none"
    params: dict = field(default_factory=dict)

    @property
    def is_clean(self) -> bool:
        return self.attack == CLEAN

    @property
    def id(self) -> str:
        """A stable id: the hash of every coordinate that changes the numbers."""
        blob = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def cost(self) -> float:
        """A rough cost in forward/backward passes per image, used to schedule large cells first."""
        if self.is_clean:
            return 1.0
        return 1.0 + 2.0 * float(self.params.get("steps", 1))
