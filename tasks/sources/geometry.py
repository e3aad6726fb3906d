"""Source image -> the square working resolution: resize keeping aspect, zero-pad the short side.

Where the image lands is ``tasks.masks.geometry.fit``, the one definition that lesion masks also
follow, so a source pixel maps to the working image as ``working = source * scale + pad``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from cxrsynth.tasks.masks.geometry import Geometry, fit

# Lanczos in PIL widens its kernel by the reduction factor, so downscaling is anti-aliased;
# reducing_gap first box-reduces by an integer factor, which keeps large reductions fast.
RESAMPLING = Image.Resampling.LANCZOS
REDUCING_GAP = 3.0


def fit_square(image: np.ndarray, size: int) -> tuple[np.ndarray, Geometry]:
    """Resize a 2-D float image in [0, 1] into a zero-padded ``size`` square; return it and its geometry."""
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    where = fit(*image.shape, size)
    rows, cols = where.content_shape
    resized = np.asarray(
        Image.fromarray(np.ascontiguousarray(image, dtype=np.float32)).resize(
            (cols, rows), RESAMPLING, reducing_gap=REDUCING_GAP
        ),
        dtype=np.float32,
    )
    square = np.zeros(where.shape, dtype=np.float32)
    # Lanczos overshoots at hard edges
    square[where.pad_top : where.pad_top + rows, where.pad_left : where.pad_left + cols] = np.clip(resized, 0.0, 1.0)
    return square, where
