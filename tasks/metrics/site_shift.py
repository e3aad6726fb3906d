"""Site shift: every variant's AUROC on each acquisition site of the test split and, when the variants
trained on some sites only (``evaluate.train_sites``), its drop from those sites to the others.

Scores come per variant as a (seeds, cases, findings) array: one row per training seed, the same test
cases in every row; one training run is a one-row array (``seed_rows``). A cell's AUROC is the mean of
the per-seed AUROCs, not the AUROC of the seed-averaged scores: averaging scores builds an ensemble,
which ranks better than any of its members, whereas a user deploys one trained classifier (and the
mean over seeds is what the verdict table reports). Its 95 % interval is DeLong's for that mean: with
DeLong's covariance C of the S score rows on the same cases, Var(mean) = 1'C1 / S^2. The interval
counts test-case sampling; the spread of the per-seed AUROCs (their standard deviation) stands beside it.

The drop is AUROC(test images of the training sites) - AUROC(test images of every other site), per seed,
then averaged. The two groups are different images, so their variances add (a patient imaged at two
sites would correlate them a little; the interval ignores that). Test images without a site belong to
no site's cell and to neither side of the drop. Below ``min_cases`` test positives or negatives a cell
(or a side of the drop) has a status and no statistic, as in the downstream metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.metrics.delong import delong
from cxrsynth.tasks.metrics.downstream import OK
from cxrsynth.tasks.metrics.power import too_few_cases
from cxrsynth.tasks.sites import site_order

LEVEL = 0.95
CELL_STATISTICS = ("auroc", "auroc_ci_low", "auroc_ci_high", "seed_sd")
DROP_STATISTICS = ("auroc_training_sites", "auroc_other_sites", "drop", "drop_ci_low", "drop_ci_high", "p_value",
                   "seed_sd")
NO_OTHER_SITE = "no test images from other sites"


@dataclass(frozen=True)
class SeedAuroc:
    """The AUROC of each seed's scores on the same cases, their mean and the test-case variance of the mean."""

    per_seed: np.ndarray
    variance: float

    @property
    def mean(self) -> float:
        return float(self.per_seed.mean())

    @property
    def seed_sd(self) -> float:
        return float(np.std(self.per_seed, ddof=1)) if len(self.per_seed) > 1 else 0.0


def seed_rows(probabilities: np.ndarray) -> np.ndarray:
    """A variant's scores as (seeds, cases, findings): a single run's (cases, findings) becomes one row."""
    scores = np.asarray(probabilities, dtype=np.float64)
    if scores.ndim == 2:
        return scores[None]
    if scores.ndim != 3:
        raise ValueError(f"scores must be (cases, findings) or (seeds, cases, findings), got shape {scores.shape}")
    return scores


def seed_auroc(labels: np.ndarray, scores: np.ndarray) -> SeedAuroc:
    """Per-seed AUROCs of ``scores`` (seeds, cases) against 0/1 ``labels`` and the DeLong variance of their mean."""
    result = delong(labels, scores)
    variance = float(result.covariance.sum()) / len(result.auc) ** 2
    return SeedAuroc(per_seed=result.auc, variance=max(variance, 0.0))


def _normal_interval(estimate: float, variance: float) -> tuple[float, float]:
    half = float(norm.ppf(0.5 + LEVEL / 2) * np.sqrt(variance))
    return estimate - half, estimate + half


