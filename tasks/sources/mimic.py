"""MIMIC-CXR-JPG as distributed on PhysioNet, with the MIMIC-CXR report files.

``mimic-cxr-2.0.0-metadata.csv`` lists one row per image (dicom_id, subject_id, study_id,
ViewPosition); ``mimic-cxr-2.0.0-chexpert.csv`` one row of CheXpert labels per study (either may
be gzipped as PhysioNet ships them). Images are ``files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg``
and each study's report ``files/pXX/pNNNNNNNN/sNNNNNNNN.txt`` (``XX`` the subject's first two
digits). A study with no label row has every finding not mentioned; one with no report file has
no report.
"""

from __future__ import annotations

from pathlib import Path

from cxrsynth.tasks.sources.base import SourceError, SourceRecord
from cxrsynth.tasks.sources.chexpert import CHEXPERT_FINDINGS, chexpert_labels
from cxrsynth.tasks.sources.tables import read_table, row_number

METADATA = "mimic-cxr-2.0.0-metadata.csv"
LABELS = "mimic-cxr-2.0.0-chexpert.csv"
METADATA_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition")


def _find(root: Path, name: str) -> Path:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise SourceError(f"{root}: MIMIC-CXR-JPG index file {name} (or {name}.gz) not found")


def study_folder(root: Path, subject: str, study: str) -> Path:
    return root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"


def _study_labels(path: Path) -> dict[tuple[str, str], dict[str, int | None]]:
    table = read_table(path, ("subject_id", "study_id", *CHEXPERT_FINDINGS))
    labels = {}
    for index, row in enumerate(table.to_dict("records")):
        key = (row["subject_id"].strip(), row["study_id"].strip())
        labels[key] = chexpert_labels(row, f"{path} row {row_number(index)}")
    return labels


def _report(folder: Path) -> str | None:
    path = folder.with_suffix(".txt")
    return path.read_text(errors="replace") if path.is_file() else None


def read_mimic(root: str | Path) -> list[SourceRecord]:
    root = Path(root)
    metadata_path = _find(root, METADATA)
    metadata = read_table(metadata_path, METADATA_COLUMNS)
    labels = _study_labels(_find(root, LABELS))
    unmentioned = dict.fromkeys(CHEXPERT_FINDINGS.values())
    reports: dict[Path, str | None] = {}
    records = []
    for index, row in enumerate(metadata.to_dict("records")):
        subject, study, dicom_id = (row[c].strip() for c in ("subject_id", "study_id", "dicom_id"))
        if not (subject.isdigit() and study.isdigit() and dicom_id):
            raise SourceError(f"{metadata_path} row {row_number(index)}: subject_id, study_id and dicom_id must be set")
        folder = study_folder(root, subject, study)
        if folder not in reports:
            reports[folder] = _report(folder)
        records.append(
            SourceRecord(
                row=row_number(index),
                patient_key=subject,
                study_key=study,
                image_path=folder / f"{dicom_id}.jpg",
                view=row["ViewPosition"].strip().upper() or None,
                labels=dict(labels.get((subject, study), unmentioned)),
                report=reports[folder],
            )
        )
    return records
