"""A source localisation to one binary lesion mask at the working resolution, on the ingested image.

Ingest resizes every source image by ``scale`` (aspect kept) and zero-pads it into the working
canvas, so a point maps as ``working = source * scale + pad``, in continuous pixel-edge coordinates
(pixel ``(r, c)`` covers ``[r, r+1) x [c, c+1)``). Each kind of localisation follows that map:

- box ``"x,y,w,h"``: rasterised at working resolution; a pixel is in the mask when the box covers at
  least half of it (what area-resampling the box and thresholding at 0.5 gives, without the detour);
- polygon ``"x1,y1;x2,y2;..."``: rasterised at working resolution; a pixel is in when its centre is;
- RLE and mask files: decoded at the source size, area-resampled like the image, thresholded at 0.5.

Every bad input raises ValueError saying what is wrong, without echoing file paths (a source's
paths can embed patient identifiers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.path import Path as PolygonPath
from PIL import Image, UnidentifiedImageError

from cxrsynth.tasks.masks.rle import decode_rle

KINDS = ("box", "rle", "polygon", "mask")
THRESHOLD = 0.5  # area share of a working pixel that makes it lesion


@dataclass(frozen=True)
class Geometry:
    """Where a source image sits on its working canvas (the manifest's ingest columns + the canvas size)."""

    orig_height: int
    orig_width: int
    scale: float  # working pixels per source pixel
    pad_top: int
    pad_left: int
    height: int  # working canvas
    width: int

    def __post_init__(self) -> None:
        if self.orig_height < 1 or self.orig_width < 1 or not self.scale > 0:
            raise ValueError(f"source size {self.orig_height}x{self.orig_width} at scale {self.scale} is not a valid geometry")
        top, left = self.pad_top, self.pad_left
        rows, cols = self.content_shape
        if top < 0 or left < 0 or top + rows > self.height or left + cols > self.width:
            raise ValueError(
                f"source {self.orig_height}x{self.orig_width} scaled by {self.scale:g} and padded by "
                f"({top}, {left}) does not fit the {self.height}x{self.width} working image"
            )

    @classmethod
    def of_row(cls, row: Mapping, canvas_shape: tuple[int, int]) -> "Geometry":
        """The geometry of a manifest row whose working image has ``canvas_shape``."""
        return cls(
            orig_height=int(row["orig_height"]),
            orig_width=int(row["orig_width"]),
            scale=float(row["scale"]),
            pad_top=int(row["pad_top"]),
            pad_left=int(row["pad_left"]),
            height=int(canvas_shape[0]),
            width=int(canvas_shape[1]),
        )

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def source_shape(self) -> tuple[int, int]:
        return self.orig_height, self.orig_width

    @property
    def content_shape(self) -> tuple[int, int]:
        return content_shape(self.orig_height, self.orig_width, self.scale)

    def to_working(self, y: float | np.ndarray, x: float | np.ndarray) -> tuple:
        """Source coordinates to working coordinates."""
        return y * self.scale + self.pad_top, x * self.scale + self.pad_left


def content_shape(orig_height: int, orig_width: int, scale: float) -> tuple[int, int]:
    """Size of the resized source image on the canvas, before padding."""
    return max(1, round(orig_height * scale)), max(1, round(orig_width * scale))


def fit(orig_height: int, orig_width: int, size: int) -> Geometry:
    """The geometry that fits a source image into a ``size`` square, aspect kept, centred, zero-padded."""
    scale = size / max(orig_height, orig_width)
    rows, cols = content_shape(orig_height, orig_width, scale)
    return Geometry(orig_height, orig_width, scale, (size - rows) // 2, (size - cols) // 2, size, size)


def canvas_shape(image_path: str | Path) -> tuple[int, int]:
    """(height, width) of an ingested image, from its PNG header."""
    with Image.open(image_path) as image:
        width, height = image.size
    return height, width


def resample(source: np.ndarray, geometry: Geometry) -> np.ndarray:
    """A source-sized float array onto the working canvas: area resize by ``scale``, then the padding."""
    if source.shape != geometry.source_shape:
        raise ValueError(f"array has shape {source.shape}, expected the source image's {geometry.source_shape}")
    rows, cols = geometry.content_shape
    resized = Image.fromarray(source.astype(np.float32)).resize((cols, rows), Image.Resampling.BOX)
    canvas = np.zeros(geometry.shape, dtype=np.float32)
    canvas[geometry.pad_top : geometry.pad_top + rows, geometry.pad_left : geometry.pad_left + cols] = np.asarray(resized)
    return canvas


def resample_mask(source_mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """A source-sized binary mask onto the working canvas (area resample, then the 0.5 threshold)."""
    return resample(source_mask.astype(np.float32), geometry) >= THRESHOLD


def _numbers(text: str, count: int | None, what: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"{what} {text!r} is not comma-separated numbers") from None
    if count is not None and len(values) != count:
        raise ValueError(f"{what} {text!r} has {len(values)} numbers, expected {count}")
    if not all(np.isfinite(values)):
        raise ValueError(f"{what} {text!r} holds a non-finite number")
    return values


def _interval_cover(start: float, stop: float, n: int) -> np.ndarray:
    """Share of each unit pixel [i, i+1), i < n, that the interval [start, stop) covers."""
    edges = np.arange(n, dtype=np.float64)
    return np.clip(np.minimum(edges + 1, stop) - np.maximum(edges, start), 0.0, 1.0)


def box_mask(value: str, geometry: Geometry) -> np.ndarray:
    """A source box ``"x,y,w,h"`` (x, y its top-left corner) as a working mask."""
    x, y, w, h = _numbers(value, 4, "box")
    if w <= 0 or h <= 0:
        raise ValueError(f"box {value!r} has no area")
    if x < 0 or y < 0 or x + w > geometry.orig_width or y + h > geometry.orig_height:
        raise ValueError(f"box {value!r} lies outside the {geometry.orig_height}x{geometry.orig_width} source image")
    y0, x0 = geometry.to_working(y, x)
    y1, x1 = geometry.to_working(y + h, x + w)
    cover = np.outer(_interval_cover(y0, y1, geometry.height), _interval_cover(x0, x1, geometry.width))
    return cover >= THRESHOLD


def parse_polygon(value: str, geometry: Geometry) -> np.ndarray:
    """``"x1,y1;x2,y2;..."`` to an (n, 2) array of source (x, y) vertices inside the image."""
    points = np.array([_numbers(pair, 2, "polygon vertex") for pair in value.strip().strip(";").split(";")])
    if len(points) < 3:
        raise ValueError(f"polygon has {len(points)} vertices, needs at least 3")
    xs, ys = points[:, 0], points[:, 1]
    if xs.min() < 0 or ys.min() < 0 or xs.max() > geometry.orig_width or ys.max() > geometry.orig_height:
        raise ValueError(f"polygon has vertices outside the {geometry.orig_height}x{geometry.orig_width} source image")
    return points


def polygon_mask(value: str, geometry: Geometry) -> np.ndarray:
    """A source polygon as a working mask: the pixels whose centre lies inside it."""
    points = parse_polygon(value, geometry)
    ys, xs = geometry.to_working(points[:, 1], points[:, 0])
    rows, cols = np.mgrid[0 : geometry.height, 0 : geometry.width]
    centres = np.column_stack([cols.ravel() + 0.5, rows.ravel() + 0.5])
    return PolygonPath(np.column_stack([xs, ys])).contains_points(centres).reshape(geometry.shape)


def rle_mask(value: str, geometry: Geometry) -> np.ndarray:
    """A SIIM-ACR run-length string (at the source size) as a working mask."""
    # The decoder is owned by the SIIM adapter work (tasks/masks/rle.py); imported here, where it is used.

    return resample_mask(decode_rle(value, geometry.orig_height, geometry.orig_width), geometry)


def read_source_mask(path: str | Path) -> np.ndarray:
    """A mask image file as a boolean array: non-zero is lesion (colour channels pooled, alpha ignored)."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image)
    except FileNotFoundError:
        raise ValueError("mask file is missing") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"mask file is unreadable ({type(exc).__name__})") from None
    if array.ndim == 3:
        array = array[..., :3] if array.shape[-1] >= 3 else array[..., :1]
        return array.any(axis=-1)
    return array != 0


def file_mask(path: str | Path, geometry: Geometry) -> np.ndarray:
    """A source-sized mask file as a working mask."""
    source = read_source_mask(path)
    if source.shape != geometry.source_shape:
        raise ValueError(f"mask file has shape {source.shape}, expected the source image's {geometry.source_shape}")
    return resample_mask(source, geometry)


def localisation_mask(kind: str, value: str, geometry: Geometry, root: str | Path = ".") -> np.ndarray:
    """Any localisation as a boolean working mask; ``root`` resolves relative mask file paths."""
    if kind == "box":
        return box_mask(value, geometry)
    if kind == "polygon":
        return polygon_mask(value, geometry)
    if kind == "rle":
        return rle_mask(value, geometry)
    if kind == "mask":
        return file_mask(Path(root) / value, geometry)
    raise ValueError(f"unknown localisation kind {kind!r}; expected one of {', '.join(KINDS)}")
