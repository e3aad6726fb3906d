"""The ingest stage's work: source records -> pseudonymised, decoded, working-resolution images.

Order of work: select (views, cap) -> pseudonymise (sequential ids in listing order, so nothing
derived from a source identifier survives) -> decode + resize + copy lesion masks per image
(parallel, in the flow) -> assemble the manifest, localisations, quarantine list and metrics.
A file that cannot be decoded is quarantined with a reason that names no file.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxrsynth.tasks.findings import ABSENT, FINDINGS, PRESENT, UNCERTAIN
from cxrsynth.tasks.io import atomic_path, read_mask, read_png16, write_mask, write_png16, write_text
from cxrsynth.tasks.masks.rle import decode_rle
from cxrsynth.tasks.mosaic import mosaic
from cxrsynth.tasks.sources.base import Localisation, SourceError, SourceRecord
from cxrsynth.tasks.sources.decode import DecodeError, decode_bytes, read_file
from cxrsynth.tasks.sources.geometry import fit_square
from cxrsynth.tasks.splits import assign_splits

OUT_DIR = "data/ingest"
IMAGES = "images"
SOURCE_MASKS = "source_masks"
LOCALISATION_COLUMNS = ("image_id", "lesion", "finding", "kind", "value")
QUARANTINE_COLUMNS = ("row", "image_id", "reason")
MISSING_DIGEST = "missing"


# ------------------------------------------------------------------------------ select, pseudonymise


@dataclass(frozen=True)
class Selection:
    records: list[SourceRecord]
    listed: int  # records the source lists
    other_view: int  # dropped: a view not in ingest.views
    unknown_view: int  # kept: the source does not say the view
    capped: int  # dropped by ingest.max_images


def select_records(records: list[SourceRecord], views: list[str], max_images: int | None) -> Selection:
    """Keep the wanted views (and records whose view is unknown), then the first ``max_images``."""
    wanted = {view.upper() for view in views}
    kept = [r for r in records if r.view is None or r.view.upper() in wanted]
    capped = kept[:max_images] if max_images is not None else kept
    return Selection(
        records=capped,
        listed=len(records),
        other_view=len(records) - len(kept),
        unknown_view=sum(r.view is None for r in capped),
        capped=len(kept) - len(capped),
    )


@dataclass(frozen=True)
class Pseudonym:
    image_id: str
    patient_id: str
    study_id: str


def pseudonymise(records: list[SourceRecord]) -> list[Pseudonym]:
    """Sequential ids in listing order: img-000001, pat-00001, std-000001 (never a hash of a source id)."""
    patients: dict[str, str] = {}
    studies: dict[tuple[str, str], str] = {}
    pseudonyms = []
    for number, record in enumerate(records, start=1):
        patient = patients.setdefault(record.patient_key, f"pat-{len(patients) + 1:05d}")
        study = studies.setdefault((record.patient_key, record.study_key), f"std-{len(studies) + 1:06d}")
        pseudonyms.append(Pseudonym(f"img-{number:06d}", patient, study))
    return pseudonyms


# ------------------------------------------------------------------------------ per-image work


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
    file_md5: str = MISSING_DIGEST
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


def source_spacing(item: WorkItem, shape: tuple[int, int], header_spacing: float | None) -> float | None:
    """Spacing at the decoded file's size: the index file's (rescaled if measured at another size), else the header's."""
    if item.pixel_spacing_mm is None:
        return header_spacing
    if item.pixel_spacing_shape is None:
        return item.pixel_spacing_mm
    rows, columns = item.pixel_spacing_shape
    return item.pixel_spacing_mm * (rows / shape[0] + columns / shape[1]) / 2


