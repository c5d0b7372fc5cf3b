"""Ranks the data can carry: models compared paired on the same images, over seeds and images together.

Two models scored on the same images are not independent samples: most images are easy or hard for
both, so the difference of their scores is far less noisy than either score. Ranking by whether two
marginal intervals overlap ignores that and ties models the data does separate; ranking by a
t-interval over two training seeds (t = 12.7 at 1 degree of freedom) ties nearly everything. Here
each pair of models is compared on the per-image outcomes behind the ranking number:

* the images (more exactly, the *cells*: SynthWBC's OOD splits hold the test cells under other labs,
  so an image of ``ood-lab-b`` and the same index of ``ood-stain-b`` are one cell) are resampled
  with replacement, the **same resample for every model** (a paired, cluster bootstrap);
* a model with several training seeds has its seeds resampled too, within the model, in the same
  replicate (a hierarchical bootstrap: seeds × cells), so the spread between trainings counts; each
  seed's deviation from the mean is scaled by √(k/(k−1)) first, so that k seeds drawn with
  replacement vary as much as k independent trainings (with two seeds, plain resampling halves
  the variance), and each model draws its seeds from a stream of its own;
* the statistic is the ranking number, recomputed on each replicate: the mean over the model's
  seeds of the mean over its splits of the per-image outcome (robust or not, correct or not,
  Dice). For a worst case over attacks, each seed's outcomes are those of the attack (or the
  per-image ensemble) that gave that seed's worst case on all the images, held fixed across
  replicates (exact where the ensemble ran: it is the per-image worst case).

Model A is *ahead of* model B when the 2.5 % quantile of A − B over :data:`BOOTSTRAP` replicates is
above 0 (a one-sided 97.5 % paired test; no correction for the many pairs, so read a rank as
"no model is shown ahead of it" rather than as a multiple-comparison-adjusted claim). A model's
rank is 1 + the number of models ahead of it; models that share a rank are marked ``=``. Each
model's 95 % interval (``key_low``, ``key_high``) is the percentile interval of its own statistic
over the same replicates.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

BOOTSTRAP = 2000
SEED = 0
ALPHA = 0.05

METHOD = ("rank = 1 + the number of models ahead of it at 95 % confidence, compared paired on the same cells "
          f"(a paired bootstrap over cells, {BOOTSTRAP:,} resamples; for a model with several training seeds its seeds "
          "are resampled too, their spread scaled by √(k/(k−1)): a hierarchical bootstrap over seeds and cells; OOD "
          "splits that hold the same cells are resampled by cell); no correction for multiple comparisons")


@dataclass(frozen=True)
class Evidence:
    """The per-image outcomes behind one model's ranking number.

    ``seeds`` holds one entry per training seed; each entry is a list of splits, each split a pair
    ``(clusters, values)``: the cell each image shows (a string, e.g. ``"synth-seed-3000#17"``)
    and its outcome (a float, 0/1 for robust or correct). The model's number is the mean over seeds
    of the mean over splits of the mean over images.
    """

    seeds: tuple[tuple[tuple[np.ndarray, np.ndarray], ...], ...]

    def value(self) -> float:
        return float(np.mean([np.mean([np.mean(v) for _, v in seed]) for seed in self.seeds]))


def replicates(evidence: dict[str, Evidence], rng_seed: int = SEED, n: int = BOOTSTRAP) -> dict[str, np.ndarray]:
    """Gives each model's statistic on ``n`` paired bootstrap replicates: the cells resampled alike for every
    model (the pairing), each model's seeds resampled within it (the hierarchy). See the module docstring."""
    index: dict[object, int] = {}
    for ev in evidence.values():
        for seed in ev.seeds:
            for clusters, _ in seed:
                for c in clusters.tolist():
                    index.setdefault(c, len(index))
    rng = np.random.default_rng(rng_seed)
    n_clusters = len(index)
    # one multinomial resample of the cells per replicate, shared by every model: the pairing
    weights = rng.multinomial(n_clusters, np.full(n_clusters, 1 / n_clusters), size=n).astype(float) \
        if n_clusters else np.zeros((n, 0))
    stats = {}
    for m, ev in evidence.items():
        per_seed = []
        for seed in ev.seeds:
            rows = []
            for clusters, values in seed:
                cols = np.fromiter((index[c] for c in clusters.tolist()), dtype=int, count=len(clusters))
                x = np.zeros(n_clusters)
                present = np.zeros(n_clusters)
                np.add.at(x, cols, np.asarray(values, dtype=float))
                np.add.at(present, cols, 1.0)
                with np.errstate(invalid="ignore", divide="ignore"):
                    rows.append((weights @ x) / (weights @ present))
            per_seed.append(np.nanmean(np.vstack(rows), axis=0))
        t = np.vstack(per_seed)  # seeds × replicates
        k = len(t)
        if k > 1:
            # the seeds resampled within the model, in the same replicate, from the model's own stream (so a
            # model's interval does not depend on which other models are compared); each seed's deviation from
            # the replicate's mean is first scaled by √(k/(k−1)), so that the mean of k seeds drawn with
            # replacement varies as s²/k, not (k−1)/k · s²/k (half of it with two seeds)
            own = np.random.default_rng([rng_seed, zlib.crc32(str(m).encode())])
            centre = t.mean(axis=0)
            t = centre + (t - centre) * np.sqrt(k / (k - 1))
            pick = own.integers(0, k, size=(n, k))
            stats[m] = t[pick, np.arange(n)[:, None]].mean(axis=1)
        else:
            stats[m] = t[0]
    return stats


def paired_difference(a: Evidence, b: Evidence, rng_seed: int = SEED) -> tuple[float, float, float]:
    """Gives ``a − b`` (their numbers) with its 95 % interval, compared paired on the same cells (and over seeds)."""
    stats = replicates({"a": a, "b": b}, rng_seed)
    lo, hi = np.nanquantile(stats["a"] - stats["b"], [ALPHA / 2, 1 - ALPHA / 2])
    return a.value() - b.value(), float(lo), float(hi)


def paired_ranks(evidence: dict[str, Evidence], order: list[str], rng_seed: int = SEED,
                 replicates_n: int = BOOTSTRAP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gives ``(ranks, low, high)`` for the models of ``order`` (in that order) from their evidence.

    A model absent from ``evidence`` ranks after every model that has some (and shares that rank
    with the other absent ones); its interval is NaN. See the module docstring for the method.
    """
    have = [m for m in order if m in evidence]
    stats = replicates({m: evidence[m] for m in have}, rng_seed, replicates_n)
    n = len(order)
    low, high = np.full(n, np.nan), np.full(n, np.nan)
    ahead = np.zeros(n, dtype=int)
    pos = {m: i for i, m in enumerate(order)}
    for a in have:
        lo, hi = np.nanquantile(stats[a], [ALPHA / 2, 1 - ALPHA / 2])
        low[pos[a]], high[pos[a]] = lo, hi
        for b in have:
            if a != b and np.nanquantile(stats[b] - stats[a], ALPHA / 2) > 0:
                ahead[pos[a]] += 1
    ranks = np.array([1 + ahead[pos[m]] if m in evidence else 1 + len(have) for m in order], dtype=int)
    return ranks, low, high
