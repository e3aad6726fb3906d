"""Builders of small files in the real formats the adapters read (DICOM, PNG, JPG, index CSVs)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

CHEXPERT_HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,"
    "Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,"
    "Fracture,Support Devices"
).split(",")


def ramp(height: int = 40, width: int = 32, high: int = 4095, dtype=np.uint16) -> np.ndarray:
    """Stored values rising left to right and top to bottom, from 0 to ``high``."""
    rows, columns = np.mgrid[0:height, 0:width]
    values = (rows * width + columns) / (height * width - 1) * high
    return np.round(values).astype(dtype)


def write_dicom(
    path: Path,
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    voi_lut: tuple[int, int, Sequence[int]] | None = None,  # (first value mapped, bits per entry, table)
    patient_name: str = "ANON^PHANTOM",
    patient_id: str = "ANON-0",
    pixel_spacing: float | None = 0.5,
    institution: str | None = None,
    manufacturer: str | None = None,
    view: str | None = "PA",
) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[path.name])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "DX"
    dataset.PatientName = patient_name
    dataset.PatientID = patient_id
    dataset.StudyInstanceUID = generate_uid(entropy_srcs=[patient_id, "study"])
    if view:
        dataset.ViewPosition = view
    if institution:
        dataset.InstitutionName = institution
    if manufacturer:
        dataset.Manufacturer = manufacturer
    if pixel_spacing:
        dataset.PixelSpacing = [pixel_spacing, pixel_spacing]
    dataset.set_pixel_data(stored, photometric, bits_stored, generate_instance_uid=False)
    if rescale is not None:
        dataset.RescaleSlope, dataset.RescaleIntercept = rescale
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = window
    if voi_lut is not None:
        first, bits, table = voi_lut
        item = Dataset()
        item.LUTDescriptor = [len(table), first, bits]
        item.add_new(0x00283006, "US", [int(v) for v in table])  # LUTData, as US rather than the OW alternative
        dataset.VOILUTSequence = DicomSequence([item])
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


def write_picture(path: Path, array: np.ndarray, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save)
    return path


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def chexpert_row(path: str, view: str = "PA", **labels: str) -> list[str]:
    """A CheXpert row: labels by column name ("Lung Lesion"="1.0"); others blank."""
    row = dict.fromkeys(CHEXPERT_HEADER, "")
    row.update({"Path": path, "Sex": "Female", "Age": "60", "Frontal/Lateral": "Lateral" if view == "LATERAL" else "Frontal",
                "AP/PA": "" if view == "LATERAL" else view})
    row.update(labels)
    return [row[column] for column in CHEXPERT_HEADER]


def write_phantom_collection(root: Path, n_patients: int = 6, size: int = 48, identifiers: bool = False) -> Path:
    """A small collection in the phantom stage's layout: labels.csv, DICOMs, reports, lesions.csv, masks."""
    rows, lesions = [], []
    for patient in range(1, n_patients + 1):
        for study in (1, 2) if patient % 3 == 0 else (1,):
            relative = f"files/patient{patient:05d}/study{study}/view1_frontal.dcm"
            stored = np.roll(ramp(size, size), patient * 3 + study, axis=1)
            site = "SITE-A" if patient % 2 else "SITE-B"
            write_dicom(root / relative, stored, patient_id=f"PHANTOM-{patient:05d}", institution=site, manufacturer=site,
                        pixel_spacing=1.4)
            pneumothorax = "1.0" if patient % 3 == 1 else "0.0"
            rows.append(chexpert_row(relative, "PA", **{"Pneumothorax": pneumothorax,
                                                         "Cardiomegaly": "-1.0" if patient == 2 else ""}))
            report = root / "reports" / f"patient{patient:05d}" / f"study{study}.txt"
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(f"FINDINGS: {'Small left apical pneumothorax.' if pneumothorax == '1.0' else 'No pneumothorax.'}\n"
                              "IMPRESSION: As above.\n")
            if pneumothorax == "1.0":
                mask = np.zeros((size, size), np.uint8)
                mask[2:10, 30:40] = 255
                mask_path = f"masks/patient{patient:05d}/study{study}_0.png"
                write_picture(root / mask_path, mask)
                lesions.append([relative, "pneumothorax", mask_path])
    write_csv(root / "labels.csv", CHEXPERT_HEADER, rows)
    write_csv(root / "lesions.csv", ["Path", "finding", "mask"], lesions)
    return root
