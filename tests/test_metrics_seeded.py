import numpy as np
import pytest
from scipy.stats import kstest
from sklearn.metrics import roc_auc_score

from cxrsynth.tasks.metrics.seeded import auroc_rows, compare_seeded

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


def test_auroc_rows_matches_sklearn():
    rng = np.random.default_rng(0)
    labels = (rng.random(50) < 0.3).astype(int)
    scores = rng.standard_normal((4, 50)).round(1)  # ties included
    assert np.allclose(auroc_rows(labels, scores), [roc_auc_score(labels, row) for row in scores])


def test_identical_variants_give_uniform_p_values():
    rng = np.random.default_rng(11)
    p_values = [compare_seeded(*experiment(rng, 1.0, 1.0), n_boot=150, seed=i).p_value for i in range(80)]
    assert 0.0 <= np.mean(np.array(p_values) < 0.05) <= 0.10
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
