"""How far synthetic images go towards collecting more real data: the ceiling share.

The ``ceiling`` variant trains on the real training split plus as many *additional real* positives of
each rare finding as the best synthetic ratio adds synthetic ones. Per rare finding,

    share = (AUROC(synthetic) - AUROC(real_only)) / (AUROC(ceiling) - AUROC(real_only)),

each AUROC averaged over the same training seeds: 1 means the synthetic images did as much as that
much more real data, 0 nothing, below 0 harm. The ratio only means something when the ceiling itself
gains: when the interval of the ceiling's gain over real-only (test patients and seeds, ``seeded.py``)
does not lie above 0, the share is "undefined".

Its interval resamples test patients jointly for all three variants (the ``SeededAurocs`` of one
finding share their patient resamples) and, in the same replicate, the training seeds (paired across
the three, since seed s of each variant shares initial weights and batch order), and takes percentiles
of the replicated ratios. With few seeds the seed part of that resampling is coarse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxrsynth.tasks.metrics.seeded import SeededAurocs, difference

OK = "ok"


@dataclass(frozen=True)
class CeilingShare:
    """The share of the ceiling's gain a synthetic variant recovers, its interval, and "ok" or why undefined."""

    share: float | None
    ci_low: float | None
    ci_high: float | None
    status: str


def _replicated_gains(variant: SeededAurocs, real_only: SeededAurocs, seed_draws: np.ndarray) -> np.ndarray:
    """Per replicate, the seed-averaged gain of ``variant`` over real-only on its patient resample and seed draw."""
    per_seed_gain = variant.resampled - real_only.resampled
    return np.take_along_axis(per_seed_gain, seed_draws, axis=1).mean(axis=1)


def ceiling_share(synthetic: SeededAurocs, real_only: SeededAurocs, ceiling: SeededAurocs, seed: int = 0,
                  level: float = 0.95) -> CeilingShare:
    """The ceiling share of ``synthetic``, all three scored on one finding's shared patient resamples."""
    ceiling_gain = difference(ceiling, real_only, level)
    if not ceiling_gain.ci_low > 0:
        return CeilingShare(None, None, None,
                            f"undefined: the ceiling's gain over real_only, {ceiling_gain.difference:+.3f} "
                            f"[{ceiling_gain.ci_low:+.3f}, {ceiling_gain.ci_high:+.3f}], is not clearly above 0")
    synthetic_gain = float((synthetic.per_seed - real_only.per_seed).mean())
    share = synthetic_gain / ceiling_gain.difference
    n_resamples, n_seeds = real_only.resampled.shape
    if n_resamples == 0:
        return CeilingShare(share, None, None, OK)
    seed_draws = np.random.default_rng(seed).integers(0, n_seeds, (n_resamples, n_seeds))
    with np.errstate(invalid="ignore", divide="ignore"):
        replicates = (_replicated_gains(synthetic, real_only, seed_draws)
                      / _replicated_gains(ceiling, real_only, seed_draws))
    replicates = replicates[np.isfinite(replicates)]
    tail = (1 - level) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail]) if len(replicates) else (np.nan, np.nan)
    return CeilingShare(share, float(low), float(high), OK)
