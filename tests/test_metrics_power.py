import numpy as np
import pytest
from scipy.stats import norm

from cxrsynth.tasks.metrics.delong import delong, delong_test
from cxrsynth.tasks.metrics.power import (
    HELPS,
    HURTS,
    INCONCLUSIVE,
    detectable_difference,
    NO_DETECTABLE_EFFECT,
    effect_reading,
    minimum_detectable_difference,
    paired_minimum_detectable_difference,
    too_few_cases,
)


def binormal_pair(rng, n_pos, n_neg, separation_a, separation_b, score_correlation):
    """Two classifiers' scores on the same cases: unit-variance binormal, AUROC = Phi(separation / sqrt 2),
    correlated through a shared per-case term."""
    labels = np.r_[np.ones(n_pos), np.zeros(n_neg)]
    shared = rng.standard_normal(len(labels))

    def scores(separation):
        own = rng.standard_normal(len(labels))
        return separation * labels + np.sqrt(score_correlation) * shared + np.sqrt(1 - score_correlation) * own

    return labels, scores(separation_a), scores(separation_b)


def separation_for(auc):
    return np.sqrt(2) * norm.ppf(auc)


def test_formula_matches_the_normal_approximation_by_hand():
    # (1.959964 + 0.841621) * sqrt(2 * 0.001 * 0.5) = 2.801585 * 0.0316228
    assert minimum_detectable_difference(0.001, 0.5) == pytest.approx(0.0885937, rel=1e-5)
    assert minimum_detectable_difference(0.001, 1.0) == 0.0
    assert minimum_detectable_difference(0.004, 0.5) == pytest.approx(2 * 0.0885937, rel=1e-5)


def test_detectable_difference_by_hand_and_with_few_degrees_of_freedom():
    # normal: (1.959964 + 0.841621) * 0.05; t with 2 df: (4.302653 + 1.060660) * 0.05
    assert detectable_difference(0.05) == pytest.approx(0.1400792, rel=1e-5)
    assert detectable_difference(0.05, dof=2) == pytest.approx(0.2681656, rel=1e-5)
    assert detectable_difference(0.05, alpha=0.05, power=0.8, dof=1e9) == pytest.approx(detectable_difference(0.05))
    with pytest.raises(ValueError):
        detectable_difference(-0.1)
    with pytest.raises(ValueError):
        detectable_difference(0.1, dof=0)


@pytest.mark.parametrize("bad", [dict(variance=-1, correlation=0), dict(variance=1, correlation=1.5),
                                 dict(variance=1, correlation=0, alpha=0), dict(variance=1, correlation=0, power=1)])
def test_formula_refuses_impossible_inputs(bad):
    with pytest.raises(ValueError):
        minimum_detectable_difference(**bad)


def test_a_difference_of_the_minimum_size_is_detected_with_the_stated_power():
    """Simulation: plant exactly delta_min between two correlated binormal classifiers; DeLong's
    test at alpha 0.05 must reject in about 80 % of test splits."""
    rng = np.random.default_rng(7)
    n_pos, n_neg, auc_ref, rho = 150, 150, 0.75, 0.6
    null_pairs = (binormal_pair(rng, n_pos, n_neg, separation_for(auc_ref), separation_for(auc_ref), rho)
                  for _ in range(200))
    pilot = [delong(labels, np.vstack([a, b])) for labels, a, b in null_pairs]
    variance = np.mean([result.covariance[0, 0] for result in pilot])
    correlation = np.mean([result.covariance[0, 1] / np.sqrt(result.covariance[0, 0] * result.covariance[1, 1])
                           for result in pilot])
    delta = minimum_detectable_difference(variance, correlation)
    rejections = [delong_test(*binormal_pair(rng, n_pos, n_neg, separation_for(auc_ref + delta),
                                             separation_for(auc_ref), rho)).p_value < 0.05
                  for _ in range(400)]
    assert 0.72 <= np.mean(rejections) <= 0.90


def test_paired_version_reads_variance_and_correlation_off_the_split():
    rng = np.random.default_rng(3)
    labels, reference, other = binormal_pair(rng, 200, 200, 1.0, 1.0, 0.6)
    result = delong(labels, np.vstack([reference, other]))
    correlation = result.covariance[0, 1] / np.sqrt(result.covariance[0, 0] * result.covariance[1, 1])
    expected = minimum_detectable_difference(result.covariance[0, 0], correlation)
    assert paired_minimum_detectable_difference(labels, reference, other) == pytest.approx(expected)
    # more test cases, smaller detectable difference
    big = binormal_pair(rng, 800, 800, 1.0, 1.0, 0.6)
    assert paired_minimum_detectable_difference(*big) < 0.6 * expected


def test_too_few_cases_names_what_is_missing():
    assert too_few_cases(np.r_[np.ones(1), np.zeros(50)], 10) == "too few positives (1 < 10)"
    assert too_few_cases(np.r_[np.ones(50), np.zeros(3)], 10) == "too few negatives (3 < 10)"
    assert too_few_cases(np.r_[np.ones(10), np.zeros(10)], 10) is None


@pytest.mark.parametrize(("difference", "p_value", "detectable", "reading"), [
    (0.08, 0.01, 0.10, HELPS),  # significant, even below the 80 %-power size
    (-0.12, 0.001, 0.10, HURTS),
    (0.04, 0.40, 0.10, NO_DETECTABLE_EFFECT),
    (-0.10, 0.06, 0.10, NO_DETECTABLE_EFFECT),  # at the boundary: still within what the split can miss
    (0.0, 1.0, 0.0, NO_DETECTABLE_EFFECT),  # identical rankings
    (0.15, 0.07, 0.10, INCONCLUSIVE),  # larger than detectable, yet not significant
    (-0.15, 0.05, 0.10, INCONCLUSIVE),  # p exactly alpha is not significant
])
def test_effect_reading(difference, p_value, detectable, reading):
    assert effect_reading(difference, p_value, detectable) == reading


def test_effect_reading_never_says_no_effect_and_checks_alpha():
    assert effect_reading(0.01, 0.9, 0.2) == "no detectable effect at this test size"
    assert effect_reading(0.01, 0.02, 0.2, alpha=0.01) == NO_DETECTABLE_EFFECT
    with pytest.raises(ValueError, match="alpha"):
        effect_reading(0.01, 0.5, 0.2, alpha=0)
