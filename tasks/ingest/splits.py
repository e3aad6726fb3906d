"""Patient-level train/val/test split, fixed once in ingest.

Patients are grouped by the rarest finding any of their images carries, each group is shuffled
with the seed and cut by the split fractions, so every split gets its share of the rare findings
and no patient is ever in two splits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxrsynth.tasks.findings import FINDINGS


def _rarest_finding(frame: pd.DataFrame, label_prefix: str) -> pd.Series:
    """Per patient: the name of the rarest finding present in any of their images, or 'none'."""
    columns = [f"{label_prefix}{f}" for f in FINDINGS if f"{label_prefix}{f}" in frame.columns]
    present = frame[columns].fillna(0).eq(1)
    by_patient = present.groupby(frame["patient_id"]).any()
    prevalence = by_patient.mean()
    order = [c for c in prevalence.sort_values(kind="stable").index]
    stratum = pd.Series("none", index=by_patient.index)
    for column in reversed(order):  # rarest assigned last, so it wins
        stratum[by_patient[column]] = column
    return stratum


def assign_splits(
    frame: pd.DataFrame,
    fractions: dict[str, float],
    seed: int,
    label_prefix: str = "structured_",
) -> pd.Series:
    """Return the split of every row of ``frame`` (indexed like it), decided per patient."""
    if frame["patient_id"].isna().any():
        raise ValueError("every real image needs a patient_id before splitting")
    rng = np.random.default_rng(seed)
    stratum = _rarest_finding(frame, label_prefix)
    names = list(fractions)
    cumulative = np.cumsum([fractions[name] for name in names])
    patient_split: dict[str, str] = {}
    for key in sorted(stratum.unique()):
        patients = np.array(sorted(stratum.index[stratum == key]))
        rng.shuffle(patients)
        cuts = np.round(cumulative * len(patients)).astype(int)
        for position, patient in enumerate(patients):
            patient_split[patient] = names[int(np.searchsorted(cuts, position, side="right"))]
    return frame["patient_id"].map(patient_split)
