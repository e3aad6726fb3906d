"""Per-image work of ingest: decode, resize and write one image and copies of its lesion masks.

Runs in parallel in the flow, one chunk of work items per task. A file that cannot be decoded is
quarantined with a reason that names no file.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cxrsynth.tasks.ingest.select import Pseudonym
from cxrsynth.tasks.io import read_mask, write_mask, write_png16
from cxrsynth.tasks.masks.rle import decode_rle
from cxrsynth.tasks.sources.base import Localisation, SourceRecord
from cxrsynth.tasks.sources.decode import DEFAULT_LIMITS, DecodeError, ReadLimits, decode_bytes, read_file
from cxrsynth.tasks.sources.geometry import fit_square

OUT_DIR = "data/ingest"
IMAGES = "images"
SOURCE_MASKS = "source_masks"
MISSING_DIGEST = "missing"


@dataclass(frozen=True)
class WorkItem:
    """What decoding one image needs; the file path is the only source-side name it carries."""

    image_id: str
    image_path: Path
    localisations: tuple[Localisation, ...] = ()
    pixel_spacing_mm: float | None = None
    pixel_spacing_shape: tuple[int, int] | None = None


def work_items(records: list[SourceRecord], pseudonyms: list[Pseudonym]) -> list[WorkItem]:
    return [
        WorkItem(p.image_id, r.image_path, tuple(r.localisations), r.pixel_spacing_mm, r.pixel_spacing_shape)
        for r, p in zip(records, pseudonyms, strict=True)
    ]


@dataclass(frozen=True)
class ImageResult:
    image_id: str
    reason: str | None = None  # set when the image is quarantined
    file_digest: str = MISSING_DIGEST  # SHA-256 of the file, for the stage's input digest
    orig_height: int | None = None
    orig_width: int | None = None
    scale: float | None = None
    pad_top: int | None = None
    pad_left: int | None = None
    pixel_spacing_mm: float | None = None  # at working resolution
    site: str | None = None  # from the file's header
    view: str | None = None  # from the file's header
    localisations: tuple[tuple[int, str, str, str], ...] = ()  # (lesion, finding, kind, value or mask file name)
    mask_md5s: tuple[str, ...] = ()
    # SHA-256 of the decoded pixels: the same image in two files, or two formats, is one image. Both
    # digests are SHA-256 because with the SHA extensions of current x86 CPUs it hashes 2x faster than MD5
    # (benchmarks/bench_ingest.py --digests), and hashing is a third of ingest's work on large images.
    pixel_digest: str = MISSING_DIGEST


def source_spacing(item: WorkItem, shape: tuple[int, int], header_spacing: float | None) -> float | None:
    """Spacing at the decoded file's size: the index file's (rescaled if measured at another size), else the header's."""
    if item.pixel_spacing_mm is None:
        return header_spacing
    if item.pixel_spacing_shape is None:
        return item.pixel_spacing_mm
    rows, columns = item.pixel_spacing_shape
    return item.pixel_spacing_mm * (rows / shape[0] + columns / shape[1]) / 2


def _read_mask(path: str, lesion: int, shape: tuple[int, int], limits: ReadLimits) -> np.ndarray:
    """A mask file read as the image is (confined, a regular file, bounded), its size checked before decoding."""
    try:
        data = read_file(path, limits)
        with Image.open(io.BytesIO(data)) as header:
            declared = (header.height, header.width)
        if declared != shape:
            raise DecodeError(path, f"mask of lesion {lesion} is {declared[0]}x{declared[1]}, image is {shape[0]}x{shape[1]}")
        mask = read_mask(io.BytesIO(data))
    except DecodeError as exc:
        if exc.reason.startswith("mask of lesion"):
            raise
        reason = "not found" if exc.reason == "file not found" else exc.reason
        raise DecodeError(path, f"mask file of lesion {lesion} {reason}") from None
    except Exception:  # PIL's many errors for a broken file all mean the same here
        raise DecodeError(path, f"mask file of lesion {lesion} is not a readable image") from None
    if mask.ndim != 2:
        raise DecodeError(path, f"mask of lesion {lesion} is {'x'.join(map(str, mask.shape))}, image is {shape[0]}x{shape[1]}")
    return mask


def _load_masks(
    item: WorkItem, shape: tuple[int, int], limits: ReadLimits = DEFAULT_LIMITS
) -> list[tuple[int, Localisation, np.ndarray | None]]:
    """Every localisation checked against the image; mask files read (a DecodeError names the lesion)."""
    checked = []
    for lesion, localisation in enumerate(item.localisations):
        mask = None
        if localisation.kind == "mask":
            mask = _read_mask(localisation.value, lesion, shape, limits)
        elif localisation.kind == "rle":
            try:
                decode_rle(localisation.value, *shape)
            except ValueError as exc:
                raise DecodeError(item.image_path, f"RLE of lesion {lesion}: {exc}") from None
        checked.append((lesion, localisation, mask))
    return checked


def mask_file_name(image_id: str, lesion: int) -> str:
    return f"{image_id}_{lesion}.png"


def process_item(item: WorkItem, image_size: int, out_root: Path, limits: ReadLimits = DEFAULT_LIMITS) -> ImageResult:
    """Decode, resize and write one image (and copies of its mask files); quarantine it on any read error."""
    file_digest = MISSING_DIGEST
    try:
        data = read_file(item.image_path, limits)
        file_digest = hashlib.sha256(data).hexdigest()  # of the bytes already read: the file is read once
        decoded = decode_bytes(data, item.image_path, limits)
        masks = _load_masks(item, decoded.pixels.shape, limits)
        working, where = fit_square(decoded.pixels, image_size)
    except DecodeError as exc:
        return ImageResult(item.image_id, reason=exc.reason, file_digest=file_digest)
    localisations, mask_md5s = [], []
    for lesion, localisation, mask in masks:
        value = localisation.value
        if mask is not None:
            value = mask_file_name(item.image_id, lesion)
            binary = (mask > 0).astype(np.uint8) * 255
            write_mask(out_root / SOURCE_MASKS / value, binary)
            mask_md5s.append(hashlib.md5(binary.tobytes()).hexdigest())
        localisations.append((lesion, localisation.finding, localisation.kind, value))
    write_png16(out_root / IMAGES / f"{item.image_id}.png", working)
    spacing = source_spacing(item, decoded.pixels.shape, decoded.pixel_spacing_mm)
    return ImageResult(
        image_id=item.image_id,
        file_digest=file_digest,
        orig_height=decoded.pixels.shape[0],
        orig_width=decoded.pixels.shape[1],
        scale=where.scale,
        pad_top=where.pad_top,
        pad_left=where.pad_left,
        pixel_spacing_mm=None if spacing is None else spacing / where.scale,
        site=decoded.site,
        view=decoded.view,
        localisations=tuple(localisations),
        mask_md5s=tuple(mask_md5s),
        pixel_digest=hashlib.sha256(np.ascontiguousarray(decoded.pixels)).hexdigest(),  # the array's buffer: no copy
    )


def process_chunk(
    items: list[WorkItem], image_size: int, out_root: str | Path, limits: ReadLimits = DEFAULT_LIMITS
) -> list[ImageResult]:
    return [process_item(item, image_size, Path(out_root), limits) for item in items]
