"""Source image -> the square working resolution: resize keeping aspect, zero-pad the short side.

The placement (scale, pad_top, pad_left) is what the manifest records so that any source pixel
coordinate maps to the working image as ``working = source * scale + pad``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

# Lanczos in PIL widens its kernel by the reduction factor, so downscaling is anti-aliased;
# reducing_gap first box-reduces by an integer factor, which keeps large reductions fast.
RESAMPLING = Image.Resampling.LANCZOS
REDUCING_GAP = 3.0


@dataclass(frozen=True)
class Placement:
    scale: float  # working pixels per source pixel
    pad_top: int
    pad_left: int
    height: int  # of the resized image inside the square
    width: int

    def to_working(self, x: float, y: float) -> tuple[float, float]:
        """A source pixel coordinate (x right, y down) in working pixels."""
        return x * self.scale + self.pad_left, y * self.scale + self.pad_top


def placement(height: int, width: int, size: int) -> Placement:
    """Where an image of ``height`` x ``width`` lands in a ``size`` square, aspect kept, centred."""
    if height < 1 or width < 1:
        raise ValueError(f"image has no pixels ({height}x{width})")
    scale = size / max(height, width)
    resized_h = min(size, max(1, round(height * scale)))
    resized_w = min(size, max(1, round(width * scale)))
    return Placement(scale, (size - resized_h) // 2, (size - resized_w) // 2, resized_h, resized_w)


def fit_square(image: np.ndarray, size: int) -> tuple[np.ndarray, Placement]:
    """Resize a 2-D float image in [0, 1] into a zero-padded ``size`` square; return it and its placement."""
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    where = placement(*image.shape, size)
    resized = np.asarray(
        Image.fromarray(np.ascontiguousarray(image, dtype=np.float32)).resize(
            (where.width, where.height), RESAMPLING, reducing_gap=REDUCING_GAP
        ),
        dtype=np.float32,
    )
    square = np.zeros((size, size), dtype=np.float32)
    square[where.pad_top : where.pad_top + where.height, where.pad_left : where.pad_left + where.width] = np.clip(
        resized, 0.0, 1.0  # Lanczos overshoots at hard edges
    )
    return square, where
