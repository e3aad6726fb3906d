import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from cxrsynth.tasks.findings import FINDINGS, finding_index
from cxrsynth.tasks.metrics.delong import delong_ci
from cxrsynth.tasks.metrics.site_shift import seed_auroc, seed_rows, site_cell, site_drop, site_metrics
from cxrsynth.tasks.sites import site_order

PTX = finding_index("pneumothorax")


def _binormal(rng, n_per_class, separation):
    """Labels and scores whose AUROC is Phi(separation / sqrt 2): positives N(separation, 1), negatives N(0, 1)."""
    labels = np.repeat([1.0, 0.0], n_per_class)
    scores = rng.normal(0, 1, 2 * n_per_class) + separation * labels
    return labels, scores


def _two_sites(rng, n_per_class=300, separations=(2.0, 0.5)):
    """(cases, findings) labels and one variant's scores: pneumothorax separable at site-1, barely at site-2;
    every other finding all negative."""
    parts = [_binormal(rng, n_per_class, d) for d in separations]
    n = sum(len(p[0]) for p in parts)
    labels, scores = np.zeros((n, len(FINDINGS))), rng.random((n, len(FINDINGS)))
    labels[:, PTX] = np.concatenate([p[0] for p in parts])
    scores[:, PTX] = np.concatenate([p[1] for p in parts])
    sites = ["site-1"] * len(parts[0][0]) + ["site-2"] * len(parts[1][0])
    return labels, scores, sites


def test_one_seed_cell_is_the_delong_auroc_and_interval():
    labels = np.array([1, 1, 1, 0, 0, 0, 0, np.nan])
    scores = np.array([[0.9, 0.2, 0.7, 0.5, 0.1, 0.3, 0.6, 0.99]])
    cell = site_cell(labels, scores, min_cases=2)
    auc, low, high = delong_ci(labels[:7].astype(int), scores[0, :7])
    assert cell["auroc"] == pytest.approx(auc) == pytest.approx(roc_auc_score(labels[:7], scores[0, :7]))
    assert (cell["auroc_ci_low"], cell["auroc_ci_high"]) == pytest.approx((low, high))
    assert (cell["n_positive"], cell["n_negative"], cell["status"], cell["seed_sd"]) == (3, 4, "ok", 0.0)


def test_several_seeds_average_per_seed_aurocs_not_scores():
    rng = np.random.default_rng(1)
    labels, first = _binormal(rng, 40, 1.0)
    second = rng.normal(0, 1, 80) + 0.3 * labels
    result = seed_auroc(labels, np.vstack([first, second]))
    per_seed = [roc_auc_score(labels, s) for s in (first, second)]
    assert result.mean == pytest.approx(np.mean(per_seed)) and result.seed_sd == pytest.approx(np.std(per_seed, ddof=1))
    assert result.mean != pytest.approx(roc_auc_score(labels, (first + second) / 2))


def test_identical_seeds_give_the_single_run_interval():
    rng = np.random.default_rng(2)
    labels, scores = _binormal(rng, 30, 1.0)
    once, twice = site_cell(labels, scores[None], 5), site_cell(labels, np.vstack([scores, scores]), 5)
    assert twice["auroc_ci_low"] == pytest.approx(once["auroc_ci_low"]) and twice["seed_sd"] == 0.0


def test_per_site_auroc_and_drop_recover_the_binormal_truth():
    labels, scores, sites = _two_sites(np.random.default_rng(3))
    block = site_metrics(labels, {"real_only": scores}, sites, ["site-1"], min_cases=10)
    truth = {site: norm.cdf(d / np.sqrt(2)) for site, d in (("site-1", 2.0), ("site-2", 0.5))}
    per_site = block["variants"]["real_only"]["per_site"]
    for site, auroc in truth.items():
        cell = per_site[site]["pneumothorax"]
        assert cell["auroc_ci_low"] < auroc < cell["auroc_ci_high"] and cell["auroc"] == pytest.approx(auroc, abs=0.05)
    shift = block["variants"]["real_only"]["shift"]["pneumothorax"]
    assert shift["drop_ci_low"] < truth["site-1"] - truth["site-2"] < shift["drop_ci_high"] and shift["p_value"] < 1e-6
    assert shift["auroc_training_sites"] == pytest.approx(per_site["site-1"]["pneumothorax"]["auroc"])
    assert block["test_sites"] == {"site-1": {"n_images": 600, "training": True}, "site-2": {"n_images": 600, "training": False}}
    assert block["train_sites"] == ["site-1"] and block["n_without_site"] == 0


