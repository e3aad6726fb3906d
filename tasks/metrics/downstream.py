"""Downstream classification metrics on the real test split, per finding and averaged.

Labels are a (n, len(FINDINGS)) float array with NaN where the state is unknown (uncertain): those
cases drop out of that finding only. A finding with fewer than ``Scoring.min_cases`` test positives
or negatives has no statistic at all (DeLong's variance collapses with one or two positives, giving
an AUROC of 1 with a zero-width interval): its ``status`` says why, every statistic is None, and it is
left out of the averages, which say how many findings they cover.

Each comparison (a variant against real-only, a synthetic ratio against the best non-generative
baseline) carries the paired DeLong test, the minimum detectable difference of the test split
(``power.py``) and the reading of the two in words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score, roc_curve
from torchmetrics.functional.classification import binary_sensitivity_at_specificity

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.metrics.classifiers import REFERENCE
from cxrsynth.tasks.metrics.delong import bootstrap_auc_ci, delong_ci, delong_test
from cxrsynth.tasks.metrics.power import effect_reading, paired_minimum_detectable_difference, too_few_cases

AVERAGED = ("auroc", "auprc", "sensitivity_at_specificity")
STATISTICS = ("auroc", "auroc_ci_low", "auroc_ci_high", "auroc_boot_low", "auroc_boot_high", "auprc",
              "sensitivity_at_specificity", "threshold_at_specificity")
OK = "ok"
BEST_BASELINE = "best_baseline"


@dataclass(frozen=True)
class Scoring:
    """How each finding is scored: the operating point's specificity, the bootstrap (rounds, seed),
    the fewest test positives and negatives a statistic needs, and the level and power at which the
    minimum detectable difference is planned (the issue fixes 0.05 and 80 %)."""

    specificity: float
    n_boot: int
    seed: int
    min_cases: int
    alpha: float = 0.05
    power: float = 0.8

    def __post_init__(self):
        if self.min_cases < 2:  # DeLong's variance needs two cases of each class
            raise ValueError(f"min_cases must be at least 2, got {self.min_cases}")


def _known(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = ~np.isnan(labels)
    return labels[keep].astype(int), scores[keep].astype(np.float64)


def status(labels: np.ndarray, min_cases: int) -> str:
    """"ok", or why the finding's test labels (NaN: unknown) support no statistic."""
    known = labels[~np.isnan(labels)]
    return too_few_cases(known, min_cases) or OK


def sensitivity_at_specificity(labels: np.ndarray, scores: np.ndarray, specificity: float) -> tuple[float, float]:
    """(sensitivity, threshold): the best sensitivity among operating points whose specificity is
    at least ``specificity`` (torchmetrics), scoring ``score >= threshold`` as positive."""
    sensitivity, threshold = binary_sensitivity_at_specificity(
        torch.as_tensor(scores, dtype=torch.float64), torch.as_tensor(labels, dtype=torch.long), specificity
    )
    return float(sensitivity), float(threshold)


def finding_metrics(labels: np.ndarray, scores: np.ndarray, scoring: Scoring) -> dict[str, float | int | str | None]:
    """AUROC with DeLong and bootstrap intervals, AUPRC and sensitivity at specificity, one finding;
    every statistic None when ``status`` is not "ok"."""
    y, s = _known(labels, scores)
    counts = {"n_positive": int((y == 1).sum()), "n_negative": int((y == 0).sum()),
              "status": status(labels, scoring.min_cases)}
    if counts["status"] != OK:
        return {**counts, **dict.fromkeys(STATISTICS)}
    auc, low, high = delong_ci(y, s)
    boot_low, boot_high = bootstrap_auc_ci(y, s, scoring.n_boot, scoring.seed)
    sensitivity, threshold = sensitivity_at_specificity(y, s, scoring.specificity)
    return {
        **counts,
        "auroc": auc, "auroc_ci_low": low, "auroc_ci_high": high,
        "auroc_boot_low": None if np.isnan(boot_low) else boot_low,
        "auroc_boot_high": None if np.isnan(boot_high) else boot_high,
        "auprc": float(average_precision_score(y, s)),
        "sensitivity_at_specificity": sensitivity,
        "threshold_at_specificity": threshold,
    }


def comparison_keys(against: str) -> tuple[str, str, str, str]:
    """The per-finding keys of a comparison: difference, p, minimum detectable difference, reading."""
    return (f"delta_auroc_vs_{against}", f"p_vs_{against}", f"min_detectable_difference_vs_{against}",
            f"reading_vs_{against}")


