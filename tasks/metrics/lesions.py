"""Lesion preservation and control on the synthetic set.

- condition accuracy: does the real-only classifier, at its fixed-specificity operating point on
  the real test split, call the finding that was requested (and not call one requested absent)?
- mask adherence: IoU between the conditioning mask and the lesion a segmenter trained on real
  masks finds in the synthetic image; the segmenter's IoU on real test masks is its yardstick.
- lesion SSIM: SSIM between crops around synthetic lesions and crops around real lesions of the
  same finding (all resized to one size), beside the same figure among real lesions themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure
from tqdm.auto import tqdm

from cxrsynth.models.segmenter import MaskedDiceBCELoss, build_segmenter
from cxrsynth.tasks.findings import FINDINGS

CROP_SIZE = 32
CROP_MARGIN = 0.25  # context kept around a lesion's bounding box, as a share of its side
SSIM_KERNEL = 7  # an 11-pixel window would be a third of a 32-pixel crop


def condition_accuracy(
    requested: np.ndarray, probabilities: np.ndarray, thresholds: dict[str, float | None], findings: Sequence[str]
) -> dict[str, dict[str, float | int | None]]:
    """Per finding: share of images requested with the finding that the classifier calls positive
    (``detected``), share requested without it that it calls negative, and accuracy over both."""
    result = {}
    for finding in findings:
        index = FINDINGS.index(finding)
        threshold = thresholds.get(finding)
        wanted = requested[:, index]
        present, absent = wanted == 1, wanted == 0
        if threshold is None or not (present.any() or absent.any()):
            result[finding] = {"n_requested_present": int(present.sum()), "n_requested_absent": int(absent.sum()),
                               "threshold": threshold, "detected": None, "rejected": None, "accuracy": None}
            continue
        called = probabilities[:, index] >= threshold
        correct = np.concatenate([called[present], ~called[absent]])
        result[finding] = {
            "n_requested_present": int(present.sum()), "n_requested_absent": int(absent.sum()),
            "threshold": float(threshold),
            "detected": float(called[present].mean()) if present.any() else None,
            "rejected": float((~called[absent]).mean()) if absent.any() else None,
            "accuracy": float(correct.mean()),
        }
    return result


def known_channels(masks: np.ndarray, states: np.ndarray) -> np.ndarray:
    """(N, F) bool: a channel's truth is known where its mask has pixels, or the finding is absent
    or not mentioned; a present (or uncertain) finding without mask pixels is unknown."""
    has_pixels = masks.any(axis=(2, 3))
    negative = (states == 0) | np.isnan(states)
    return has_pixels | negative


@dataclass(frozen=True)
class SegmenterTraining:
    """How the lesion segmenter behind mask adherence is fitted."""

    epochs: int
    seed: int
    batch_size: int = 16
    learning_rate: float = 1e-3


def train_segmenter(images: np.ndarray, masks: np.ndarray, known: np.ndarray, training: SegmenterTraining,
                    device: torch.device | str = "cpu") -> torch.nn.Module:
    """Fit the lesion segmenter on real (N, H, W) images and (N, F, H, W) masks, seeded."""
    epochs, seed, batch_size, learning_rate = training.epochs, training.seed, training.batch_size, training.learning_rate
    if len(images) == 0:
        raise ValueError("no real training image has a lesion mask: the segmenter cannot be trained")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_segmenter().to(device)
        generator = torch.Generator().manual_seed(seed)
        loss_fn = MaskedDiceBCELoss()
        optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
        x = torch.from_numpy(images.astype(np.float32))[:, None]
        y = torch.from_numpy(masks.astype(np.float32))
        k = torch.from_numpy(known)
        model.train()
        for _ in tqdm(range(epochs), desc="lesion segmenter", leave=False):
            for batch in torch.randperm(len(x), generator=generator).split(batch_size):
                optimiser.zero_grad()
                loss = loss_fn(model(x[batch].to(device)), y[batch].to(device), k[batch].to(device))
                loss.backward()
                optimiser.step()
    return model.eval()


def segment(model: torch.nn.Module, images: np.ndarray, batch_size: int = 64, device: torch.device | str = "cpu") -> np.ndarray:
    """(N, F, H, W) bool lesion masks (sigmoid >= 0.5)."""
    found = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start:start + batch_size].astype(np.float32))[:, None].to(device)
            found.append((torch.sigmoid(model(batch)) >= 0.5).cpu().numpy())
    return np.concatenate(found) if found else np.zeros((0, len(FINDINGS), *images.shape[1:]), bool)


def iou(predicted: np.ndarray, target: np.ndarray) -> float:
    union = np.logical_or(predicted, target).sum()
    return float(np.logical_and(predicted, target).sum() / union) if union else float("nan")


def mask_iou(predicted: np.ndarray, target: np.ndarray, findings: Sequence[str]) -> dict[str, dict]:
    """Per finding that has target pixels in some image, and over all (image, finding) pairs
    (``all``): mean IoU over the images whose target mask has that finding's pixels."""
    result, every = {}, []
    for finding in findings:
        index = FINDINGS.index(finding)
        rows = np.flatnonzero(target[:, index].any(axis=(1, 2)))
        scores = [iou(predicted[row, index], target[row, index]) for row in rows]
        every += scores
        if scores:
            result[finding] = {"n": len(rows), "iou": float(np.mean(scores))}
    result["all"] = {"n": len(every), "iou": float(np.mean(every)) if every else None}
    return result


