"""Lesion attributes measured on a working mask, and per image and finding the report's attributes
with the mask-derived ones filling the gaps the report left.

- Laterality: the side of the body's midline (the centre column of the source image on the canvas)
  holding the centroid, named by ``tasks.findings.patient_side``; ``bilateral`` when each side holds
  at least ``BILATERAL_SHARE`` of the lesion's area.
- Zone: ``upper`` / ``middle`` / ``lower`` third of the source image's height holding the centroid
  (a radiograph's field of view is the chest, so its thirds stand in for the lung zones).
- Severity (per image and finding, only in ``effective_attributes``): the lesion area as a share of
  the source image's area on the canvas, against that finding's tertiles over all images with a
  mask of it: below the first tertile ``mild``, below the second ``moderate``, else ``severe``.
  A finding with fewer than ``MIN_LESIONS_FOR_SEVERITY`` masked images gets no mask severity.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from cxrsynth.tasks.findings import FINDINGS, PRESENT, SEVERITIES, UNCERTAIN, patient_side
from cxrsynth.tasks.masks.geometry import Geometry, content_shape

ZONES = ("upper", "middle", "lower")
BILATERAL_SHARE = 0.25
MIN_LESIONS_FOR_SEVERITY = 3
# The heart is one central organ: the side and zone of its mask say nothing about cardiomegaly.
UNSIDED = ("cardiomegaly",)
ATTRIBUTES = ("laterality", "location", "severity")


def lesion_attributes(mask: np.ndarray, geometry: Geometry, pixel_spacing_mm: float | None = None) -> dict:
    """Area (pixels, and mm^2 when the working pixel spacing is known), centroid (row, column),
    bounding box (y0, x0, y1, x1; ends exclusive), laterality and zone of one lesion mask."""
    mask = mask.astype(bool)
    if mask.shape != geometry.shape:
        raise ValueError(f"mask has shape {mask.shape}, expected the working image's {geometry.shape}")
    area_px = int(mask.sum())
    if area_px == 0:
        raise ValueError("mask is empty")
    centroid_y, centroid_x = ndimage.center_of_mass(mask)
    rows, cols = np.nonzero(mask)
    known_spacing = pixel_spacing_mm is not None and not pd.isna(pixel_spacing_mm)
    return {
        "area_px": area_px,
        "area_mm2": area_px * float(pixel_spacing_mm) ** 2 if known_spacing else None,
        "centroid_y": float(centroid_y),
        "centroid_x": float(centroid_x),
        "bbox": [int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1],
        "laterality": laterality(mask, centroid_x, geometry),
        "zone": zone(centroid_y, geometry),
    }


def midline(geometry: Geometry) -> float:
    """The body's midline as a continuous column on the canvas."""
    return geometry.pad_left + geometry.content_shape[1] / 2


def laterality(mask: np.ndarray, centroid_x: float, geometry: Geometry) -> str:
    middle = midline(geometry)
    on_image_right = (np.arange(geometry.width) + 0.5) >= middle
    right_share = mask[:, on_image_right].sum() / mask.sum()
    if min(right_share, 1 - right_share) >= BILATERAL_SHARE:
        return "bilateral"
    return patient_side(centroid_x + 0.5, middle)


def zone(centroid_y: float, geometry: Geometry) -> str:
    height = geometry.content_shape[0]
    position = (centroid_y + 0.5 - geometry.pad_top) / height
    return ZONES[min(len(ZONES) - 1, max(0, int(position * len(ZONES))))]


def combine_sides(sides: pd.Series) -> str | None:
    """One laterality for several lesions of one finding in one image."""
    present = set(sides.dropna())
    if not present:
        return None
    if "bilateral" in present or {"left", "right"} <= present:
        return "bilateral"
    return present.pop()


def severity_thresholds(area_share: pd.Series) -> tuple[float, float] | None:
    """The tertiles of one finding's lesion area shares, or None when too few images carry a mask of it."""
    if len(area_share) < MIN_LESIONS_FOR_SEVERITY:
        return None
    low, high = np.quantile(area_share.to_numpy(dtype=np.float64), [1 / 3, 2 / 3])
    return float(low), float(high)


def severity_of(share: float, thresholds: tuple[float, float] | None) -> str | None:
    if thresholds is None:
        return None
    return SEVERITIES[int(share >= thresholds[0]) + int(share >= thresholds[1])]


def mask_attributes(manifest: pd.DataFrame, lesions: pd.DataFrame) -> pd.DataFrame:
    """Per image and finding with a lesion mask: laterality, location (zone of the largest lesion) and severity."""
    columns = ["image_id", "finding", *ATTRIBUTES]
    if lesions.empty:
        return pd.DataFrame(columns=columns)
    geometry = manifest.set_index("image_id")[["orig_height", "orig_width", "scale"]]
    largest_first = lesions.sort_values(["image_id", "finding", "area_px"], ascending=[True, True, False])
    grouped = largest_first.groupby(["image_id", "finding"], sort=True)
    per_finding = grouped.agg(area_px=("area_px", "sum"), location=("zone", "first")).reset_index()
    per_finding["laterality"] = grouped["laterality"].agg(combine_sides).to_numpy()
    source_area = [
        np.prod(content_shape(int(row.orig_height), int(row.orig_width), float(row.scale)))
        for row in geometry.loc[per_finding["image_id"]].itertuples()
    ]
    per_finding["area_share"] = per_finding["area_px"].to_numpy(dtype=np.float64) / np.array(source_area, dtype=np.float64)
    per_finding["severity"] = None
    for finding, rows in per_finding.groupby("finding"):
        thresholds = severity_thresholds(rows["area_share"])
        per_finding.loc[rows.index, "severity"] = [severity_of(share, thresholds) for share in rows["area_share"]]
    unsided = per_finding["finding"].isin(UNSIDED)
    per_finding.loc[unsided, ["laterality", "location"]] = None
    return per_finding[columns]


def report_attributes(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest's parsed state and attributes, one row per image and finding."""
    frames = []
    for finding in FINDINGS:
        frame = pd.DataFrame({
            "image_id": manifest["image_id"].to_numpy(),
            "finding": finding,
            "state": manifest[finding].to_numpy(),
            **{attribute: manifest[f"{finding}_{attribute}"].to_numpy() for attribute in ATTRIBUTES},
        })
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def effective_attributes(manifest: pd.DataFrame, lesions: pd.DataFrame) -> pd.DataFrame:
    """Per image and finding that is present, uncertain or masked: state, and laterality / location /
    severity as the report gives them, each gap filled from the masks (``<attribute>_from_mask`` says
    which were). Rows are sorted by image_id, then finding order."""
    report = report_attributes(manifest)
    masked = mask_attributes(manifest, lesions)
    merged = report.merge(masked, on=["image_id", "finding"], how="left", suffixes=("", "_mask"), indicator=True)
    positive = merged["state"].isin([PRESENT, UNCERTAIN]).fillna(False).astype(bool)
    keep = merged[positive | (merged["_merge"] == "both")].copy()
    for attribute in ATTRIBUTES:
        gap = keep[attribute].isna() & keep[f"{attribute}_mask"].notna()
        keep[attribute] = keep[attribute].astype(object).where(~gap, keep[f"{attribute}_mask"])
        keep[f"{attribute}_from_mask"] = gap.astype(bool)
    keep["finding_order"] = keep["finding"].map(FINDINGS.index)
    keep = keep.sort_values(["image_id", "finding_order"], kind="stable")
    columns = ["image_id", "finding", "state", *ATTRIBUTES, *(f"{a}_from_mask" for a in ATTRIBUTES)]
    return keep[columns].reset_index(drop=True)
