import numpy as np
import pytest

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.metrics.downstream import (
    STATISTICS,
    Scoring,
    averages,
    best_baseline,
    CEILING_KEYS,
    SEEDED_STATISTICS,
    compare,
    finding_metrics,
    non_generative,
    operating_thresholds,
    roc_points,
    score_variants,
    sensitivity_at_specificity,
    status,
    variant_metrics,
    with_best_baseline_comparisons,
)
from cxrsynth.tasks.metrics.power import HELPS, HURTS, NO_DETECTABLE_EFFECT, paired_minimum_detectable_difference

SCORING = Scoring(specificity=0.9, n_boot=20, seed=0, min_cases=2)


def test_sensitivity_at_specificity_hand_case():
    # Negatives score 0.0..0.9; positives 0.95, 0.85, 0.5, 0.05. At >= 90% specificity the threshold
    # 0.85 lets one negative (0.9) through (specificity 0.9) and catches 0.95 and 0.85: sensitivity 0.5.
    scores = np.array([i / 10 for i in range(10)] + [0.95, 0.85, 0.5, 0.05])
    labels = np.array([0] * 10 + [1] * 4)
    assert sensitivity_at_specificity(labels, scores, 0.9) == pytest.approx((0.5, 0.85))
    # At >= 95% no negative may pass: only 0.95 is caught.
    assert sensitivity_at_specificity(labels, scores, 0.95) == pytest.approx((0.25, 0.95))


def test_finding_metrics_perfect_and_one_class():
    labels = np.array([0, 0, 0, 1, 1, np.nan])
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9, 0.0])
    metrics = finding_metrics(labels, scores, SCORING)
    assert metrics["auroc"] == 1 and metrics["auprc"] == 1 and metrics["sensitivity_at_specificity"] == 1
    assert metrics["n_positive"] == 2 and metrics["n_negative"] == 3  # the uncertain case is left out
    assert metrics["status"] == "ok"
    empty = finding_metrics(np.zeros(4), np.arange(4.0), SCORING)
    assert empty["auroc"] is None and empty["n_negative"] == 4 and empty["status"] == "too few positives (0 < 2)"


def test_one_positive_prints_no_statistic():
    """The tiny profile's case: one test positive ranked first. DeLong would say AUROC 1.000 [1.000,
    1.000]; below min_cases the finding reports why instead, and no statistic at all."""
    labels = np.r_[1.0, np.zeros(40), np.nan]
    scores = np.r_[0.99, np.linspace(0, 0.5, 40), 0.3]
    metrics = finding_metrics(labels, scores, Scoring(0.9, 20, 0, min_cases=10))
    assert metrics["status"] == "too few positives (1 < 10)"
    assert {key: metrics[key] for key in STATISTICS} == dict.fromkeys(STATISTICS)
    assert (metrics["n_positive"], metrics["n_negative"]) == (1, 40)
    comparison = compare(labels, scores, scores[::-1].copy(), Scoring(0.9, 20, 0, min_cases=10))
    assert set(comparison.values()) == {None}
    assert status(np.r_[np.ones(12), np.zeros(3)], 10) == "too few negatives (3 < 10)"


def test_scoring_refuses_a_minimum_delong_cannot_use():
    with pytest.raises(ValueError, match="min_cases must be at least 2"):
        Scoring(0.9, 0, 0, min_cases=1)


def test_compare_tests_and_states_the_detectable_difference():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60).astype(float)
    scores = labels + rng.normal(0, 1, 60)
    same = compare(labels, scores, scores, SCORING)
    assert same["delta_auroc_vs_real_only"] == 0.0 and same["p_vs_real_only"] == 1.0
    assert same["reading_vs_real_only"] == NO_DETECTABLE_EFFECT
    better = compare(labels, labels + rng.normal(0, 0.1, 60), scores, SCORING)
    assert better["delta_auroc_vs_real_only"] > 0 and better["p_vs_real_only"] < 0.05
    assert better["reading_vs_real_only"] == HELPS
    worse = compare(labels, scores, labels + rng.normal(0, 0.1, 60), SCORING, against="best_baseline")
    assert worse["reading_vs_best_baseline"] == HURTS and worse["p_vs_best_baseline"] < 0.05
    noisy = labels + rng.normal(0, 1, 60)  # as good as ``scores``: a small, non-significant difference
    close = compare(labels, noisy, scores, SCORING)
    assert close["min_detectable_difference_vs_real_only"] == pytest.approx(
        paired_minimum_detectable_difference(labels.astype(int), scores, noisy))  # the comparator is the reference
    assert 0 < close["min_detectable_difference_vs_real_only"] < 0.5
    assert compare(np.zeros(5), scores[:5], scores[:5], SCORING)["p_vs_real_only"] is None


