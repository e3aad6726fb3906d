"""Finding labels as the label encoder's indices: state, laterality and severity per image and finding.

Attributes come from ``tasks.masks.attributes.effective_attributes``: the report's laterality,
location and severity, with the mask-derived ones filling the report's gaps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxrsynth.models.conditioning import LATERALITY_INDEX, SEVERITY_INDEX, STATE_INDEX
from cxrsynth.tasks import manifest
from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.masks.attributes import ATTRIBUTES, effective_attributes

LESIONS = Path("data/prepare_masks/lesions.parquet")
ENCODED_ATTRIBUTES = ("laterality", "severity")  # location is worded in the prompt, not embedded


def attribute_columns(attributes: tuple[str, ...] = ATTRIBUTES) -> list[str]:
    return [f"{finding}_{attribute}" for attribute in attributes for finding in FINDINGS]


def read_lesions(root: str | Path = ".") -> pd.DataFrame:
    """prepare_masks' lesion table; empty (no mask-derived attributes) when the stage wrote none."""
    path = Path(root) / LESIONS
    return pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=["image_id", "finding"])


def label_attributes(frame: pd.DataFrame, lesions: pd.DataFrame) -> pd.DataFrame:
    """``image_id`` and ``<finding>_<attribute>`` (laterality, location, severity) for every row of
    ``frame``, null where neither the report nor a mask gives one."""
    missing = [c for c in ["image_id", *attribute_columns()] if c not in frame.columns]
    if missing:
        raise ValueError(f"manifest lacks the attribute columns {missing[:4]} (has parse_reports run?)")
    lesions = lesions[lesions["image_id"].isin(frame["image_id"])]
    long = effective_attributes(frame.reset_index(drop=True), lesions)
    wide = pd.DataFrame({"image_id": frame["image_id"].to_numpy()})
    for attribute in ATTRIBUTES:
        table = long.pivot(index="image_id", columns="finding", values=attribute)
        for finding in FINDINGS:
            values = table[finding] if finding in table.columns else pd.Series(dtype=object)
            wide[f"{finding}_{attribute}"] = wide["image_id"].map(values).astype(object)
    return wide.where(wide.notna(), None)


def _lookup(values: pd.Series, table: dict) -> np.ndarray:
    """Map strings to embedding rows; missing and unknown values map to row 0 (unknown)."""
    return np.array([table.get(None if pd.isna(v) else v, 0) for v in values], dtype=np.int64)


def state_indices(frame: pd.DataFrame) -> np.ndarray:
    """(N, F) state rows from the final per-finding state columns (null / 0 / 1 / -1)."""
    states = manifest.label_matrix(frame)
    rows = np.zeros(states.shape, dtype=np.int64)  # NaN (not mentioned) stays row 0
    for state, row in STATE_INDEX.items():
        if state is not None:
            rows[states == state] = row
    return rows


def attribute_indices(attributes: pd.DataFrame) -> dict[str, np.ndarray]:
    """(N, F) laterality and severity rows from ``label_attributes`` output (or any frame with those columns)."""
    tables = {"laterality": LATERALITY_INDEX, "severity": SEVERITY_INDEX}
    return {name: np.stack([_lookup(attributes[f"{f}_{name}"], tables[name]) for f in FINDINGS], axis=1)
            for name in ENCODED_ATTRIBUTES}
