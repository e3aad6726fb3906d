import numpy as np
import pytest

from cxrsynth.tasks.metrics.memorisation import nearest_by_correlation, nearest_by_cosine, nearest_real, summarise


def test_exact_copy_is_flagged():
    rng = np.random.default_rng(0)
    train = rng.random((10, 16, 16))
    train_features = rng.normal(size=(10, 4))
    synthetic = np.stack([train[3], rng.random((16, 16)), 0.5 * train[7] + 0.2])  # copy, noise, rescaled copy
    synthetic_features = np.stack([train_features[3], rng.normal(size=4), train_features[7]])
    nearest = nearest_real(["a", "b", "c"], synthetic_features, synthetic,
                           [f"t{i}" for i in range(10)], train_features, train)
    assert nearest.loc[0, "nearest_by_pixels"] == "t3" and nearest.loc[0, "correlation"] == pytest.approx(1.0)
    assert nearest.loc[2, "nearest_by_pixels"] == "t7" and nearest.loc[2, "correlation"] == pytest.approx(1.0)
    assert nearest.loc[0, "nearest_by_features"] == "t3" and nearest.loc[0, "cosine"] == pytest.approx(1.0)
    assert nearest.loc[1, "correlation"] < 0.5
    summary = summarise(nearest, 0.95)
    assert summary["near_copies"] == 2 and summary["n"] == 3 and summary["max_correlation"] == pytest.approx(1.0)
    assert summarise(nearest.iloc[:0], 0.95)["near_copies"] == 0


def test_search_in_blocks_matches_one_pass(monkeypatch):
    from cxrsynth.tasks.metrics import memorisation

    rng = np.random.default_rng(2)
    queries, references = rng.random((7, 8, 8)), rng.random((25, 8, 8))
    whole = nearest_by_correlation(queries, references)
    monkeypatch.setattr(memorisation, "BLOCK", 4)
    blocked = nearest_by_correlation(queries, references)
    assert (whole[0] == blocked[0]).all() and np.allclose(whole[1], blocked[1])


def test_nearest_helpers():
    index, cosine = nearest_by_cosine(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0], [2.0, 0.1]]))
    assert index.tolist() == [1] and cosine[0] > 0.99
    flat = np.zeros((1, 2, 2))  # a constant image has no correlation, and must not divide by zero
    index, correlation = nearest_by_correlation(flat, np.random.default_rng(1).random((2, 2, 2)))
    assert correlation[0] == 0
