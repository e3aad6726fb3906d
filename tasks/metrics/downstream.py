"""Downstream classification metrics on the real test split, per finding and averaged.

Labels are a (n, len(FINDINGS)) float array with NaN where the state is unknown (uncertain): those
cases drop out of that finding only. A finding with fewer than ``Scoring.min_cases`` test positives
or negatives has no statistic at all (DeLong's variance collapses with one or two positives, giving
an AUROC of 1 with a zero-width interval): its ``status`` says why, every statistic is None, and it is
left out of the averages, which say how many findings they cover.

Each comparison (a variant against real-only, a synthetic ratio against the best non-generative
baseline) carries its test, the minimum detectable difference of the test split (``power.py``) and
the reading of the two in words.

Two layers: ``finding_metrics`` and ``compare`` score one classifier (DeLong); ``score_variants``
scores variants trained on several seeds, which is what evaluate does: per finding the seed-averaged
AUROC with an interval counting test patients and seeds, the spread over seeds, and every comparison
by ``seeded.py`` (every variant on the same patient resamples), plus, when the ``ceiling`` variant
(more real data) is trained, the share of its gain each synthetic variant recovers (``ceiling.py``).
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
from cxrsynth.tasks.metrics import ceiling
from cxrsynth.tasks.metrics.classifiers import CEILING, REFERENCE
from cxrsynth.tasks.metrics.delong import bootstrap_auc_ci, delong_ci, delong_test
from cxrsynth.tasks.metrics.power import (
    detectable_difference,
    effect_reading,
    paired_minimum_detectable_difference,
    too_few_cases,
)
from cxrsynth.tasks.metrics.seeded import PatientResamples, SeededAurocs, difference, estimate

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
    return _highest({b: downstream_by_variant[b]["per_finding"][finding]["auroc"] for b in baselines})


def _highest(aurocs: dict[str, float | None]) -> str | None:
    scored = {name: auroc for name, auroc in aurocs.items() if auroc is not None}
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



# ------------------------------------------------------------------ variants trained on several seeds

SEEDED_STATISTICS = ("auroc", "auroc_ci_low", "auroc_ci_high", "auroc_sd", "auroc_min", "auroc_max",
                     "auroc_per_seed", "auprc", "sensitivity_at_specificity")
CEILING_KEYS = ("ceiling_share", "ceiling_share_ci_low", "ceiling_share_ci_high", "ceiling_share_status")


def non_generative(variants: Sequence[tuple[str, float]]) -> list[str]:
    """The baselines a synthetic variant must beat: ratio 0, not the more-real-data ``ceiling``."""
    return [variant for variant, ratio in variants if ratio == 0 and variant != CEILING]


def synthetic_variants(variants: Sequence[tuple[str, float]]) -> list[str]:
    return [variant for variant, ratio in variants if ratio > 0]


@dataclass(frozen=True)
class FindingScores:
    """One finding on the test split: the known 0/1 labels, why there is no statistic (or "ok"), and
    each variant's scores (seeds, known cases) with its seeded AUROCs, all on the same patient resamples."""

    labels: np.ndarray
    status: str
    scores: dict[str, np.ndarray]
    aurocs: dict[str, SeededAurocs]


def finding_scores(labels: np.ndarray, scores: dict[str, np.ndarray], groups: np.ndarray,
                   scoring: Scoring) -> FindingScores:
    """``labels`` (cases,) with NaN where unknown; ``scores`` variant -> (seeds, cases); ``groups``
    the cases' patients. Uncertain cases drop out; resamples draw from ``scoring.seed``."""
    keep = ~np.isnan(labels)
    known = labels[keep].astype(int)
    kept = {variant: np.atleast_2d(values)[:, keep].astype(np.float64) for variant, values in scores.items()}
    reason = status(labels, scoring.min_cases)
    if reason != OK:
        return FindingScores(known, reason, kept, {})
    resamples = PatientResamples.draw(np.asarray(groups)[keep], scoring.n_boot, scoring.seed)
    return FindingScores(known, OK, kept, {v: SeededAurocs.score(known, values, resamples) for v, values in kept.items()})


def seeded_finding_metrics(finding: FindingScores, variant: str, scoring: Scoring) -> dict:
    """Seed-averaged AUROC (interval: test patients and seeds), its spread over seeds, and the seed
    means of AUPRC and sensitivity at specificity; every statistic None without enough cases."""
    labels = finding.labels
    counts = {"n_positive": int((labels == 1).sum()), "n_negative": int((labels == 0).sum()), "status": finding.status}
    if finding.status != OK:
        return {**counts, **dict.fromkeys(SEEDED_STATISTICS)}
    auroc = estimate(finding.aurocs[variant], 1 - scoring.alpha)
    seeds = finding.scores[variant]
    return {
        **counts,
        "auroc": auroc.mean, "auroc_ci_low": auroc.ci_low, "auroc_ci_high": auroc.ci_high, "auroc_sd": auroc.sd,
        "auroc_min": auroc.minimum, "auroc_max": auroc.maximum, "auroc_per_seed": list(auroc.per_seed),
        "auprc": float(np.mean([average_precision_score(labels, row) for row in seeds])),
        "sensitivity_at_specificity": float(np.mean([sensitivity_at_specificity(labels, row, scoring.specificity)[0]
                                                     for row in seeds])),
    }


