"""Variants trained with the same set of seeds, scored on the same test patients: AUROC estimates and
comparisons that count both sources of noise.

Each variant is trained once per seed (the same seeds for every variant, so the runs pair up) and
scored on the same real test images. The quantity reported is the seed-averaged AUROC (or the
seed-averaged AUROC difference of two variants). Its variance has two parts:

- test-case sampling: a bootstrap over test *patients* (a patient's images move together) of the
  seed-averaged value, the models held fixed. Every variant is scored on the *same* patient
  resamples (``PatientResamples``), so differences, and ratios of differences, pair up;
- training-seed noise: the spread of the per-seed values over the S seeds, divided by S.

The two add; intervals and tests refer to a t distribution with Welch–Satterthwaite degrees of
freedom, so that with few seeds and a large seed spread they stay honest.

A resample is a weight per case (how many times its patient was drawn), and the AUROC of a weighted
sample is computed from one sort of the scores (``weighted_auroc``), so a thousand resamples of
thousands of cases cost milliseconds, not a thousand rank computations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import t as student_t


@dataclass(frozen=True)
class SeededComparison:
    """Seed-averaged AUROC of variant a minus variant b, with its interval and two-sided p."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    test_variance: float
    seed_variance: float
    dof: float
    per_seed_difference: tuple[float, ...]

    @property
    def standard_error(self) -> float:
        return float(np.sqrt(self.test_variance + self.seed_variance))


@dataclass(frozen=True)
class SeededEstimate:
    """One variant's seed-averaged AUROC, its interval, and the spread of the per-seed AUROCs."""

    mean: float
    ci_low: float
    ci_high: float
    sd: float
    minimum: float
    maximum: float
    per_seed: tuple[float, ...]


def weighted_auroc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of ``scores`` (cases,) against 0/1 ``labels`` under each row of case ``weights`` (rows, cases):
    the weighted share of (positive, negative) pairs ranked right, ties counting half. NaN for a row
    whose positives or negatives all have weight 0."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(scores, kind="stable")
    sorted_scores, positive = scores[order], labels[order] == 1
    w_pos = np.where(positive, weights[:, order], 0.0)
    w_neg = np.where(positive, 0.0, weights[:, order])
    # Each case's tie group [first, last] in sorted order: negatives strictly below, and tied with it.
    first = np.searchsorted(sorted_scores, sorted_scores, side="left")
    last = np.searchsorted(sorted_scores, sorted_scores, side="right")
    below_or_tied = np.concatenate([np.zeros((len(weights), 1)), np.cumsum(w_neg, axis=1)], axis=1)
    below = below_or_tied[:, first]
    tied = below_or_tied[:, last] - below
    ranked_right = (w_pos * (below + 0.5 * tied)).sum(axis=1)
    pairs = w_pos.sum(axis=1) * w_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, ranked_right / pairs, np.nan)


@dataclass(frozen=True)
class PatientResamples:
    """``weights`` (resamples, cases): how often each case's patient was drawn in each resample."""

    weights: np.ndarray

    @classmethod
    def draw(cls, groups: np.ndarray, n_boot: int, seed: int) -> "PatientResamples":
        """``n_boot`` resamples of whole patients with replacement, as many patients as the split holds."""
        _, patient = np.unique(np.asarray(groups), return_inverse=True)
        n_patients = patient.max() + 1 if len(patient) else 0
        counts = np.random.default_rng(seed).multinomial(n_patients, np.full(n_patients, 1.0 / max(n_patients, 1)),
                                                         size=n_boot)
        return cls(counts[:, patient].astype(np.float64))


@dataclass(frozen=True)
class SeededAurocs:
    """One variant on one finding: the AUROC of each seed on the test split (S,) and on each patient
    resample (resamples, S), NaN where a resample lacks a class."""

    per_seed: np.ndarray
    resampled: np.ndarray

    @classmethod
    def score(cls, labels: np.ndarray, scores: np.ndarray, resamples: PatientResamples) -> "SeededAurocs":
        """``scores`` (seeds, cases) of one variant, row s from seed s; ``labels`` 0/1 (cases,)."""
        scores = np.atleast_2d(scores)
        if scores.shape[1] != len(labels) or resamples.weights.shape[1] != len(labels):
            raise ValueError(f"scores {scores.shape}, labels {len(labels)} and resamples "
                             f"{resamples.weights.shape} must describe the same cases")
        ones = np.ones((1, len(labels)))
        per_seed = np.array([weighted_auroc(labels, row, ones)[0] for row in scores])
        resampled = np.stack([weighted_auroc(labels, row, resamples.weights) for row in scores], axis=1)
        return cls(per_seed, resampled)


