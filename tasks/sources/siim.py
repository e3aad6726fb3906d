"""SIIM-ACR pneumothorax as distributed: a DICOM tree and the RLE CSV (``ImageId, EncodedPixels``).

``ImageId`` is the DICOM's SOP Instance UID and file stem; ``-1`` means no pneumothorax; an
image with several lesions has several rows. The patient, study and view come from each DICOM's
header (read without its pixels); ingest replaces the patient and study with pseudonyms. DICOMs
without a row in the CSV (the unlabelled test images) are not part of the labelled source.
"""

from __future__ import annotations

from pathlib import Path

import pydicom

from cxrsynth.tasks.findings import ABSENT, PRESENT
from cxrsynth.tasks.masks.rle import NO_LESION
from cxrsynth.tasks.sources.base import Localisation, SourceError, SourceRecord
from cxrsynth.tasks.sources.tables import index_rows, read_table

RLE_COLUMNS = ("ImageId", "EncodedPixels")
HEADER_TAGS = ("PatientID", "StudyInstanceUID", "ViewPosition")


def _rle_file(root: Path) -> Path:
    """The one top-level CSV with ImageId and EncodedPixels columns (train-rle.csv, stage_2_train.csv)."""
    found = []
    for path in sorted(root.glob("*.csv")):
        with path.open(errors="replace") as handle:
            header = [column.strip() for column in handle.readline().split(",")]
        if all(column in header for column in RLE_COLUMNS):
            found.append(path)
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise SourceError(f"{root}: expected one RLE CSV with columns ImageId, EncodedPixels; found {names}")
    return found[0]


def _header(path: Path) -> dict[str, str]:
    """Patient, study and view from the DICOM header; empty where the file cannot say (ingest quarantines it)."""
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
    except Exception:  # an unreadable file is reported when ingest decodes it
        return {}
    return {tag: str(dataset.get(tag, "") or "").strip() for tag in HEADER_TAGS}


def read_siim(root: str | Path) -> list[SourceRecord]:
    root = Path(root)
    rle_path = _rle_file(root)
    table = read_table(rle_path, RLE_COLUMNS)
    dicoms = {path.stem: path for path in sorted(root.rglob("*.dcm"))}
    records: dict[str, SourceRecord] = {}
    for row in index_rows(table, rle_path):
        image_id, rle = row.required(*RLE_COLUMNS, hint=" (-1 for no pneumothorax)")
        record = records.get(image_id)
        if record is None:
            path = dicoms.get(image_id, root / f"{image_id}.dcm")  # a missing file is quarantined by ingest
            header = _header(path) if path.is_file() else {}
            # Without a readable header the image is its own patient; ingest quarantines it anyway.
            patient = header.get("PatientID") or image_id
            record = records[image_id] = row.record(
                patient, header.get("StudyInstanceUID") or f"{patient}/{image_id}", path,
                view=header.get("ViewPosition"), labels={"pneumothorax": ABSENT},
            )
        later_row = record.row != row.number
        if later_row and (rle == NO_LESION or not record.localisations):
            raise SourceError(f"{row.where}: an image listed with -1 (no pneumothorax) also has other rows")
        if rle != NO_LESION:
            record.labels["pneumothorax"] = PRESENT
            record.localisations.append(Localisation("pneumothorax", "rle", rle))
    return list(records.values())