def interval_keys(against: str) -> tuple[str, str]:
    """The per-finding keys of a seeded comparison's interval of the difference."""
    return f"delta_ci_low_vs_{against}", f"delta_ci_high_vs_{against}"


def seeded_comparison(finding: FindingScores, variant: str, comparator: str | None, scoring: Scoring,
                      against: str = REFERENCE) -> dict[str, float | str | None]:
    """Seed-averaged AUROC(variant) - AUROC(comparator) with its interval and p (test patients and
    seeds), the smallest difference detectable with that noise, and the reading; None throughout
    without enough cases or comparator."""
    delta, p_key, detectable_key, reading_key = comparison_keys(against)
    low_key, high_key = interval_keys(against)
    if finding.status != OK or comparator is None:
        return dict.fromkeys((delta, low_key, high_key, p_key, detectable_key, reading_key))
    result = difference(finding.aurocs[variant], finding.aurocs[comparator], 1 - scoring.alpha)
    detectable = detectable_difference(result.standard_error, scoring.alpha, scoring.power, result.dof)
    return {delta: result.difference, low_key: result.ci_low, high_key: result.ci_high, p_key: result.p_value,
            detectable_key: detectable, reading_key: effect_reading(result.difference, result.p_value, detectable,
                                                                    scoring.alpha)}


def _ceiling_cells(finding: FindingScores, variant: str, scoring: Scoring) -> dict:
    if finding.status != OK:
        return {**dict.fromkeys(CEILING_KEYS[:3]), "ceiling_share_status": finding.status}
    share = ceiling.ceiling_share(finding.aurocs[variant], finding.aurocs[REFERENCE], finding.aurocs[CEILING],
                                  scoring.seed, 1 - scoring.alpha)
    return dict(zip(CEILING_KEYS, (share.share, share.ci_low, share.ci_high, share.status)))


def _score_finding(finding: FindingScores, variants: Sequence[tuple[str, float]], rare: bool,
                   scoring: Scoring) -> dict[str, dict]:
    """Every variant's cell of one finding: its metrics, the comparison with real-only, and for the
    synthetic variants the best non-generative baseline, the comparison with it and the ceiling share."""
    cells = {variant: seeded_finding_metrics(finding, variant, scoring) for variant, _ in variants}
    for variant, _ in variants:
        if variant != REFERENCE:
            cells[variant].update(seeded_comparison(finding, variant, REFERENCE, scoring))
    best = _highest({baseline: cells[baseline]["auroc"] for baseline in non_generative(variants)})
    names = dict(variants)
    for variant in synthetic_variants(variants):
        cells[variant].update({BEST_BASELINE: best, **seeded_comparison(finding, variant, best, scoring, BEST_BASELINE)})
        if rare and CEILING in names:
            cells[variant].update(_ceiling_cells(finding, variant, scoring))
    return cells


def score_variants(labels: np.ndarray, probabilities: dict[str, np.ndarray], groups: np.ndarray,
                   variants: Sequence[tuple[str, float]], rare_findings: Sequence[str], scoring: Scoring) -> dict:
    """Every variant's downstream metrics: ``probabilities`` variant -> (seeds, cases, findings), the
    same seeds in the same order for every variant; ``labels`` (cases, findings) NaN where unknown;
    ``groups`` each case's patient. Per variant: per finding, the macro and the rare-finding averages.
    Each finding's patient resamples draw from their own seed (``scoring.seed`` + its index)."""
    shapes = {variant: np.shape(values) for variant, values in probabilities.items()}
    if len(set(shapes.values())) != 1 or next(iter(shapes.values()))[1:] != labels.shape:
        raise ValueError(f"every variant needs (seeds, {labels.shape[0]}, {labels.shape[1]}) probabilities "
                         f"from the same seeds, got {shapes}")
    per_finding: dict[str, dict] = {variant: {} for variant, _ in variants}
    for index, finding in enumerate(FINDINGS):
        scores = finding_scores(labels[:, index], {v: probabilities[v][:, :, index] for v, _ in variants}, groups,
                                replace(scoring, seed=scoring.seed + index))
        for variant, cell in _score_finding(scores, variants, finding in rare_findings, scoring).items():
            per_finding[variant][finding] = cell
    return {variant: {"per_finding": cells, "macro": averages(cells, FINDINGS), "rare": averages(cells, rare_findings)}
            for variant, cells in per_finding.items()}


def operating_thresholds(labels: np.ndarray, probabilities: np.ndarray, scoring: Scoring) -> dict[str, float | None]:
    """Per finding, the threshold of one classifier's ``probabilities`` (cases, findings) at
    ``scoring.specificity`` on these labels; None where the finding has too few cases."""
    thresholds: dict[str, float | None] = {}
    for index, finding in enumerate(FINDINGS):
        if status(labels[:, index], scoring.min_cases) != OK:
            thresholds[finding] = None
            continue
        y, s = _known(labels[:, index], probabilities[:, index])
        thresholds[finding] = sensitivity_at_specificity(y, s, scoring.specificity)[1]
    return thresholds