def _load_masks(item: WorkItem, shape: tuple[int, int]) -> list[tuple[int, Localisation, np.ndarray | None]]:
    """Every localisation checked against the image; mask files read (a DecodeError names the lesion)."""
    checked = []
    for lesion, localisation in enumerate(item.localisations):
        mask = None
        if localisation.kind == "mask":
            try:
                mask = read_mask(localisation.value)
            except FileNotFoundError:
                raise DecodeError(localisation.value, f"mask file of lesion {lesion} not found") from None
            except Exception:  # PIL's many errors for a broken file all mean the same here
                raise DecodeError(localisation.value, f"mask file of lesion {lesion} is not a readable image") from None
            if mask.ndim != 2 or mask.shape != shape:
                raise DecodeError(
                    localisation.value, f"mask of lesion {lesion} is {'x'.join(map(str, mask.shape))}, image is {shape[0]}x{shape[1]}"
                )
        elif localisation.kind == "rle":
            try:
                decode_rle(localisation.value, *shape)
            except ValueError as exc:
                raise DecodeError(item.image_path, f"RLE of lesion {lesion}: {exc}") from None
        checked.append((lesion, localisation, mask))
    return checked


def mask_file_name(image_id: str, lesion: int) -> str:
    return f"{image_id}_{lesion}.png"


def process_item(item: WorkItem, image_size: int, out_root: Path) -> ImageResult:
    """Decode, resize and write one image (and copies of its mask files); quarantine it on any read error."""
    file_md5 = MISSING_DIGEST
    try:
        data = read_file(item.image_path)
        file_md5 = hashlib.md5(data).hexdigest()
        decoded = decode_bytes(data, item.image_path)
        masks = _load_masks(item, decoded.pixels.shape)
        working, where = fit_square(decoded.pixels, image_size)
    except DecodeError as exc:
        return ImageResult(item.image_id, reason=exc.reason, file_md5=file_md5)
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
        file_md5=file_md5,
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
    )


def process_chunk(items: list[WorkItem], image_size: int, out_root: str | Path) -> list[ImageResult]:
    return [process_item(item, image_size, Path(out_root)) for item in items]


def chunked(items: list, size: int) -> list[list]:
    return [items[start : start + size] for start in range(0, len(items), size)]


# ------------------------------------------------------------------------------ assemble outputs


def image_path(image_id: str) -> str:
    return f"{OUT_DIR}/{IMAGES}/{image_id}.png"


def manifest_frame(
    records: list[SourceRecord],
    pseudonyms: list[Pseudonym],
    results: dict[str, ImageResult],
    dataset: str,
    fractions: dict[str, float],
    seed: int,
) -> pd.DataFrame:
    """The ingest manifest of every image decoded, with its patient-level split."""
    rows = []
    for record, pseudonym in zip(records, pseudonyms, strict=True):
        result = results[pseudonym.image_id]
        if result.reason is not None:
            continue
        rows.append(
            {
                "image_id": pseudonym.image_id,
                "patient_id": pseudonym.patient_id,
                "study_id": pseudonym.study_id,
                "source": "real",
                "dataset": dataset,
                "site": record.site or result.site,
                "path": image_path(pseudonym.image_id),
                "view": record.view or result.view,
                "orig_height": result.orig_height,
                "orig_width": result.orig_width,
                "scale": result.scale,
                "pad_top": result.pad_top,
                "pad_left": result.pad_left,
                "pixel_spacing_mm": result.pixel_spacing_mm,
                **{f"structured_{f}": record.labels.get(f) for f in FINDINGS},
                "report": record.report,
            }
        )
    if not rows:
        raise SourceError(f"no image could be ingested: all {len(records)} were quarantined (see quarantine.csv)")
    frame = pd.DataFrame(rows)
    frame["split"] = assign_splits(frame, fractions, seed)
    return frame


def localisation_frame(results: dict[str, ImageResult]) -> pd.DataFrame:
    rows = [
        {
            "image_id": image_id,
            "lesion": lesion,
            "finding": finding,
            "kind": kind,
            "value": f"{OUT_DIR}/{SOURCE_MASKS}/{value}" if kind == "mask" else value,
        }
        for image_id, result in results.items()
        if result.reason is None
        for lesion, finding, kind, value in result.localisations
    ]
    frame = pd.DataFrame(rows, columns=list(LOCALISATION_COLUMNS))
    return frame.astype({"image_id": "string", "lesion": "int32", "finding": "string", "kind": "string", "value": "string"})


