"""Patient-level train/val/test split, fixed once in ingest.

Patients are grouped by the rarest finding any of their images carries, each group is shuffled
with the seed and cut by the split fractions, so every split gets its share of the rare findings
and no patient is ever in two splits.

A source may bring collections of its own held apart from its main one (the phantom's test
collection and the ceiling's reserve): their images take the split of the collection's name, and
the main collection is then split into train and val only (by their proportion in the fractions)
when a test collection came with it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.sources.base import SourceError

HELD_OUT_SPLITS = ("test", "reserve")  # the collections a source may hold apart, named as the splits they take


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


def main_fractions(fractions: dict[str, float], has_test_collection: bool) -> dict[str, float]:
    """The fractions the main collection is split by: without test, rescaled, when a test collection exists."""
    if not has_test_collection:
        return fractions
    kept = {name: share for name, share in fractions.items() if name != "test"}
    total = sum(kept.values())
    return {name: share / total for name, share in kept.items()}


def check_collections_disjoint(frame: pd.DataFrame, collections: pd.Series) -> None:
    """No patient may have images in two collections: their splits would differ."""
    per_patient = collections.fillna("main").groupby(frame["patient_id"]).nunique()
    shared = per_patient.index[per_patient > 1].tolist()
    if shared:
        raise SourceError(f"patients {shared[:10]} have images in two of the source's collections (main, test, "
                          "reserve); a patient belongs to one")


def split_with_collections(
    frame: pd.DataFrame, collections: pd.Series, fractions: dict[str, float], seed: int
) -> pd.Series:
    """Every row's split: its held-out collection's name, else the patient-level split of the main collection."""
    unknown = sorted(set(collections.dropna()) - set(HELD_OUT_SPLITS))
    if unknown:
        raise SourceError(f"unknown source collection(s) {unknown}; expected {', '.join(HELD_OUT_SPLITS)}")
    check_collections_disjoint(frame, collections)
    split = collections.astype(object).copy()
    main = collections.isna().to_numpy()
    if main.any():
        own = main_fractions(fractions, bool((collections == "test").any()))
        split[main] = assign_splits(frame[main], own, seed).to_numpy()
    return split
