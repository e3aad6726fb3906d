"""Same-sized images laid out in a grid: the ingest sample grid and the diffusion sample grids."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mosaic(tiles: Sequence[np.ndarray], columns: int, pad: int = 0, fill: float = 0) -> np.ndarray:
    """Tiles of one shape, (H, W) or (H, W, C), row by row ``columns`` to a row, ``pad`` pixels
    between and around them, on a background of ``fill``; the canvas has the first tile's dtype."""
    if not len(tiles):
        raise ValueError("no images to lay out")
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    first = np.asarray(tiles[0])
    height, width = first.shape[:2]
    rows = -(-len(tiles) // columns)
    canvas = np.full((rows * (height + pad) + pad, columns * (width + pad) + pad, *first.shape[2:]), fill,
                     dtype=first.dtype)
    for index, tile in enumerate(tiles):
        if np.shape(tile) != first.shape:
            raise ValueError(f"tile {index} has shape {np.shape(tile)}, the first {first.shape}")
        top, left = pad + (index // columns) * (height + pad), pad + (index % columns) * (width + pad)
        canvas[top:top + height, left:left + width] = tile
    return canvas
