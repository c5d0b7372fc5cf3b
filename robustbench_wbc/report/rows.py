"""Which rows of the tidy table every report reads: one rule, used by the leaderboard, the shift
analysis, the ensemble, the per-class tables, the reliability checks and the HTML report alike."""

from __future__ import annotations

import logging

import pandas as pd

from robustbench_wbc.data.splits import SPLITS

logger = logging.getLogger(__name__)

# one trained model: a number is first worked out per (model, training seed), then over seeds
SEED_KEYS = ["model", "model_seed"]
# the coordinates of one measurement: rows that share them are repeats of it
COORDS = ["model", "model_seed", "split", "attack", "target", "norm", "eps", "seed", "params", "metric"]
REAL = "real"
BF16 = r"(?:^|;)precision=bf16(?:;|$)"


def current_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Keeps the rows that describe each model as it is now.

    An output directory may hold cells of an earlier checkpoint of a model (it was retrained) or
    the same measurement at several ``n``: keep the newest checkpoint's cells, and of repeated
    coordinates the row with the most images (then the newest). An attack crafted in bfloat16
    (``run --precision bf16``: ``precision=bf16`` in its params) is named ``<attack>+bf16``, so
    that no report mixes it with the fp32 attack. Rows of every status are kept (a report that
    counts failed cells needs them); each reader keeps the ``ok`` ones it uses.
    """
    if table.empty:
        return table
    table = table.copy()
    for col, default in (("seed", 0), ("params", ""), ("norm", "none"), ("target", "none")):
        if col not in table:
            table[col] = default
    table["params"] = table["params"].astype(object).fillna("").astype(str)
    if "model_seed" not in table:
        table["model_seed"] = 0
    order = ["n", "finished_at"] if "finished_at" in table else ["n"]
    if "model_sha256" in table and "finished_at" in table:  # one checkpoint per (model, training seed): the newest
        newest = (table.sort_values("finished_at", kind="stable").groupby(SEED_KEYS, as_index=False)["model_sha256"]
                  .last().rename(columns={"model_sha256": "_newest"}))
        merged = table[[*SEED_KEYS, "model_sha256"]].merge(newest, on=SEED_KEYS, how="left")
        keep = pd.Series((merged["_newest"] == merged["model_sha256"]).to_numpy(), index=table.index)
        if not keep.all():
            logger.warning("ignoring %d rows of older checkpoints of %s", int((~keep).sum()),
                           sorted(table.loc[~keep, "model"].unique()))
        table = table[keep]
    t = table.sort_values(order, kind="stable").drop_duplicates(COORDS, keep="last")
    bf16 = t["params"].str.contains(BF16) & ~t["attack"].astype(str).str.endswith("+bf16")  # once: idempotent
    if bf16.any():  # an attack crafted in bf16 is reported as its own attack: pgd+bf16
        t = t.copy()
        t.loc[bf16, "attack"] = t.loc[bf16, "attack"] + "+bf16"
    return t


def split_role(split: str) -> str:
    """The reports' reading of a split: ``test`` (in distribution), ``ood`` (SynthWBC under another lab),
    ``real`` (any split of real cells: every id not ``synth:…``, registered in this process or not),
    or the split's own role (``probe``, ``corruption``, …)."""
    if not split.startswith("synth:"):
        return REAL
    return SPLITS.get(split).role if split in SPLITS else "unknown"
