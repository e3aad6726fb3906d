"""New lesion masks for generation: real training masks moved, scaled and mirrored inside the lungs.

The lung-field prior is the union of every lung lesion mask of the training split and its left-right
mirror, closed and hole-filled. Why this and not a lung segmenter: it needs no extra model or
weights, it adapts to whatever resolution and framing ingest produced, and it only admits places
where such lesions were actually seen (or their mirror image, the lungs being near-symmetric in
position), so a moved lesion never lands on the mediastinum, the abdomen or outside the body.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cxrsynth.tasks.findings import finding_index

# Findings whose lesions lie inside the lung fields (cardiomegaly's heart shadow does not).
LUNG_FINDINGS: tuple[str, ...] = ("pleural_effusion", "pneumothorax", "nodule", "atelectasis", "consolidation")
JITTER_TRIES = 25


def lung_field_prior(label_maps: Iterable[np.ndarray], findings: tuple[str, ...] = LUNG_FINDINGS) -> np.ndarray:
    """Boolean (H, W) region where lung lesions may be placed."""
    bits = np.uint8(sum(1 << finding_index(f) for f in findings))
    union = None
    for label_map in label_maps:
        lesion = (label_map & bits) > 0
        union = lesion if union is None else union | lesion
    if union is None or not union.any():
        raise ValueError("no lung lesion masks in the training split: "
                         "cannot build the lung-field prior for mask jitter")
    union |= union[:, ::-1]
    radius = max(1, round(union.shape[0] / 32))
    structure = ndimage.iterate_structure(ndimage.generate_binary_structure(2, 1), radius)
    closed = ndimage.binary_closing(np.pad(union, radius), structure)[radius:-radius, radius:-radius]
    return ndimage.binary_fill_holes(closed | union)


@dataclass(frozen=True)
class Jitter:
    shift_y: float  # pixels
    shift_x: float
    scale: float
    flip: bool

    @property
    def moved(self) -> bool:
        return self.shift_y != 0 or self.shift_x != 0 or self.scale != 1


IDENTITY = Jitter(0.0, 0.0, 1.0, False)


def transform_mask(mask: np.ndarray, jitter: Jitter) -> np.ndarray:
    """Scale ``mask`` about its centroid, shift it, then mirror it left-right if asked."""
    mask = mask.astype(bool)
    if jitter.moved and mask.any():
        centre = np.array(ndimage.center_of_mass(mask))
        shift = np.array([jitter.shift_y, jitter.shift_x])
        # affine_transform maps output coordinates o to input ones: i = (o - centre - shift) / scale + centre
        offset = centre - (centre + shift) / jitter.scale
        mask = ndimage.affine_transform(mask.astype(np.float32), np.full(2, 1 / jitter.scale), offset=offset,
                                        order=0, mode="constant", cval=0.0) > 0.5
    return mask[:, ::-1].copy() if jitter.flip else mask


def inside_share(mask: np.ndarray, region: np.ndarray) -> float:
    area = mask.sum()
    return float((mask & region).sum() / area) if area else 0.0


def draw_jitter(rng: np.random.Generator, size: int, max_shift: float, scale_range: tuple[float, float],
                flip: bool) -> Jitter:
    shift = rng.uniform(-max_shift, max_shift, 2) * size
    return Jitter(float(shift[0]), float(shift[1]), float(rng.uniform(*scale_range)), bool(flip and rng.random() < 0.5))


def jitter_mask(mask: np.ndarray, prior: np.ndarray, rng: np.random.Generator, max_shift: float,
                scale_range: tuple[float, float], flip: bool, inside: float) -> tuple[np.ndarray, Jitter]:
    """A moved copy of ``mask`` with at least ``inside`` of it in ``prior``; the mask unchanged
    (``IDENTITY``) when no draw in ``JITTER_TRIES`` fits."""
    for _ in range(JITTER_TRIES):
        jitter = draw_jitter(rng, mask.shape[0], max_shift, scale_range, flip)
        moved = transform_mask(mask, jitter)
        if moved.any() and inside_share(moved, prior) >= inside:
            return moved, jitter
    return mask.astype(bool), IDENTITY


def replace_channel(label_map: np.ndarray, finding: str, mask: np.ndarray) -> np.ndarray:
    """``label_map`` with ``finding``'s bit set exactly on ``mask``."""
    bit = np.uint8(1 << finding_index(finding))
    return (label_map & ~bit) | (mask.astype(np.uint8) * bit)


def mirror(label_map: np.ndarray) -> np.ndarray:
    return label_map[:, ::-1].copy()


SWAPPED_SIDE = {"left": "right", "right": "left"}


def swap_laterality(laterality: str | None) -> str | None:
    return SWAPPED_SIDE.get(laterality, laterality)

