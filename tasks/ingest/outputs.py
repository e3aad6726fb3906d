"""Ingest's outputs: the manifest with its patient-level split, localisations, quarantine list,
input digest, metrics and sample grid.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from cxrsynth.tasks.findings import ABSENT, FINDINGS, PRESENT, UNCERTAIN
from cxrsynth.tasks.ingest.images import IMAGES, OUT_DIR, SOURCE_MASKS, ImageResult
from cxrsynth.tasks.ingest.select import Pseudonym, Selection
from cxrsynth.tasks.ingest.splits import split_with_collections
from cxrsynth.tasks.io import read_png16
from cxrsynth.tasks.mosaic import mosaic
from cxrsynth.tasks.sources.base import SourceError, SourceRecord

LOCALISATION_COLUMNS = ("image_id", "lesion", "finding", "kind", "value")
QUARANTINE_COLUMNS = ("row", "image_id", "reason")


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
    """The ingest manifest of every image decoded, with its patient-level split (a held-out collection's
    images: that collection's split)."""
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
                "split": record.collection,  # a held-out collection's name; the rest are split below
            }
        )
    if not rows:
        raise SourceError(f"no image could be ingested: all {len(records)} were quarantined (see quarantine.csv)")
    frame = pd.DataFrame(rows)
    frame["split"] = split_with_collections(frame, frame["split"], fractions, seed)
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
            "file": result.file_digest,
            "masks": list(result.mask_md5s),
            "labels": {f: record.labels.get(f) for f in FINDINGS},
            "view": record.view,
            "report": hashlib.md5((record.report or "").encode()).hexdigest(),
            "localisations": [[l.finding, l.kind, l.value if l.kind != "mask" else ""] for l in record.localisations],
            "spacing": [record.pixel_spacing_mm, record.pixel_spacing_shape],
            "site": record.site,
            "collection": record.collection,
        }
        digest.update(json.dumps(entry, sort_keys=True).encode() + b"\n")
    return digest.hexdigest()


def reported_splits(manifest: pd.DataFrame) -> list[str]:
    """train, val and test always (an empty one shows as 0), then the phantom's reserve when there is one."""
    return ["train", "val", "test"] + (["reserve"] if (manifest["split"] == "reserve").any() else [])


def metrics(manifest: pd.DataFrame, quarantine: pd.DataFrame, localisations: pd.DataFrame, selection: Selection) -> dict:
    """Counts per split and finding, quarantined and dropped images (metrics/ingest.json)."""
    splits = reported_splits(manifest)
    findings = {}
    for finding in FINDINGS:
        states = manifest[f"structured_{finding}"]
        findings[finding] = {
            "present": int((states == PRESENT).sum()),
            "uncertain": int((states == UNCERTAIN).sum()),
            "absent": int((states == ABSENT).sum()),
            "not_mentioned": int(states.isna().sum()),
            "present_by_split": {s: int(((states == PRESENT) & (manifest["split"] == s)).sum()) for s in splits},
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
            for s in splits
        },
        "sites": site_counts(manifest),
        "findings": findings,
    }


def site_counts(manifest: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Images per site pseudonym and split: the names evaluate.train_sites chooses from."""
    return {
        str(site): {s: int(((manifest["site"] == site) & (manifest["split"] == s)).sum()) for s in ("train", "val", "test")}
        for site in sorted(manifest["site"].dropna().unique())
    }


def sample_grid(manifest: pd.DataFrame, root: str | Path, count: int, seed: int) -> np.ndarray:
    """A square mosaic of up to ``count`` working images picked with the seed, in image_id order."""
    chosen = np.random.default_rng(seed).choice(len(manifest), size=min(count, len(manifest)), replace=False)
    paths = manifest["path"].iloc[np.sort(chosen)].tolist()
    tiles = [read_png16(Path(root) / path) for path in paths]
    return mosaic(tiles, columns=math.ceil(math.sqrt(len(tiles))))
