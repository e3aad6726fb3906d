"""Comparing two variants trained with the same set of seeds, counting both sources of noise.

Each variant is trained once per seed (the same seeds for every variant, so the runs pair up) and
scored on the same real test images. The difference of interest is the seed-averaged AUROC
difference. Its variance has two parts:

- test-case sampling: a paired bootstrap over test *patients* (a patient's images move together) of
  the seed-averaged difference, the models held fixed;
- training-seed noise: the spread of the per-seed differences over the S seeds, divided by S.

The two add; the test statistic is referred to a t distribution with Welch–Satterthwaite degrees of
freedom, so that with few seeds and a large seed spread the test stays honest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata, t as student_t


@dataclass(frozen=True)
class SeededComparison:
    """Seed-averaged AUROC of variant a minus variant b, with its interval and two-sided p."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    test_variance: float
    seed_variance: float
    per_seed_difference: tuple[float, ...]


def auroc_rows(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of each row of ``scores`` (rows, cases) against the 0/1 ``labels`` (rows, cases) or (cases,)."""
    scores = np.atleast_2d(scores)
    labels = np.broadcast_to(labels, scores.shape)
    positives = labels == 1
    n_pos = positives.sum(axis=1)
    n_neg = labels.shape[1] - n_pos
    ranks = rankdata(scores, axis=1)
    rank_sum = np.where(positives, ranks, 0.0).sum(axis=1)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _patient_resamples(groups: np.ndarray, n_boot: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Case indices of ``n_boot`` resamples of whole patients, with replacement."""
    _, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == patient) for patient in range(inverse.max() + 1)]
    draws = rng.integers(0, len(members), (n_boot, len(members)))
    return [np.concatenate([members[patient] for patient in draw]) for draw in draws]


def compare_seeded(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, groups: np.ndarray,
                   n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> SeededComparison:
    """Test seed-averaged AUROC(a) - AUROC(b); ``scores_*`` are (seeds, cases), row s of both from seed s."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    scores_a, scores_b = np.atleast_2d(scores_a), np.atleast_2d(scores_b)
    if scores_a.shape != scores_b.shape or scores_a.shape[1] != len(labels) or len(groups) != len(labels):
        raise ValueError(f"scores {scores_a.shape} / {scores_b.shape}, labels {len(labels)} and groups "
                         f"{len(groups)} must describe the same seeds and cases")
    per_seed = auroc_rows(labels, scores_a) - auroc_rows(labels, scores_b)
    n_seeds = len(per_seed)
    replicates = []
    for cases in _patient_resamples(groups, n_boot, np.random.default_rng(seed)):
        if 0 < labels[cases].sum() < len(cases):
            replicates.append(np.mean(auroc_rows(labels[cases], scores_a[:, cases])
                                      - auroc_rows(labels[cases], scores_b[:, cases])))
    test_variance = float(np.var(replicates, ddof=1))
    seed_variance = float(np.var(per_seed, ddof=1) / n_seeds) if n_seeds > 1 else 0.0
    return _combine(float(per_seed.mean()), test_variance, seed_variance, n_seeds, level, per_seed)


def _combine(difference: float, test_variance: float, seed_variance: float, n_seeds: int, level: float,
             per_seed: np.ndarray) -> SeededComparison:
    total = test_variance + seed_variance
    # Welch–Satterthwaite: the bootstrap part is treated as known, the seed part has S - 1 df.
    dof = np.inf if seed_variance == 0 else total**2 * (n_seeds - 1) / seed_variance**2
    if total <= 0:
        p_value = 1.0 if difference == 0 else 0.0
        half = 0.0
    else:
        p_value = float(2 * student_t.sf(abs(difference) / np.sqrt(total), dof))
        half = float(student_t.ppf(0.5 + level / 2, dof) * np.sqrt(total))
    return SeededComparison(
        difference=difference, ci_low=difference - half, ci_high=difference + half, p_value=p_value,
        test_variance=test_variance, seed_variance=seed_variance,
        per_seed_difference=tuple(float(value) for value in per_seed),
    )
