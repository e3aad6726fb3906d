"""Finding labels as the label encoder's indices: state, laterality and severity per image and finding.

``label_attributes`` is the one place that decides where laterality and severity come from. It
reads the manifest's ``<finding>_laterality`` / ``<finding>_severity`` columns (the report's
words); ``tasks.masks.attributes.effective_attributes`` (mask-derived values filling the
report's gaps) replaces it when it lands.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.conditioning import LATERALITY_INDEX, SEVERITY_INDEX, STATE_INDEX
from tasks import manifest
from tasks.findings import FINDINGS

ATTRIBUTES = ("laterality", "severity")


def attribute_columns() -> list[str]:
    return [f"{finding}_{attribute}" for attribute in ATTRIBUTES for finding in FINDINGS]


def label_attributes(frame: pd.DataFrame) -> pd.DataFrame:
    """``image_id`` and ``<finding>_laterality`` / ``<finding>_severity`` for every row of ``frame``."""
    missing = [c for c in ["image_id", *attribute_columns()] if c not in frame.columns]
    if missing:
        raise ValueError(f"manifest lacks the attribute columns {missing[:4]} (has parse_reports run?)")
    return frame[["image_id", *attribute_columns()]].reset_index(drop=True)


def _lookup(values: pd.Series, table: dict) -> np.ndarray:
    """Map strings (or states) to embedding rows; missing and unknown values map to row 0 (unknown)."""
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
    """(N, F) laterality and severity rows from ``label_attributes`` output."""
    tables = {"laterality": LATERALITY_INDEX, "severity": SEVERITY_INDEX}
    return {name: np.stack([_lookup(attributes[f"{f}_{name}"], tables[name]) for f in FINDINGS], axis=1)
            for name in ATTRIBUTES}