def _variances(per_seed: np.ndarray, resampled_means: np.ndarray) -> tuple[float, float]:
    """(test-case variance from the resamples, seed variance of the mean) of a seed-averaged value."""
    usable = resampled_means[np.isfinite(resampled_means)]
    test_variance = float(np.var(usable, ddof=1)) if len(usable) > 1 else 0.0
    seed_variance = float(np.var(per_seed, ddof=1) / len(per_seed)) if len(per_seed) > 1 else 0.0
    return test_variance, seed_variance


def welch_dof(test_variance: float, seed_variance: float, n_seeds: int) -> float:
    """Welch–Satterthwaite degrees of freedom: the bootstrap part treated as known, the seed part with S - 1."""
    if seed_variance == 0:
        return np.inf
    return (test_variance + seed_variance) ** 2 * (n_seeds - 1) / seed_variance**2


def _half_width(total_variance: float, dof: float, level: float) -> float:
    return float(student_t.ppf(0.5 + level / 2, dof) * np.sqrt(total_variance)) if total_variance > 0 else 0.0


def estimate(aurocs: SeededAurocs, level: float = 0.95) -> SeededEstimate:
    """The seed-averaged AUROC with an interval counting test patients and seeds, and the seed spread."""
    per_seed = aurocs.per_seed
    test_variance, seed_variance = _variances(per_seed, aurocs.resampled.mean(axis=1))
    mean = float(per_seed.mean())
    half = _half_width(test_variance + seed_variance, welch_dof(test_variance, seed_variance, len(per_seed)), level)
    return SeededEstimate(mean=mean, ci_low=mean - half, ci_high=mean + half,
                          sd=float(per_seed.std(ddof=1)) if len(per_seed) > 1 else 0.0,
                          minimum=float(per_seed.min()), maximum=float(per_seed.max()),
                          per_seed=tuple(float(value) for value in per_seed))


def difference(a: SeededAurocs, b: SeededAurocs, level: float = 0.95) -> SeededComparison:
    """Seed-averaged AUROC(a) - AUROC(b), seeds paired, on the same patient resamples; two-sided p
    against no difference."""
    if a.per_seed.shape != b.per_seed.shape or a.resampled.shape != b.resampled.shape:
        raise ValueError(f"seeds {a.per_seed.shape} / {b.per_seed.shape} and resamples {a.resampled.shape} / "
                         f"{b.resampled.shape}: the two variants must share seeds and patient resamples")
    per_seed = a.per_seed - b.per_seed
    test_variance, seed_variance = _variances(per_seed, (a.resampled - b.resampled).mean(axis=1))
    return _comparison(float(per_seed.mean()), test_variance, seed_variance, level, per_seed)


def _comparison(value: float, test_variance: float, seed_variance: float, level: float,
                per_seed: np.ndarray) -> SeededComparison:
    total, dof = test_variance + seed_variance, welch_dof(test_variance, seed_variance, len(per_seed))
    if total <= 0:
        p_value = 1.0 if value == 0 else 0.0
    else:
        p_value = float(2 * student_t.sf(abs(value) / np.sqrt(total), dof))
    half = _half_width(total, dof, level)
    return SeededComparison(
        difference=value, ci_low=value - half, ci_high=value + half, p_value=p_value,
        test_variance=test_variance, seed_variance=seed_variance, dof=float(dof),
        per_seed_difference=tuple(float(v) for v in per_seed),
    )


def compare_seeded(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, groups: np.ndarray,
                   n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> SeededComparison:
    """Test seed-averaged AUROC(a) - AUROC(b); ``scores_*`` are (seeds, cases), row s of both from seed s."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    scores_a, scores_b = np.atleast_2d(scores_a), np.atleast_2d(scores_b)
    if scores_a.shape != scores_b.shape or scores_a.shape[1] != len(labels) or len(groups) != len(labels):
        raise ValueError(f"scores {scores_a.shape} / {scores_b.shape}, labels {len(labels)} and groups "
                         f"{len(groups)} must describe the same seeds and cases")
    resamples = PatientResamples.draw(groups, n_boot, seed)
    return difference(SeededAurocs.score(labels, scores_a, resamples),
                      SeededAurocs.score(labels, scores_b, resamples), level)
