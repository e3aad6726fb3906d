import numpy as np
import pytest
from scipy.stats import kstest
from sklearn.metrics import roc_auc_score

from cxrsynth.tasks.metrics.seeded import (
    PatientResamples,
    SeededAurocs,
    compare_seeded,
    difference,
    estimate,
    weighted_auroc,
    welch_dof,
)

N_SEEDS = 3


def experiment(rng, separation_a, separation_b, n_cases=240, seed_spread=0.15):
    """One test split and two variants trained with N_SEEDS seeds each. A seed moves the model's
    separation (training noise) and its per-case errors; cases share a difficulty term, so the two
    variants' scores are correlated as two classifiers on the same images are. Patients hold two images."""
    labels = (rng.random(n_cases) < 0.4).astype(int)
    groups = np.arange(n_cases) // 2
    difficulty = rng.standard_normal(n_cases)

    def variant(separation):
        return np.stack([(separation + seed_spread * rng.standard_normal()) * labels
                         + 0.7 * difficulty + 0.7 * rng.standard_normal(n_cases) for _ in range(N_SEEDS)])

    return labels, variant(separation_a), variant(separation_b), groups


def test_weighted_auroc_matches_sklearn_with_sample_weights():
    rng = np.random.default_rng(0)
    labels = (rng.random(50) < 0.3).astype(int)
    scores = rng.standard_normal(50).round(1)  # ties included
    weights = rng.integers(0, 3, (5, 50)).astype(float)
    weights[0] = 1.0
    expected = [roc_auc_score(labels, scores, sample_weight=row) for row in weights]
    assert np.allclose(weighted_auroc(labels, scores, weights), expected)
    no_positive = np.where(labels == 1, 0.0, 1.0)[None]
    assert np.isnan(weighted_auroc(labels, scores, no_positive)).all()


def test_patient_resamples_move_a_patients_images_together():
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    weights = PatientResamples.draw(groups, n_boot=200, seed=0).weights
    assert weights.shape == (200, 6)
    assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 3] == weights[:, 5]).all()
    assert (weights[:, [0, 2, 3]].sum(axis=1) == 3).all()  # three patients drawn each time


def test_identical_variants_give_uniform_p_values():
    rng = np.random.default_rng(11)
    p_values = [compare_seeded(*experiment(rng, 1.0, 1.0, n_cases=120), n_boot=150, seed=i).p_value
                for i in range(100)]
    assert 0.0 <= np.mean(np.array(p_values) < 0.05) <= 0.15
    assert kstest(p_values, "uniform").pvalue > 0.01


def test_a_planted_difference_is_detected():
    rng = np.random.default_rng(12)
    results = [compare_seeded(*experiment(rng, 2.0, 0.8), n_boot=200, seed=i) for i in range(30)]
    assert np.mean([result.p_value < 0.05 for result in results]) >= 0.9
    assert all(result.difference > 0 for result in results)
    assert all(result.ci_low < result.difference < result.ci_high for result in results)


def test_seed_noise_widens_the_interval():
    rng = np.random.default_rng(13)
    quiet = compare_seeded(*experiment(rng, 1.0, 1.0, seed_spread=0.0), n_boot=200)
    noisy = compare_seeded(*experiment(rng, 1.0, 1.0, seed_spread=0.8), n_boot=200)
    assert noisy.seed_variance > 5 * quiet.seed_variance
    assert noisy.ci_high - noisy.ci_low > quiet.ci_high - quiet.ci_low
    assert len(noisy.per_seed_difference) == N_SEEDS


def test_mismatched_shapes_are_refused():
    labels, scores_a, scores_b, groups = experiment(np.random.default_rng(1), 1.0, 1.0)
    with pytest.raises(ValueError, match="same seeds and cases"):
        compare_seeded(labels, scores_a, scores_b[:2], groups)


def test_estimate_gives_the_seed_mean_its_interval_and_spread():
    rng = np.random.default_rng(14)
    labels, scores, _, groups = experiment(rng, 1.0, 1.0)
    aurocs = SeededAurocs.score(labels, scores, PatientResamples.draw(groups, 200, 0))
    result = estimate(aurocs)
    per_seed = [roc_auc_score(labels, row) for row in scores]
    assert result.mean == pytest.approx(np.mean(per_seed)) and result.per_seed == pytest.approx(per_seed)
    assert result.minimum == pytest.approx(min(per_seed)) and result.maximum == pytest.approx(max(per_seed))
    assert result.sd == pytest.approx(np.std(per_seed, ddof=1))
    assert result.ci_low < result.minimum <= result.maximum < result.ci_high  # the interval counts test cases too


def test_difference_of_a_variant_with_itself_is_exactly_zero():
    rng = np.random.default_rng(15)
    labels, scores, _, groups = experiment(rng, 1.0, 1.0)
    aurocs = SeededAurocs.score(labels, scores, PatientResamples.draw(groups, 100, 0))
    same = difference(aurocs, aurocs)
    assert (same.difference, same.p_value, same.ci_low, same.ci_high) == (0.0, 1.0, 0.0, 0.0)


def test_welch_dof_grows_as_seed_noise_shrinks():
    assert welch_dof(0.01, 0.0, 3) == np.inf
    assert welch_dof(0.0, 0.01, 3) == pytest.approx(2)  # seed noise alone: S - 1
    assert welch_dof(0.01, 0.001, 3) > welch_dof(0.01, 0.01, 3)
