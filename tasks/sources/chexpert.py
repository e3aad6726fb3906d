"""CheXpert (Stanford) as distributed: ``train.csv`` / ``valid.csv`` beside the image folders.

Labels are 1.0 / 0.0 / -1.0 / blank. ``Path`` is relative to the dataset folder's parent
(``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``); a collection whose paths
start inside the folder itself (the built-in phantom) is read from the folder. The reader of one
label CSV is shared with the phantom collection and the label mapping with MIMIC-CXR.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from pathlib import Path

from cxrsynth.tasks.sources.base import SourceError, SourceRecord
from cxrsynth.tasks.sources.tables import index_rows, parse_state, read_table

# CheXpert label column -> cxrsynth finding. CheXpert's "Lung Lesion" covers nodules and masses.
CHEXPERT_FINDINGS: dict[str, str] = {
    "Cardiomegaly": "cardiomegaly",
    "Pleural Effusion": "pleural_effusion",
    "Pneumothorax": "pneumothorax",
    "Lung Lesion": "nodule",
    "Atelectasis": "atelectasis",
    "Consolidation": "consolidation",
}
INDEX_COLUMNS = ("Path", "Frontal/Lateral", "AP/PA")
SPLIT_FILES = ("train.csv", "valid.csv")
PATIENT = re.compile(r"^patient\d+$")
STUDY = re.compile(r"^study\d+$")


def chexpert_labels(row: Mapping[str, str], where: str) -> dict[str, int | None]:
    """The modelled findings' states from a row holding CheXpert's label columns."""
    return {finding: parse_state(row[column], f"{where}, column {column!r}") for column, finding in CHEXPERT_FINDINGS.items()}


def _view(row: Mapping[str, str]) -> str | None:
    if row["Frontal/Lateral"].strip().lower() == "lateral":
        return "LATERAL"
    return row["AP/PA"].strip().upper() or None


def patient_and_study(relative: str, where: str) -> tuple[str, str]:
    """The ``patientNNNNN`` and ``studyN`` folder names in a CheXpert Path."""
    parts = Path(relative).parts
    patient = next((p for p in parts if PATIENT.match(p)), None)
    study = next((p for p in parts if STUDY.match(p)), None)
    if patient is None or study is None:
        raise SourceError(f"{where}: Path has no patientNNNNN/studyN folders")
    return patient, study


def read_chexpert_csv(csv_path: str | Path, image_root: str | Path) -> list[SourceRecord]:
    """One CheXpert-format label CSV; image paths resolved against ``image_root``."""
    csv_path, image_root = Path(csv_path), Path(image_root)
    table = read_table(csv_path, (*INDEX_COLUMNS, *CHEXPERT_FINDINGS))
    records = []
    for row in index_rows(table, csv_path):
        (relative,) = row.required("Path")
        patient, study = patient_and_study(relative, row.where)
        records.append(row.record(patient, f"{patient}/{study}", image_root / relative, view=_view(row.cells),
                                  labels=chexpert_labels(row.cells, row.where)))
    return records


def _image_root(root: Path, csv_path: Path) -> Path:
    """The dataset's parent when Paths start with the dataset folder's name, else the folder."""
    with csv_path.open(newline="") as handle:
        first = next(csv.DictReader(handle), None) or {}
    starts_with_folder = Path((first.get("Path") or "").strip()).parts[:1] == (root.name,)
    return root.parent if starts_with_folder else root


def read_chexpert(root: str | Path) -> list[SourceRecord]:
    """The CheXpert folder: ``train.csv`` then ``valid.csv`` (either may be absent, not both)."""
    root = Path(root)
    csv_paths = [root / name for name in SPLIT_FILES if (root / name).is_file()]
    if not csv_paths:
        raise SourceError(f"{root}: no CheXpert label file ({' or '.join(SPLIT_FILES)})")
    records: list[SourceRecord] = []
    for csv_path in csv_paths:
        records += read_chexpert_csv(csv_path, _image_root(root, csv_path))
    return records
