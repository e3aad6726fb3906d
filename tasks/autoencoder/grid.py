"""The reconstruction grid: real test images, their reconstructions and the magnified difference,
every lesion outlined in red, so a reader sees at once whether small lesions survive encoding."""

from __future__ import annotations

import numpy as np

from cxrsynth.tasks.diffusion.grids import outlined, tile

DIFFERENCE_GAIN = 4  # |real - reconstruction| is small; magnified so lost detail shows
ROW_LABELS = ("real", "decoded", f"|diff| x{DIFFERENCE_GAIN}")


def grid_indices(masks: np.ndarray, count: int) -> list[int]:
    """Up to ``count`` images of the (N, F, H, W) masks: for each finding in turn one image with its
    lesion not chosen yet, then the remaining images in order."""
    present = masks.reshape(*masks.shape[:2], -1).any(axis=2)
    chosen: list[int] = []
    for finding in range(masks.shape[1]):
        candidates = [row for row in np.flatnonzero(present[:, finding]) if row not in chosen]
        if candidates and len(chosen) < count:
            chosen.append(int(candidates[0]))
    return chosen + [row for row in range(len(masks)) if row not in chosen][: count - len(chosen)]


def reconstruction_grid(real: np.ndarray, reconstructed: np.ndarray, masks: np.ndarray, indices: list[int]) -> np.ndarray:
    """RGB grid with one column per chosen image: the real image, its reconstruction and their
    magnified absolute difference, each with the image's lesions (every finding) outlined."""
    if not indices:
        raise ValueError("reconstruction_grid needs at least one image")
    lesions = [masks[row].any(axis=0) for row in indices]
    difference = np.abs(real - reconstructed) * DIFFERENCE_GAIN
    tiles = [outlined(images[row], lesion) for images in (real, reconstructed, difference)
             for row, lesion in zip(indices, lesions)]
    return tile(tiles, columns=len(indices), row_labels=ROW_LABELS)
