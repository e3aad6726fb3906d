"""Sample grids for eyes: images tiled, each beside a copy with its lesion mask outlined in red."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from cxrsynth.tasks.io import atomic_path
from cxrsynth.tasks.mosaic import mosaic

RED = np.array([255, 40, 40], dtype=np.uint8)
MIN_TILE = 128  # small images are enlarged (nearest neighbour) so a grid is readable
LABEL_WIDTH = 64
BACKGROUND = 30  # dark grey, so black image borders stay visible


def outlined(image: np.ndarray, label_map: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 of a [0, 1] image, with the border of every lesion pixel in red."""
    rgb = np.repeat((np.clip(image, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
    if label_map is not None:
        lesion = label_map > 0
        rgb[lesion & ~ndimage.binary_erosion(lesion)] = RED
    return rgb


def enlarge(rgb: np.ndarray) -> np.ndarray:
    factor = max(1, -(-MIN_TILE // rgb.shape[0]))
    return rgb.repeat(factor, axis=0).repeat(factor, axis=1)


def tile(tiles: Sequence[np.ndarray], columns: int, pad: int = 2, row_labels: Sequence[str] = ()) -> np.ndarray:
    """Lay RGB tiles of one size out in rows of ``columns``, on a dark background, each row
    optionally named in a margin on the left."""
    tiles = [enlarge(t) for t in tiles]
    canvas = mosaic(tiles, columns, pad, fill=BACKGROUND)
    if row_labels:
        height = tiles[0].shape[0]
        canvas = np.pad(canvas, ((0, 0), (LABEL_WIDTH, 0), (0, 0)), constant_values=BACKGROUND)
        image = Image.fromarray(canvas)
        draw = ImageDraw.Draw(image)
        for row, label in enumerate(row_labels):
            top = pad + row * (height + pad) + height // 2 - 6
            draw.text((4, top), label.replace("+", "+\n"), fill=(230, 230, 230))
        canvas = np.asarray(image).copy()
    return canvas


def pairs(images: Sequence[np.ndarray], label_maps: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    """Each image plain, then outlined (where it has a mask)."""
    tiles = []
    for image, label_map in zip(images, label_maps, strict=True):
        tiles += [outlined(image), outlined(image, label_map)]
    return tiles


def write_rgb(path: str | Path, rgb: np.ndarray) -> None:
    with atomic_path(path) as temp:
        Image.fromarray(rgb).save(temp, format="PNG")