def test_no_drop_between_identical_sites():
    rng = np.random.default_rng(4)
    labels, scores = _binormal(rng, 20, 1.0)
    twice = np.concatenate([labels, labels]), np.concatenate([scores, scores])[None]
    training = np.repeat([True, False], 40)
    drop = site_drop(*twice, training, ~training, min_cases=5)
    assert drop["drop"] == 0.0 and drop["p_value"] == pytest.approx(1.0) and drop["drop_ci_low"] < 0 < drop["drop_ci_high"]


def test_min_cases_is_respected_per_site_and_per_side_of_the_drop():
    labels, scores, sites = _two_sites(np.random.default_rng(5), n_per_class=300)
    few = np.flatnonzero((np.array(sites) == "site-2") & (labels[:, PTX] == 1))[3:]
    labels[few, PTX] = 0  # site-2 keeps 3 pneumothorax positives
    block = site_metrics(labels, {"v": scores}, sites, ["site-1"], min_cases=10)
    cell = block["variants"]["v"]["per_site"]["site-2"]["pneumothorax"]
    assert cell["status"] == "too few positives (3 < 10)" and cell["n_positive"] == 3
    assert all(cell[key] is None for key in ("auroc", "auroc_ci_low", "auroc_ci_high", "seed_sd"))
    assert block["variants"]["v"]["per_site"]["site-1"]["pneumothorax"]["status"] == "ok"
    drop = block["variants"]["v"]["shift"]["pneumothorax"]
    assert drop["status"] == "other sites: too few positives (3 < 10)" and drop["drop"] is None and drop["p_value"] is None
    assert block["variants"]["v"]["shift"]["nodule"]["status"] == "training sites: too few positives (0 < 10)"


def test_without_train_sites_there_is_no_drop_and_unsited_cases_are_counted():
    labels, scores, sites = _two_sites(np.random.default_rng(6), n_per_class=20)
    sites[0] = None
    block = site_metrics(labels, {"v": scores}, sites, None, min_cases=5)
    assert block["variants"]["v"]["shift"] is None and block["n_without_site"] == 1
    assert block["test_sites"]["site-1"] == {"n_images": 39, "training": True}


def test_only_training_sites_in_test_says_so():
    labels, scores, sites = _two_sites(np.random.default_rng(7), n_per_class=20)
    block = site_metrics(labels, {"v": scores}, sites, ["site-1", "site-2"], min_cases=5)
    assert block["variants"]["v"]["shift"]["pneumothorax"]["status"] == "no test images from other sites"


def test_seed_rows_and_shape_checks():
    assert seed_rows(np.zeros((4, 3))).shape == (1, 4, 3) and seed_rows(np.zeros((2, 4, 3))).shape == (2, 4, 3)
    with pytest.raises(ValueError, match="scores must be"):
        seed_rows(np.zeros(4))
    labels = np.zeros((4, len(FINDINGS)))
    with pytest.raises(ValueError, match="v: scores"):
        site_metrics(labels, {"v": np.zeros((5, len(FINDINGS)))}, ["a"] * 4, None, 2)
    with pytest.raises(ValueError, match="3 sites for 4 test cases"):
        site_metrics(labels, {"v": np.zeros((4, len(FINDINGS)))}, ["a"] * 3, None, 2)


def test_sites_sort_naturally():
    assert site_order(["site-10", "site-2", "site-1", "site-2"]) == ["site-1", "site-2", "site-10"]
