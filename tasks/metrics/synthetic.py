"""The synthetic-set metrics, assembled from the loaded image sets and their features: fidelity,
lesion preservation and control, diversity, memorisation. Each function returns a JSON-ready dict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.metrics import diversity, fidelity, lesions, memorisation
from cxrsynth.tasks.metrics.features import FeatureNetwork
from cxrsynth.tasks.metrics.inputs import ImageSet, finding_states, mask_conditioned


@dataclass
class Features:
    """Feature rows (in the evaluation feature space) of the three image sets."""

    test: np.ndarray
    train: np.ndarray
    synthetic: np.ndarray


@dataclass
class ClassifierCalls:
    """The real-only classifier on the synthetic images: probabilities (N, F) and its per-finding
    thresholds at the evaluation specificity."""

    probabilities: np.ndarray
    thresholds: dict[str, float | None]


def finding_of(frame: pd.DataFrame, preferred: Sequence[str]) -> list[str]:
    """Each row's finding for figures and the reader study: the first ``preferred`` finding present,
    else the first finding present, else "no finding"."""
    states = finding_states(frame)
    order = [FINDINGS.index(f) for f in preferred] + list(range(len(FINDINGS)))
    names = []
    for row in states:
        present = [i for i in order if row[i] == 1]
        names.append(FINDINGS[present[0]] if present else "no finding")
    return names


def fidelity_metrics(
    network: FeatureNetwork, test: ImageSet, train: ImageSet, synthetic: ImageSet, seed: int, device: torch.device | str
) -> dict:
    """FID/KID of the synthetic set against the real test split, the same between real train and
    test (the floor two real samples reach), and SSIM/PSNR against each synthetic image's template."""
    train_position = {image_id: i for i, image_id in enumerate(train.ids)}
    templates = synthetic.frame["template_image_id"] if "template_image_id" in synthetic.frame else pd.Series(dtype=object)
    pairs = [(i, train_position[t]) for i, t in enumerate(templates) if isinstance(t, str) and t in train_position]
    first = synthetic.images[[i for i, _ in pairs]] if pairs else synthetic.images[:0]
    second = train.images[[j for _, j in pairs]] if pairs else train.images[:0]
    return {
        "feature_space": network.name,
        "synthetic_vs_real_test": fidelity.fid_kid(network, test.images, synthetic.images, seed, device=device),
        "real_train_vs_real_test": fidelity.fid_kid(network, test.images, train.images, seed, device=device),
        "template_pairs": fidelity.paired_ssim_psnr(first, second),
    }


def lesion_metrics(
    synthetic: ImageSet, train: ImageSet, test: ImageSet, calls: ClassifierCalls, rare_findings: Sequence[str],
    segmenter_training: lesions.SegmenterTraining, device: torch.device | str,
) -> dict:
    """Condition accuracy (overall and per condition type), mask adherence of the mask-conditioned
    images (with the segmenter's IoU on real test masks beside it) and lesion-region SSIM."""
    synthetic_probabilities, thresholds, seed = calls.probabilities, calls.thresholds, segmenter_training.seed
    requested = finding_states(synthetic.frame)
    conditioned = synthetic.subset(mask_conditioned(synthetic.frame))
    result = {
        "condition_accuracy": lesions.condition_accuracy(requested, synthetic_probabilities, thresholds, rare_findings),
        "condition_accuracy_by_type": _accuracy_by_condition(synthetic.frame, requested, synthetic_probabilities,
                                                             thresholds, rare_findings),
        "lesion_ssim": {finding: lesions.lesion_ssim(lesions.lesion_crops(conditioned.images, conditioned.masks, finding),
                                                     lesions.lesion_crops(train.images, train.masks, finding), seed)
                        for finding in rare_findings},
    }
    masked = train.subset(train.masks.any(axis=(1, 2, 3)))
    if len(masked) == 0:
        result["mask_adherence"] = None
        result["segmenter_on_real_test"] = None
        return result
    known = lesions.known_channels(masked.masks, finding_states(masked.frame))
    segmenter = lesions.train_segmenter(masked.images, masked.masks, known, segmenter_training, device)
    result["mask_adherence"] = lesions.mask_iou(lesions.segment(segmenter, conditioned.images, device=device),
                                                conditioned.masks, FINDINGS)
    result["segmenter_on_real_test"] = lesions.mask_iou(lesions.segment(segmenter, test.images, device=device),
                                                        test.masks, FINDINGS)
    result["segmenter_training_images"] = len(masked)
    return result


def _accuracy_by_condition(frame: pd.DataFrame, requested: np.ndarray, probabilities: np.ndarray,
                           thresholds: dict[str, float | None], findings: Sequence[str]) -> dict[str, dict]:
    """Share of images requested with each finding that the classifier calls, per condition type."""
    if "condition_type" not in frame:
        return {}
    condition = frame["condition_type"].astype("string").fillna("unknown").to_numpy()
    result = {}
    for kind in sorted(set(condition)):
        rows = condition == kind
        accuracy = lesions.condition_accuracy(requested[rows], probabilities[rows], thresholds, findings)
        result[kind] = {finding: {"n": values["n_requested_present"], "detected": values["detected"]}
                        for finding, values in accuracy.items() if values["n_requested_present"]}
    return result


def diversity_metrics(features: Features, train: ImageSet, synthetic: ImageSet, k: int, findings: Sequence[str]) -> dict:
    """PRDC of the synthetic images of each finding against the real training images of it, and overall."""
    train_states, synthetic_states = finding_states(train.frame), finding_states(synthetic.frame)
    per_finding = {}
    for finding in findings:
        index = FINDINGS.index(finding)
        per_finding[finding] = diversity.prdc(features.train[train_states[:, index] == 1],
                                              features.synthetic[synthetic_states[:, index] == 1], k)
    return {"per_finding": per_finding, "overall": diversity.prdc(features.train, features.synthetic, k)}


def memorisation_metrics(
    features: Features, synthetic: ImageSet, train: ImageSet, test: ImageSet, threshold: float
) -> tuple[dict, pd.DataFrame]:
    """Nearest training image of every synthetic image, summarised, beside the same search from the
    real test images (unrelated patients) as the baseline; plus the synthetic table itself."""
    nearest = memorisation.nearest_real(synthetic.ids, features.synthetic, synthetic.images,
                                        train.ids, features.train, train.images)
    baseline = memorisation.nearest_real(test.ids, features.test, test.images,
                                         train.ids, features.train, train.images)
    return {
        "threshold": threshold,
        "synthetic": memorisation.summarise(nearest, threshold),
        "real_test_baseline": memorisation.summarise(baseline, threshold),
    }, nearest