def lesion_crop(image: np.ndarray, mask: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """The square around ``mask``'s bounding box (plus a margin), cut from ``image`` and resized."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        raise ValueError("lesion_crop needs a non-empty mask")
    centre_y, centre_x = (rows[0] + rows[-1] + 1) / 2, (cols[0] + cols[-1] + 1) / 2
    side = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) * (1 + 2 * CROP_MARGIN)
    half = max(side, 4) / 2
    height, width = image.shape
    y0, y1 = int(max(round(centre_y - half), 0)), int(min(round(centre_y + half), height))
    x0, x1 = int(max(round(centre_x - half), 0)), int(min(round(centre_x + half), width))
    crop = torch.from_numpy(np.ascontiguousarray(image[y0:y1, x0:x1], dtype=np.float32))[None, None]
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0, 0].numpy()


def lesion_crops(images: np.ndarray, masks: np.ndarray, finding: str) -> np.ndarray:
    """Crops around ``finding``'s lesion in every image whose mask has it: (n, CROP_SIZE, CROP_SIZE)."""
    index = FINDINGS.index(finding)
    crops = [lesion_crop(image, mask[index]) for image, mask in zip(images, masks) if mask[index].any()]
    return np.stack(crops) if crops else np.zeros((0, CROP_SIZE, CROP_SIZE), np.float32)


def _mean_ssim_against(crop: np.ndarray, references: np.ndarray) -> float:
    target = torch.from_numpy(references)[:, None]
    query = torch.from_numpy(crop)[None, None].expand_as(target)
    return float(structural_similarity_index_measure(query, target, data_range=1.0, kernel_size=SSIM_KERNEL,
                                                     reduction="none").mean())


def lesion_ssim(synthetic: np.ndarray, real: np.ndarray, seed: int, max_reference: int = 64) -> dict[str, float | int | None]:
    """Mean SSIM of each synthetic lesion crop against (up to ``max_reference``, seeded) real crops of
    the same finding, and the same figure of each real crop against the other real crops."""
    result: dict[str, float | int | None] = {"n_synthetic": len(synthetic), "n_real": len(real),
                                             "ssim": None, "ssim_real_vs_real": None}
    if len(real) == 0:
        return result
    rng = np.random.default_rng(seed)
    reference = real[rng.permutation(len(real))[:max_reference]]
    if len(synthetic):
        result["ssim"] = float(np.mean([_mean_ssim_against(crop, reference) for crop in synthetic]))
    if len(reference) > 1:
        result["ssim_real_vs_real"] = float(np.mean(
            [_mean_ssim_against(crop, np.delete(reference, i, axis=0)) for i, crop in enumerate(reference)]))
    return result