def _known(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cases with a known label (NaN: uncertain, left out, as in the downstream metrics)."""
    keep = ~np.isnan(labels)
    return labels[keep].astype(int), scores[:, keep]


def _counts(labels: np.ndarray, min_cases: int) -> dict[str, int | str]:
    return {"n_positive": int((labels == 1).sum()), "n_negative": int((labels == 0).sum()),
            "status": too_few_cases(labels, min_cases) or OK}


def site_cell(labels: np.ndarray, scores: np.ndarray, min_cases: int) -> dict:
    """One finding on one group of test images: counts, status, and when "ok" the mean AUROC over seeds
    with its DeLong interval (clipped to [0, 1]) and the seed spread. ``scores`` is (seeds, cases)."""
    y, s = _known(labels, scores)
    cell = _counts(y, min_cases)
    if cell["status"] != OK:
        return {**cell, **dict.fromkeys(CELL_STATISTICS)}
    auroc = seed_auroc(y, s)
    low, high = _normal_interval(auroc.mean, auroc.variance)
    return {**cell, "auroc": auroc.mean, "auroc_ci_low": max(low, 0.0), "auroc_ci_high": min(high, 1.0),
            "seed_sd": auroc.seed_sd}


def _side_status(labels: np.ndarray, min_cases: int, side: str) -> str | None:
    reason = too_few_cases(labels, min_cases)
    return f"{side}: {reason}" if reason else None


def site_drop(labels: np.ndarray, scores: np.ndarray, training: np.ndarray, other: np.ndarray, min_cases: int) -> dict:
    """AUROC on the training sites' test images minus AUROC on the other sites' (boolean case masks
    ``training`` and ``other``), averaged over seeds, with its interval, two-sided p and seed spread."""
    y_in, s_in = _known(labels[training], scores[:, training])
    y_out, s_out = _known(labels[other], scores[:, other])
    status = (NO_OTHER_SITE if not other.any() else
              _side_status(y_in, min_cases, "training sites") or _side_status(y_out, min_cases, "other sites") or OK)
    if status != OK:
        return {"status": status, **dict.fromkeys(DROP_STATISTICS)}
    inside, outside = seed_auroc(y_in, s_in), seed_auroc(y_out, s_out)
    per_seed = inside.per_seed - outside.per_seed
    drop, variance = float(per_seed.mean()), inside.variance + outside.variance
    low, high = _normal_interval(drop, variance)
    if variance > 0:
        p_value = float(2 * norm.sf(abs(drop) / np.sqrt(variance)))
    else:  # both sides ranked perfectly or identically: no spread to test against
        p_value = 1.0 if drop == 0 else 0.0
    return {"status": status, "auroc_training_sites": inside.mean, "auroc_other_sites": outside.mean, "drop": drop,
            "drop_ci_low": low, "drop_ci_high": high, "p_value": p_value,
            "seed_sd": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0}


def _site_labels(sites: Sequence[str | None]) -> np.ndarray:
    """Each case's site as an object array, None where it has none (None, NaN or pandas' NA)."""
    return np.array([None if pd.isna(site) else str(site) for site in sites], dtype=object)


def variant_site_metrics(labels: np.ndarray, scores: np.ndarray, sites: np.ndarray, train_sites: Sequence[str] | None,
                         min_cases: int) -> dict:
    """One variant: per test site and finding a ``site_cell``; with ``train_sites``, per finding the
    ``site_drop`` from those sites to the others (else None). ``scores`` is (seeds, cases, findings)."""
    named = site_order(s for s in sites if s is not None)
    per_site = {site: {finding: site_cell(labels[sites == site, index], scores[:, sites == site, index], min_cases)
                       for index, finding in enumerate(FINDINGS)}
                for site in named}
    if train_sites is None:
        return {"per_site": per_site, "shift": None}
    training = np.array([site in train_sites for site in sites], dtype=bool)
    other = np.array([site is not None for site in sites], dtype=bool) & ~training
    shift = {finding: site_drop(labels[:, index], scores[:, :, index], training, other, min_cases)
             for index, finding in enumerate(FINDINGS)}
    return {"per_site": per_site, "shift": shift}


def site_metrics(labels: np.ndarray, scores_by_variant: Mapping[str, np.ndarray], sites: Sequence[str | None],
                 train_sites: Sequence[str] | None, min_cases: int) -> dict:
    """The ``sites`` block of metrics/evaluate.json: the test split's sites (images, whether the
    variants trained there), the images without a site, and every variant's per-site scores and drop.

    ``labels`` is (cases, findings) with NaN for uncertain; each variant's scores (cases, findings) or
    (seeds, cases, findings); ``sites`` names each test case's site (None / NA: unknown)."""
    site_of = _site_labels(sites)
    if len(site_of) != len(labels):
        raise ValueError(f"{len(site_of)} sites for {len(labels)} test cases")
    named = site_order(s for s in site_of if s is not None)
    variants = {}
    for variant, probabilities in scores_by_variant.items():
        scores = seed_rows(probabilities)
        if scores.shape[1:] != labels.shape:
            raise ValueError(f"{variant}: scores {scores.shape} do not match the labels {labels.shape}")
        variants[variant] = variant_site_metrics(labels, scores, site_of, train_sites, min_cases)
    return {
        "train_sites": None if train_sites is None else list(train_sites),
        "test_sites": {site: {"n_images": int((site_of == site).sum()),
                              "training": train_sites is None or site in train_sites} for site in named},
        "n_without_site": int(sum(site is None for site in site_of)),
        "variants": variants,
    }
