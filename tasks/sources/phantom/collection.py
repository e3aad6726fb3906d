"""The built-in phantom collections as the ``phantom`` stage writes them (hospital-style exports).

Each collection holds ``labels.csv`` in CheXpert's format (Paths relative to the collection folder)
read by the CheXpert reader, DICOM files, ``reports/patientNNNNN/studyM.txt`` per study and
``lesions.csv`` (``Path, finding, mask``) naming a mask PNG for each lesion that ships one. The
training collection lies at the root; the test collection (``test/``) and the ceiling's reserve
(``reserve/``), when written, in sub-folders, and their records carry the collection's name, which
ingest makes their split.
"""

from __future__ import annotations

from pathlib import Path

from cxrsynth.tasks.findings import check_finding
from cxrsynth.tasks.sources.base import Localisation, SourceError, SourceRecord
from cxrsynth.tasks.sources.chexpert import patient_and_study, read_chexpert_csv
from cxrsynth.tasks.sources.phantom.layout import LABELS, LESION_COLUMNS, LESIONS, REPORTS
from cxrsynth.tasks.sources.phantom.study import RESERVE_NAME, TEST_NAME
from cxrsynth.tasks.sources.tables import read_table, row_number

HELD_OUT_COLLECTIONS = (TEST_NAME, RESERVE_NAME)  # sub-folders of the root, read after the training collection


def report_file(root: Path, relative: str, where: str) -> Path:
    patient, study = patient_and_study(relative, where)
    return root / REPORTS / patient / f"{study}.txt"


def _attach_lesions(root: Path, records: dict[Path, SourceRecord]) -> None:
    path = root / LESIONS
    if not path.is_file():
        return
    for index, row in enumerate(read_table(path, LESION_COLUMNS).to_dict("records")):
        where = f"{path} row {row_number(index)}"
        record = records.get(root / row["Path"].strip())
        if record is None:
            raise SourceError(f"{where}: Path is not in {LABELS}")
        try:
            finding = check_finding(row["finding"].strip())
        except ValueError as exc:
            raise SourceError(f"{where}: {exc}") from None
        if not row["mask"].strip():
            raise SourceError(f"{where}: mask must be set")
        record.localisations.append(Localisation(finding, "mask", str(root / row["mask"].strip())))


def read_collection(root: Path, name: str | None = None) -> list[SourceRecord]:
    """One collection's records (reports and masks attached); ``name``: the held-out collection they belong to."""
    labels = root / LABELS
    records = read_chexpert_csv(labels, root)
    for record in records:
        report = report_file(root, record.image_path.relative_to(root).as_posix(), f"{labels} row {record.row}")
        record.report = report.read_text() if report.is_file() else None
        record.collection = name
    _attach_lesions(root, {record.image_path: record for record in records})
    return records


def read_phantom(root: str | Path) -> list[SourceRecord]:
    """The training collection, then the test and reserve collections where the phantom stage wrote them."""
    root = Path(root)
    if not (root / LABELS).is_file():
        raise SourceError(f"{root}: {LABELS} not found (has the phantom stage run?)")
    records = read_collection(root)
    for name in HELD_OUT_COLLECTIONS:
        if (root / name / LABELS).is_file():
            records += read_collection(root / name, name)
    return records
