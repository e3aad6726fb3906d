"""The prepare_masks metrics: masked and unmasked positives, rejections, lesion sizes, filled attributes."""

from __future__ import annotations

import pandas as pd

from cxrsynth.tasks.findings import FINDINGS, PRESENT
from cxrsynth.tasks.masks.attributes import ATTRIBUTES


def positives_with_masks(frame: pd.DataFrame, lesions: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per finding: images whose final state is present, and how many of them carry a mask of it."""
    counts = {}
    for finding in FINDINGS:
        positive = set(frame.loc[frame[finding].eq(PRESENT).fillna(False).astype(bool), "image_id"])
        masked = positive & set(lesions.loc[lesions["finding"] == finding, "image_id"])
        counts[finding] = {"total": len(positive), "with_mask": len(masked), "without_mask": len(positive - masked)}
    return counts


def lesions_without_positive_state(frame: pd.DataFrame, lesions: pd.DataFrame) -> dict[str, int]:
    """Per finding: kept lesions on images whose state is uncertain or not mentioned (never absent: those are rejected)."""
    states = frame.set_index("image_id")
    counts = {}
    for finding in FINDINGS:
        ids = lesions.loc[lesions["finding"] == finding, "image_id"]
        counts[finding] = int((~states.loc[ids, finding].eq(PRESENT).fillna(False).astype(bool)).sum())
    return counts


def area_statistics(lesions: pd.DataFrame, column: str) -> dict[str, dict[str, float | None]]:
    """Per finding: count, mean, median, min and max of one area column (None where no lesion has it)."""
    statistics = {}
    for finding in FINDINGS:
        values = lesions.loc[lesions["finding"] == finding, column].dropna().astype(float)
        statistics[finding] = {
            "count": int(len(values)),
            **{name: (float(getattr(values, name)()) if len(values) else None) for name in ("mean", "median", "min", "max")},
        }
    return statistics


def rejected_by_reason(rejected: pd.DataFrame) -> dict[str, int]:
    codes = rejected["reason"].str.split(":", n=1).str[0]
    return {code: int(count) for code, count in codes.value_counts().sort_index().items()}


def summarise(frame: pd.DataFrame, lesions: pd.DataFrame, rejected: pd.DataFrame, effective: pd.DataFrame) -> dict:
    """Every prepare_masks metric as one nested dict (the DVC metrics file; flattened for MLflow)."""
    return {
        "images": int(len(frame)),
        "images_with_mask": int(frame["mask_path"].notna().sum()),
        "lesions": int(len(lesions)),
        "rejected": int(len(rejected)),
        "rejected_by_reason": rejected_by_reason(rejected),
        "positives": positives_with_masks(frame, lesions),
        "lesions_without_positive_state": lesions_without_positive_state(frame, lesions),
        "area_px": area_statistics(lesions, "area_px"),
        "area_mm2": area_statistics(lesions, "area_mm2"),
        "filled_from_masks": {attribute: int(effective[f"{attribute}_from_mask"].sum()) for attribute in ATTRIBUTES},
    }