def test_variant_metrics_averages_only_findings_with_enough_cases():
    rng = np.random.default_rng(1)
    labels = np.zeros((40, len(FINDINGS)))
    labels[:20, FINDINGS.index("nodule")] = 1
    labels[::2, FINDINGS.index("pneumothorax")] = 1
    labels[:3, FINDINGS.index("pleural_effusion")] = 1  # below min_cases: no statistic, not averaged
    probabilities = np.clip(labels * 0.6 + rng.random(labels.shape) * 0.5, 0, 1)
    result = variant_metrics(labels, probabilities, probabilities, ["nodule", "pneumothorax", "pleural_effusion"],
                             Scoring(0.9, 10, 0, min_cases=10))
    assert result["macro"]["n_findings"] == 2 and result["rare"]["n_findings"] == 2
    aurocs = [result["per_finding"][f]["auroc"] for f in ("nodule", "pneumothorax")]
    assert result["macro"]["auroc"] == pytest.approx(np.mean(aurocs))
    assert result["per_finding"]["cardiomegaly"]["auroc"] is None
    effusion = result["per_finding"]["pleural_effusion"]
    assert effusion["status"] == "too few positives (3 < 10)" and effusion["p_vs_real_only"] is None
    assert effusion["min_detectable_difference_vs_real_only"] is None and effusion["auroc"] is None
    nodule = result["per_finding"]["nodule"]
    assert nodule["p_vs_real_only"] == 1.0 and nodule["reading_vs_real_only"] == NO_DETECTABLE_EFFECT
    assert nodule["min_detectable_difference_vs_real_only"] == 0.0  # identical scores: correlation 1
    assert averages(result["per_finding"], ["cardiomegaly"]) == {
        "n_findings": 0, "auroc": None, "auprc": None, "sensitivity_at_specificity": None}


def test_every_ratio_is_compared_with_the_best_baseline_of_each_finding():
    rng = np.random.default_rng(2)
    labels = np.zeros((80, len(FINDINGS)))
    labels[:30, FINDINGS.index("nodule")] = 1
    labels[:2, FINDINGS.index("pneumothorax")] = 1  # too few positives at min_cases 10
    noise = {name: rng.normal(0, 1, labels.shape) for name in ("real_only", "class_weighting", "ratio_1")}
    probabilities = {"real_only": labels * 0.2 + noise["real_only"], "class_weighting": labels * 2 + noise["class_weighting"],
                     "ratio_1": labels * 1 + noise["ratio_1"]}
    variants = [("real_only", 0.0), ("class_weighting", 0.0), ("ratio_1", 1.0)]
    scoring = Scoring(0.9, 0, 0, min_cases=10)
    by_variant = {v: variant_metrics(labels, p, None if v == "real_only" else probabilities["real_only"], ["nodule"], scoring)
                  for v, p in probabilities.items()}
    assert best_baseline(by_variant, ["real_only", "class_weighting"], "nodule") == "class_weighting"
    assert best_baseline(by_variant, ["real_only", "class_weighting"], "pneumothorax") is None
    result = with_best_baseline_comparisons(by_variant, labels, probabilities, variants, scoring)
    nodule = result["ratio_1"]["per_finding"]["nodule"]
    expected = compare(labels[:, FINDINGS.index("nodule")], probabilities["ratio_1"][:, FINDINGS.index("nodule")],
                       probabilities["class_weighting"][:, FINDINGS.index("nodule")], scoring, "best_baseline")
    assert nodule["best_baseline"] == "class_weighting" and nodule["delta_auroc_vs_best_baseline"] < 0
    assert {k: nodule[k] for k in expected} == expected
    assert nodule["delta_auroc_vs_real_only"] > 0  # the real-only comparison is kept beside it
    pneumothorax = result["ratio_1"]["per_finding"]["pneumothorax"]
    assert pneumothorax["best_baseline"] is None and pneumothorax["p_vs_best_baseline"] is None
    assert "best_baseline" not in result["class_weighting"]["per_finding"]["nodule"]  # baselines: vs real-only only
    assert "best_baseline" not in by_variant["ratio_1"]["per_finding"]["nodule"]  # the input is left as it was


def test_roc_points_table():
    labels = np.zeros((6, len(FINDINGS)))
    labels[3:, 0] = 1
    table = roc_points("ratio_1", labels, np.tile(np.linspace(0, 1, 6)[:, None], (1, len(FINDINGS))), min_cases=2)
    assert list(table.columns) == ["variant", "finding", "fpr", "tpr"]
    assert set(table["finding"]) == {FINDINGS[0]} and set(table["variant"]) == {"ratio_1"}
    assert table["fpr"].iloc[0] == 0 and table["tpr"].iloc[-1] == 1
    assert roc_points("x", np.zeros((3, len(FINDINGS))), np.zeros((3, len(FINDINGS))), min_cases=2).empty
    assert roc_points("x", labels, np.zeros((6, len(FINDINGS))), min_cases=4).empty  # 3 positives: no curve


SEEDED_VARIANTS = [("real_only", 0.0), ("class_weighted", 0.0), ("ceiling", 0.0), ("ratio_1", 1.0)]


