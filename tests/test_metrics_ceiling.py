import numpy as np
import pytest
from scipy.stats import norm

from cxrsynth.tasks.metrics.ceiling import ceiling_share
from cxrsynth.tasks.metrics.seeded import PatientResamples, SeededAurocs

N_SEEDS = 3


def binormal(rng, labels, auroc, seed_spread=0.02):
    """(seeds, cases) scores whose expected AUROC is ``auroc`` (unit-variance binormal), each seed a little off."""
    separation = np.sqrt(2) * norm.ppf(auroc)
    return np.stack([(separation + seed_spread * rng.standard_normal()) * labels + rng.standard_normal(len(labels))
                     for _ in range(N_SEEDS)])


def scored(rng, aurocs, n_cases=800):
    labels = (rng.random(n_cases) < 0.4).astype(int)
    resamples = PatientResamples.draw(np.arange(n_cases) // 2, 300, 0)
    return [SeededAurocs.score(labels, binormal(rng, labels, auroc), resamples) for auroc in aurocs]


def test_half_the_ceilings_gain_is_a_share_near_one_half():
    synthetic, real_only, ceiling = scored(np.random.default_rng(0), (0.75, 0.65, 0.85))
    result = ceiling_share(synthetic, real_only, ceiling)
    assert result.status == "ok"
    assert 0.25 < result.share < 0.75
    assert result.ci_low < result.share < result.ci_high and result.ci_low < 0.5 < result.ci_high


def test_a_synthetic_variant_equal_to_real_only_recovers_nothing():
    real_only, ceiling = scored(np.random.default_rng(1), (0.65, 0.85))
    result = ceiling_share(real_only, real_only, ceiling)
    assert result.share == 0.0 and result.ci_low == pytest.approx(0.0) and result.ci_high == pytest.approx(0.0)


def test_a_ceiling_that_does_not_gain_leaves_the_share_undefined():
    synthetic, real_only, ceiling = scored(np.random.default_rng(2), (0.75, 0.7, 0.7))
    result = ceiling_share(synthetic, real_only, ceiling)
    assert result.share is None and result.ci_low is None and result.ci_high is None
    assert result.status.startswith("undefined: the ceiling's gain over real_only")
