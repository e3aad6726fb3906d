import numpy as np
import pytest

from cxrsynth.tasks.metrics.diversity import embed_2d, kth_neighbour_distance, prdc


def test_identical_sets_score_about_one():
    features = np.random.default_rng(0).normal(size=(200, 8))
    result = prdc(features, features, k=5)
    assert result["precision"] == 1 and result["recall"] == 1 and result["coverage"] == 1
    assert result["density"] == pytest.approx(1.0, abs=0.25)


def test_disjoint_sets_score_zero():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(100, 8)), rng.normal(size=(100, 8)) + 50
    result = prdc(real, fake, k=5)
    assert result["precision"] == result["recall"] == result["density"] == result["coverage"] == 0


def test_mode_collapse_keeps_precision_but_loses_recall_and_coverage():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(300, 2))
    collapsed = rng.normal(scale=0.05, size=(300, 2))  # every fake in the middle of the real cloud
    result = prdc(real, collapsed, k=5)
    assert result["precision"] > 0.95 and result["recall"] < 0.2 and result["coverage"] < 0.3
    assert result["density"] > 1  # fakes crowd the real balls of the centre


def test_small_sets_and_kth_distance():
    assert prdc(np.zeros((3, 2)), np.zeros((10, 2)), k=5)["precision"] is None
    points = np.array([[0.0], [1.0], [3.0]])
    assert kth_neighbour_distance(points, 1).tolist() == [1.0, 1.0, 2.0]


def test_embedding():
    features = np.random.default_rng(3).normal(size=(20, 6))
    assert embed_2d(features, "pca", 0).shape == (20, 2)
    assert np.allclose(embed_2d(features, "tsne", 0), embed_2d(features, "tsne", 0))
    with pytest.raises(ValueError, match="evaluate.embedding"):
        embed_2d(features, "umap", 0)


@pytest.mark.parametrize("k, shift, scale", [(3, 0.0, 1.0), (5, 0.5, 1.0), (5, 0.0, 0.3), (10, 1.0, 2.0)])
def test_prdc_matches_the_authors_package(k, shift, scale):
    """Same features, same k: the values of Naeem et al.'s own implementation (the ``prdc`` package)."""
    from prdc import compute_prdc

    rng = np.random.default_rng(k)
    real = rng.normal(size=(150, 6)).astype(np.float32)
    fake = (rng.normal(size=(120, 6)) * scale + shift).astype(np.float32)
    ours = prdc(real, fake, k=k)
    theirs = compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
    for name in ("precision", "recall", "density", "coverage"):
        assert ours[name] == pytest.approx(float(theirs[name]), abs=1e-9), name
