"""Downstream classification metrics on the real test split, per finding and averaged.

Labels are a (n, len(FINDINGS)) float array with NaN where the state is unknown (uncertain): those
cases drop out of that finding only. A finding whose test cases are all of one class has no AUROC;
it is reported with None and left out of the averages, which say how many findings they cover.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score, roc_curve
from torchmetrics.functional.classification import binary_sensitivity_at_specificity

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.metrics.delong import bootstrap_auc_ci, delong_ci, delong_test

AVERAGED = ("auroc", "auprc", "sensitivity_at_specificity")


def _known(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = ~np.isnan(labels)
    return labels[keep].astype(int), scores[keep].astype(np.float64)


def both_classes(labels: np.ndarray) -> bool:
    known = labels[~np.isnan(labels)]
    return bool((known == 1).any() and (known == 0).any())


def sensitivity_at_specificity(labels: np.ndarray, scores: np.ndarray, specificity: float) -> tuple[float, float]:
    """(sensitivity, threshold): the best sensitivity among operating points whose specificity is
    at least ``specificity`` (torchmetrics), scoring ``score >= threshold`` as positive."""
    sensitivity, threshold = binary_sensitivity_at_specificity(
        torch.as_tensor(scores, dtype=torch.float64), torch.as_tensor(labels, dtype=torch.long), specificity
    )
    return float(sensitivity), float(threshold)


def finding_metrics(
    labels: np.ndarray, scores: np.ndarray, specificity: float, n_boot: int, seed: int
) -> dict[str, float | int | None]:
    """AUROC with DeLong and bootstrap intervals, AUPRC and sensitivity at specificity, one finding."""
    y, s = _known(labels, scores)
    counts = {"n_positive": int((y == 1).sum()), "n_negative": int((y == 0).sum())}
    if not both_classes(labels):
        return {**counts, **dict.fromkeys(
            ("auroc", "auroc_ci_low", "auroc_ci_high", "auroc_boot_low", "auroc_boot_high",
             "auprc", "sensitivity_at_specificity", "threshold_at_specificity"))}
    auc, low, high = delong_ci(y, s)
    boot_low, boot_high = bootstrap_auc_ci(y, s, n_boot, seed)
    sensitivity, threshold = sensitivity_at_specificity(y, s, specificity)
    return {
        **counts,
        "auroc": auc, "auroc_ci_low": low, "auroc_ci_high": high,
        "auroc_boot_low": None if np.isnan(boot_low) else boot_low,
        "auroc_boot_high": None if np.isnan(boot_high) else boot_high,
        "auprc": float(average_precision_score(y, s)),
        "sensitivity_at_specificity": sensitivity,
        "threshold_at_specificity": threshold,
    }


def compare_to_reference(labels: np.ndarray, scores: np.ndarray, reference: np.ndarray) -> dict[str, float | None]:
    """Paired DeLong test of a variant's AUROC against the reference's on the same cases."""
    if not both_classes(labels):
        return {"delta_auroc_vs_real_only": None, "p_vs_real_only": None}
    keep = ~np.isnan(labels)
    test = delong_test(labels[keep].astype(int), scores[keep], reference[keep])
    return {"delta_auroc_vs_real_only": test.difference, "p_vs_real_only": test.p_value}


def averages(per_finding: dict[str, dict], findings: Sequence[str]) -> dict[str, float | int | None]:
    """Mean of each averaged metric over ``findings`` that have both classes in the test split."""
    usable = [f for f in findings if per_finding[f]["auroc"] is not None]
    summary: dict[str, float | int | None] = {"n_findings": len(usable)}
    for name in AVERAGED:
        summary[name] = float(np.mean([per_finding[f][name] for f in usable])) if usable else None
    return summary


def variant_metrics(
    labels: np.ndarray,
    probabilities: np.ndarray,
    reference: np.ndarray | None,
    rare_findings: Sequence[str],
    specificity: float,
    n_boot: int,
    seed: int,
) -> dict[str, dict]:
    """Every downstream metric of one variant: per finding (with the test against ``reference``,
    the real-only probabilities, when given), the macro average and the rare-finding average."""
    per_finding: dict[str, dict] = {}
    for index, finding in enumerate(FINDINGS):
        metrics = finding_metrics(labels[:, index], probabilities[:, index], specificity, n_boot, seed + index)
        if reference is not None:
            metrics.update(compare_to_reference(labels[:, index], probabilities[:, index], reference[:, index]))
        per_finding[finding] = metrics
    return {
        "per_finding": per_finding,
        "macro": averages(per_finding, FINDINGS),
        "rare": averages(per_finding, rare_findings),
    }


def roc_points(variant: str, labels: np.ndarray, probabilities: np.ndarray) -> pd.DataFrame:
    """ROC curve points of every finding with both classes: columns variant, finding, fpr, tpr."""
    frames = []
    for index, finding in enumerate(FINDINGS):
        if not both_classes(labels[:, index]):
            continue
        y, s = _known(labels[:, index], probabilities[:, index])
        fpr, tpr, _ = roc_curve(y, s)
        frames.append(pd.DataFrame({"variant": variant, "finding": finding, "fpr": fpr, "tpr": tpr}))
    if not frames:
        return pd.DataFrame(columns=["variant", "finding", "fpr", "tpr"])
    return pd.concat(frames, ignore_index=True)

