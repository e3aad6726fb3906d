"""How small an AUROC difference a test split can detect, and when it is too small to say anything.

Two classifiers scored on the same test cases have a DeLong AUROC difference that is close to normal
with variance ``V_a + V_b - 2 C_ab``. Planning a paired ROC comparison the way Obuchowski & McClish
(1997, Statistics in Medicine 16:1529) do, with both variances taken equal to the reference
classifier's DeLong variance ``V`` and the two estimates' correlation ``r``, the smallest difference
a two-sided test at level alpha detects with the given power is

    delta_min = (z_{1 - alpha/2} + z_{power}) * sqrt(2 V (1 - r)).

With variants trained on several seeds (``seeded.py``) the difference's standard error is estimated
directly (test-patient bootstrap plus seed variance, Welch degrees of freedom) and the same plan reads
``delta_min = (t_{1 - alpha/2, df} + t_{power, df}) * SE`` (``detectable_difference``); with one seed
and DeLong's variances it is the formula above.

A difference smaller than that is "no detectable effect at this test size", not "no effect":
``effect_reading`` turns a difference, its p-value and delta_min into those words.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import t as student_t

from cxrsynth.tasks.metrics.delong import delong


def minimum_detectable_difference(variance: float, correlation: float, alpha: float = 0.05,
                                  power: float = 0.8) -> float:
    """delta_min for a paired two-sided test of two AUROCs with equal variance ``variance``."""
    if variance < 0 or not -1.0 <= correlation <= 1.0:
        raise ValueError(f"need variance >= 0 and correlation in [-1, 1], got {variance}, {correlation}")
    return detectable_difference(float(np.sqrt(2.0 * variance * (1.0 - correlation))), alpha, power)


def detectable_difference(standard_error: float, alpha: float = 0.05, power: float = 0.8,
                          dof: float = np.inf) -> float:
    """delta_min of a two-sided test at ``alpha`` with ``power``, for a difference estimated with
    ``standard_error`` referred to a t distribution with ``dof`` degrees of freedom (inf: normal)."""
    if standard_error < 0 or not dof > 0:
        raise ValueError(f"need standard_error >= 0 and dof > 0, got {standard_error}, {dof}")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"need alpha and power in (0, 1), got {alpha}, {power}")
    return float((student_t.ppf(1 - alpha / 2, dof) + student_t.ppf(power, dof)) * standard_error)


def paired_minimum_detectable_difference(labels: np.ndarray, reference_scores: np.ndarray,
                                         other_scores: np.ndarray, alpha: float = 0.05,
                                         power: float = 0.8) -> float:
    """delta_min from the reference classifier's DeLong variance and its correlation with the other
    classifier on this test split (both score vectors over the same cases)."""
    result = delong(labels, np.vstack([reference_scores, other_scores]))
    variance_ref, variance_other = result.covariance[0, 0], result.covariance[1, 1]
    scale = np.sqrt(variance_ref * variance_other)
    correlation = float(np.clip(result.covariance[0, 1] / scale, -1.0, 1.0)) if scale > 0 else 1.0
    return minimum_detectable_difference(float(variance_ref), correlation, alpha, power)


def too_few_cases(labels: np.ndarray, minimum: int) -> str | None:
    """Why no AUROC statistic should be printed for these labels (None when there are enough).

    DeLong's variance collapses with one or two positives (an AUROC of 1 with a zero-width interval),
    so below ``minimum`` positives or negatives a cell says so instead of printing an interval or p.
    """
    labels = np.asarray(labels)
    positives, negatives = int((labels == 1).sum()), int((labels == 0).sum())
    if positives < minimum:
        return f"too few positives ({positives} < {minimum})"
    if negatives < minimum:
        return f"too few negatives ({negatives} < {minimum})"
    return None


HELPS = "helps"
HURTS = "hurts"
NO_DETECTABLE_EFFECT = "no detectable effect at this test size"
INCONCLUSIVE = "inconclusive"


def effect_reading(difference: float, p_value: float, minimum_detectable: float, alpha: float = 0.05) -> str:
    """What a difference of AUROCs (variant minus comparator) says, in words a report can print.

    Significant at ``alpha``: "helps" or "hurts". Not significant and no larger than the minimum
    detectable difference: the test split could have missed an effect that size, so "no detectable
    effect at this test size" (never "no effect"). Not significant yet larger than delta_min: the
    two classifiers' variance exceeded what the plan assumed, "inconclusive".
    """
    if not 0 < alpha < 1:
        raise ValueError(f"need alpha in (0, 1), got {alpha}")
    if p_value < alpha:
        return HELPS if difference > 0 else HURTS
    if abs(difference) <= minimum_detectable:
        return NO_DETECTABLE_EFFECT
    return INCONCLUSIVE