def seeded_project(n_cases=200, n_seeds=3, seed=3):
    """Test labels (nodule common, pneumothorax 3 positives), patients of two images, and per variant
    (seeds, cases, findings) probabilities: the ceiling best, class weighting next, ratio_1 and real-only weakest."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((n_cases, len(FINDINGS)))
    labels[: n_cases // 3, FINDINGS.index("nodule")] = 1
    labels[:3, FINDINGS.index("pneumothorax")] = 1
    labels[n_cases - 5:, FINDINGS.index("nodule")] = np.nan  # uncertain: left out of nodule only
    strength = {"real_only": 0.3, "class_weighted": 1.2, "ceiling": 3.0, "ratio_1": 0.3}
    probabilities = {variant: np.stack([np.nan_to_num(labels) * strength[variant] + rng.normal(0, 1, labels.shape)
                                        for _ in range(n_seeds)]) for variant, _ in SEEDED_VARIANTS}
    return labels, probabilities, np.arange(n_cases) // 2


def test_score_variants_seed_means_spread_and_comparisons():
    labels, probabilities, groups = seeded_project()
    scoring = Scoring(0.9, 200, 0, min_cases=10)
    result = score_variants(labels, probabilities, groups, SEEDED_VARIANTS, ["nodule", "pneumothorax"], scoring)
    nodule = FINDINGS.index("nodule")
    known = ~np.isnan(labels[:, nodule])
    ratio = result["ratio_1"]["per_finding"]["nodule"]
    per_seed = [finding_metrics(labels[:, nodule], row[:, nodule], scoring)["auroc"] for row in probabilities["ratio_1"]]
    assert ratio["auroc"] == pytest.approx(np.mean(per_seed)) and ratio["auroc_per_seed"] == pytest.approx(per_seed)
    assert ratio["auroc_min"] <= ratio["auroc"] <= ratio["auroc_max"] and ratio["auroc_sd"] > 0
    assert ratio["auroc_ci_low"] < ratio["auroc"] < ratio["auroc_ci_high"]
    assert ratio["n_positive"] + ratio["n_negative"] == known.sum()
    # ceiling is not a non-generative baseline: the best one is class weighting, which ratio_1 trails
    assert non_generative(SEEDED_VARIANTS) == ["real_only", "class_weighted"]
    assert ratio["best_baseline"] == "class_weighted"
    assert ratio["reading_vs_best_baseline"] == HURTS and ratio["delta_ci_high_vs_best_baseline"] < 0
    assert ratio["min_detectable_difference_vs_best_baseline"] > 0
    assert ratio["p_vs_real_only"] > 0.05 and ratio["delta_ci_low_vs_real_only"] < 0 < ratio["delta_ci_high_vs_real_only"]
    ceiling = result["ceiling"]["per_finding"]["nodule"]
    assert ceiling["reading_vs_real_only"] == HELPS and "best_baseline" not in ceiling
    assert ratio["ceiling_share_status"] == "ok" and abs(ratio["ceiling_share"]) < 0.3  # ratio_1 is real-only's equal
    assert "p_vs_real_only" not in result["real_only"]["per_finding"]["nodule"]
    assert "ceiling_share" not in result["ratio_1"]["per_finding"]["cardiomegaly"]  # rare findings only


def test_score_variants_prints_nothing_where_too_few_positives():
    labels, probabilities, groups = seeded_project()
    result = score_variants(labels, probabilities, groups, SEEDED_VARIANTS, ["nodule", "pneumothorax"],
                            Scoring(0.9, 50, 0, min_cases=10))
    cell = result["ratio_1"]["per_finding"]["pneumothorax"]
    assert cell["status"] == "too few positives (3 < 10)"
    assert {key: cell[key] for key in SEEDED_STATISTICS} == dict.fromkeys(SEEDED_STATISTICS)
    assert cell["p_vs_real_only"] is None and cell["p_vs_best_baseline"] is None and cell["best_baseline"] is None
    assert {key: cell[key] for key in CEILING_KEYS} == {**dict.fromkeys(CEILING_KEYS[:3]),
                                                        "ceiling_share_status": "too few positives (3 < 10)"}
    assert result["ratio_1"]["rare"]["n_findings"] == 1


def test_score_variants_refuses_unpaired_seeds():
    labels, probabilities, groups = seeded_project()
    probabilities["ratio_1"] = probabilities["ratio_1"][:2]
    with pytest.raises(ValueError, match="from the same seeds"):
        score_variants(labels, probabilities, groups, SEEDED_VARIANTS, ["nodule"], SCORING)


def test_operating_thresholds_only_where_a_finding_is_scored():
    labels, probabilities, _ = seeded_project()
    thresholds = operating_thresholds(labels, probabilities["real_only"][0], Scoring(0.9, 0, 0, min_cases=10))
    nodule = FINDINGS.index("nodule")
    expected = sensitivity_at_specificity(labels[:195, nodule], probabilities["real_only"][0][:195, nodule], 0.9)[1]
    assert thresholds["nodule"] == pytest.approx(expected) and thresholds["pneumothorax"] is None