def compare(labels: np.ndarray, scores: np.ndarray, comparator: np.ndarray, scoring: Scoring,
            against: str = REFERENCE) -> dict[str, float | str | None]:
    """Paired DeLong test of AUROC(scores) - AUROC(comparator) on the same cases, the smallest
    difference the split detects (the comparator's DeLong variance, the pair's correlation) and
    the reading of the two; all None when the finding's status is not "ok"."""
    keys = comparison_keys(against)
    if status(labels, scoring.min_cases) != OK:
        return dict.fromkeys(keys)
    keep = ~np.isnan(labels)
    y, a, b = labels[keep].astype(int), scores[keep], comparator[keep]
    test = delong_test(y, a, b)
    detectable = paired_minimum_detectable_difference(y, b, a, scoring.alpha, scoring.power)
    reading = effect_reading(test.difference, test.p_value, detectable, scoring.alpha)
    return dict(zip(keys, (test.difference, test.p_value, detectable, reading)))


def averages(per_finding: dict[str, dict], findings: Sequence[str]) -> dict[str, float | int | None]:
    """Mean of each averaged metric over ``findings`` that have both classes in the test split."""
    usable = [f for f in findings if per_finding[f]["auroc"] is not None]
    summary: dict[str, float | int | None] = {"n_findings": len(usable)}
    for name in AVERAGED:
        summary[name] = float(np.mean([per_finding[f][name] for f in usable])) if usable else None
    return summary


def variant_metrics(labels: np.ndarray, probabilities: np.ndarray, reference: np.ndarray | None,
                    rare_findings: Sequence[str], scoring: Scoring) -> dict[str, dict]:
    """Every downstream metric of one variant: per finding (with the comparison against
    ``reference``, the real-only probabilities, when given), the macro average and the rare-finding
    average. Each finding's bootstrap draws from its own seed (``scoring.seed`` + its index)."""
    per_finding: dict[str, dict] = {}
    for index, finding in enumerate(FINDINGS):
        finding_scoring = replace(scoring, seed=scoring.seed + index)
        metrics = finding_metrics(labels[:, index], probabilities[:, index], finding_scoring)
        if reference is not None:
            metrics.update(compare(labels[:, index], probabilities[:, index], reference[:, index], scoring))
        per_finding[finding] = metrics
    return {
        "per_finding": per_finding,
        "macro": averages(per_finding, FINDINGS),
        "rare": averages(per_finding, rare_findings),
    }


def best_baseline(downstream_by_variant: dict, baselines: Sequence[str], finding: str) -> str | None:
    """The non-generative baseline (real-only included) with the highest AUROC on ``finding``; None
    when no baseline has one. Ties go to the first named."""
    scored = {b: downstream_by_variant[b]["per_finding"][finding]["auroc"] for b in baselines}
    scored = {b: auroc for b, auroc in scored.items() if auroc is not None}
    return max(scored, key=scored.get) if scored else None


def with_best_baseline_comparisons(downstream_by_variant: dict, labels: np.ndarray, probabilities: dict[str, np.ndarray],
                                   variants: Sequence[tuple[str, float]], scoring: Scoring) -> dict:
    """``downstream_by_variant`` with every synthetic ratio (ratio > 0) compared, finding by finding,
    to the best non-generative baseline: ``best_baseline`` names it, the ``*_vs_best_baseline`` keys
    hold the comparison (None where the finding has too few cases)."""
    baselines = [variant for variant, ratio in variants if ratio == 0]
    result = {variant: {**metrics, "per_finding": dict(metrics["per_finding"])}
              for variant, metrics in downstream_by_variant.items()}
    for index, finding in enumerate(FINDINGS):
        best = best_baseline(downstream_by_variant, baselines, finding)
        for variant in (v for v, ratio in variants if ratio > 0):
            comparison = (compare(labels[:, index], probabilities[variant][:, index], probabilities[best][:, index],
                                  scoring, BEST_BASELINE)
                          if best is not None else dict.fromkeys(comparison_keys(BEST_BASELINE)))
            result[variant]["per_finding"][finding] = {**result[variant]["per_finding"][finding],
                                                       BEST_BASELINE: best, **comparison}
    return result


def roc_points(variant: str, labels: np.ndarray, probabilities: np.ndarray, min_cases: int) -> pd.DataFrame:
    """ROC curve points of every finding with at least ``min_cases`` test positives and negatives
    (the others have no statistic): columns variant, finding, fpr, tpr."""
    frames = []
    for index, finding in enumerate(FINDINGS):
        if status(labels[:, index], min_cases) != OK:
            continue
        y, s = _known(labels[:, index], probabilities[:, index])
        fpr, tpr, _ = roc_curve(y, s)
        frames.append(pd.DataFrame({"variant": variant, "finding": finding, "fpr": fpr, "tpr": tpr}))
    if not frames:
        return pd.DataFrame(columns=["variant", "finding", "fpr", "tpr"])
    return pd.concat(frames, ignore_index=True)