def quarantine_frame(records: list[SourceRecord], pseudonyms: list[Pseudonym], results: dict[str, ImageResult]) -> pd.DataFrame:
    rows = [
        {"row": record.row, "image_id": pseudonym.image_id, "reason": results[pseudonym.image_id].reason}
        for record, pseudonym in zip(records, pseudonyms, strict=True)
        if results[pseudonym.image_id].reason is not None
    ]
    return pd.DataFrame(rows, columns=list(QUARANTINE_COLUMNS)).astype({"row": "int64"})


def input_digest(records: list[SourceRecord], pseudonyms: list[Pseudonym], results: dict[str, ImageResult]) -> str:
    """md5 over exactly what ingest consumed: each file's bytes and mask pixels, labels, view, report, localisations."""
    digest = hashlib.md5()
    for record, pseudonym in zip(records, pseudonyms, strict=True):
        result = results[pseudonym.image_id]
        entry = {
            "ids": [pseudonym.patient_id, pseudonym.study_id],  # the grouping, by pseudonym
            "file": result.file_md5,
            "masks": list(result.mask_md5s),
            "labels": {f: record.labels.get(f) for f in FINDINGS},
            "view": record.view,
            "report": hashlib.md5((record.report or "").encode()).hexdigest(),
            "localisations": [[l.finding, l.kind, l.value if l.kind != "mask" else ""] for l in record.localisations],
            "spacing": [record.pixel_spacing_mm, record.pixel_spacing_shape],
            "site": record.site,
        }
        digest.update(json.dumps(entry, sort_keys=True).encode() + b"\n")
    return digest.hexdigest()


def metrics(manifest: pd.DataFrame, quarantine: pd.DataFrame, localisations: pd.DataFrame, selection: Selection) -> dict:
    """Counts per split and finding, quarantined and dropped images (metrics/ingest.json)."""
    findings = {}
    for finding in FINDINGS:
        states = manifest[f"structured_{finding}"]
        findings[finding] = {
            "present": int((states == PRESENT).sum()),
            "uncertain": int((states == UNCERTAIN).sum()),
            "absent": int((states == ABSENT).sum()),
            "not_mentioned": int(states.isna().sum()),
            "present_by_split": {s: int(((states == PRESENT) & (manifest["split"] == s)).sum()) for s in ("train", "val", "test")},
        }
    return {
        "images": len(manifest),
        "patients": int(manifest["patient_id"].nunique()),
        "studies": int(manifest["study_id"].nunique()),
        "quarantined": len(quarantine),
        "listed": selection.listed,
        "dropped_other_view": selection.other_view,
        "unknown_view": selection.unknown_view,
        "dropped_max_images": selection.capped,
        "with_report": int(manifest["report"].notna().sum()),
        "localisations": dict(sorted(Counter(localisations["kind"]).items())),
        "split": {
            s: {"images": int((manifest["split"] == s).sum()), "patients": int(manifest.loc[manifest["split"] == s, "patient_id"].nunique())}
            for s in ("train", "val", "test")
        },
        "findings": findings,
    }


def sample_grid(manifest: pd.DataFrame, root: str | Path, count: int, seed: int) -> np.ndarray:
    """A square mosaic of up to ``count`` working images picked with the seed, in image_id order."""
    chosen = np.random.default_rng(seed).choice(len(manifest), size=min(count, len(manifest)), replace=False)
    paths = manifest["path"].iloc[np.sort(chosen)].tolist()
    tiles = [read_png16(Path(root) / path) for path in paths]
    return mosaic(tiles, columns=math.ceil(math.sqrt(len(tiles))))


def write_parquet(frame: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as temp:
        frame.to_parquet(temp, index=False)


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    write_text(path, frame.to_csv(index=False))
