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
from cxrsynth.tasks.sources.tables import index_rows, read_table

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
    return {(row.text("subject_id"), row.text("study_id")): chexpert_labels(row.cells, row.where)
            for row in index_rows(table, path)}


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
    for row in index_rows(metadata, metadata_path):
        subject, study, dicom_id = row.required("subject_id", "study_id", "dicom_id")
        if not (subject.isdigit() and study.isdigit()):
            raise SourceError(f"{row.where}: subject_id and study_id must be numbers")
        folder = study_folder(root, subject, study)
        if folder not in reports:
            reports[folder] = _report(folder)
        records.append(row.record(subject, study, folder / f"{dicom_id}.jpg", view=row.text("ViewPosition"),
                                  labels=dict(labels.get((subject, study), unmentioned)), report=reports[folder]))
    return records
