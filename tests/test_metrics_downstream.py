import numpy as np
import pytest

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.metrics.downstream import (
    averages,
    both_classes,
    compare_to_reference,
    finding_metrics,
    roc_points,
    sensitivity_at_specificity,
    variant_metrics,
)


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
    metrics = finding_metrics(labels, scores, 0.9, n_boot=20, seed=0)
    assert metrics["auroc"] == 1 and metrics["auprc"] == 1 and metrics["sensitivity_at_specificity"] == 1
    assert metrics["n_positive"] == 2 and metrics["n_negative"] == 3  # the uncertain case is left out
    empty = finding_metrics(np.zeros(4), np.arange(4.0), 0.9, n_boot=20, seed=0)
    assert empty["auroc"] is None and empty["n_negative"] == 4
    assert not both_classes(np.array([1.0, np.nan])) and both_classes(labels)


def test_compare_to_reference():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60).astype(float)
    scores = labels + rng.normal(0, 1, 60)
    same = compare_to_reference(labels, scores, scores)
    assert same == {"delta_auroc_vs_real_only": 0.0, "p_vs_real_only": 1.0}
    better = compare_to_reference(labels, labels + rng.normal(0, 0.1, 60), scores)
    assert better["delta_auroc_vs_real_only"] > 0 and better["p_vs_real_only"] < 0.05
    assert compare_to_reference(np.zeros(5), scores[:5], scores[:5])["p_vs_real_only"] is None


def test_variant_metrics_averages_only_findings_with_both_classes():
    rng = np.random.default_rng(1)
    labels = np.zeros((40, len(FINDINGS)))
    labels[:20, FINDINGS.index("nodule")] = 1
    labels[::2, FINDINGS.index("pneumothorax")] = 1
    probabilities = np.clip(labels * 0.6 + rng.random(labels.shape) * 0.5, 0, 1)
    result = variant_metrics(labels, probabilities, probabilities, ["nodule", "pneumothorax"], 0.9, 10, 0)
    assert result["macro"]["n_findings"] == 2 and result["rare"]["n_findings"] == 2
    aurocs = [result["per_finding"][f]["auroc"] for f in ("nodule", "pneumothorax")]
    assert result["macro"]["auroc"] == pytest.approx(np.mean(aurocs))
    assert result["per_finding"]["cardiomegaly"]["auroc"] is None
    assert result["per_finding"]["nodule"]["p_vs_real_only"] == 1.0
    assert averages(result["per_finding"], ["cardiomegaly"]) == {
        "n_findings": 0, "auroc": None, "auprc": None, "sensitivity_at_specificity": None}


def test_roc_points_table():
    labels = np.zeros((6, len(FINDINGS)))
    labels[3:, 0] = 1
    table = roc_points("ratio_1", labels, np.tile(np.linspace(0, 1, 6)[:, None], (1, len(FINDINGS))))
    assert list(table.columns) == ["variant", "finding", "fpr", "tpr"]
    assert set(table["finding"]) == {FINDINGS[0]} and set(table["variant"]) == {"ratio_1"}
    assert table["fpr"].iloc[0] == 0 and table["tpr"].iloc[-1] == 1
    assert roc_points("x", np.zeros((3, len(FINDINGS))), np.zeros((3, len(FINDINGS)))).empty
