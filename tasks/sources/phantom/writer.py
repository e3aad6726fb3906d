"""Writing the phantom collection the way a hospital exports one (the layout: ``layout.py``).

``generate_patients`` writes some patients of one collection under that collection's root and returns
their table rows, so chunks can run in parallel in any order; ``write_tables`` sorts and writes the
tables once all are done.
"""

from __future__ import annotations

import datetime
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.io import atomic_path, write_csv, write_mask, write_text
from cxrsynth.tasks.params import PhantomParams
from cxrsynth.tasks.sources.phantom.layout import (
    LABELS,
    LESION_COLUMNS,
    LESIONS,
    TRUTH,
    TRUTH_COLUMNS,
    image_path,
    mask_path,
    report_path,
)
from cxrsynth.tasks.sources.phantom.rendering import render
from cxrsynth.tasks.sources.phantom.reports import CHEXPERT_COLUMNS, label_row, write_report
from cxrsynth.tasks.sources.phantom.sampling import sample_patient
from cxrsynth.tasks.sources.phantom.study import EXPORT_STREAM, TRAINING, Collection, Study

BITS_STORED = 12
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
FIRST_STUDY_DATE = datetime.date(2019, 1, 1)


@dataclass
class Rows:
    """Table rows of some patients, in generation order."""

    labels: list[dict] = field(default_factory=list)
    lesions: list[dict] = field(default_factory=list)
    truth: list[dict] = field(default_factory=list)
    sites: list[str] = field(default_factory=list)  # per image, for counting (not a table)

    def extend(self, other: Rows) -> None:
        self.labels += other.labels
        self.lesions += other.lesions
        self.truth += other.truth
        self.sites += other.sites


def generate_patients(
    config: PhantomParams, patients: Sequence[int], root: str | Path, collection: Collection = TRAINING
) -> Rows:
    """Render, report and write the ``patients`` (indices) of ``collection`` under ``root``, the collection's root."""
    root = Path(root)
    rows = Rows()
    for index in patients:
        studies = sample_patient(config, index, collection)
        for number, study in enumerate(studies):
            rows.extend(write_study(config, study, studies[number - 1] if number else None, root))
    return rows


def write_study(config: PhantomParams, study: Study, prior: Study | None, root: Path) -> Rows:
    """One study's DICOM, report and shipped masks; its rows for the three tables."""
    path = image_path(study)
    rendering = render(study, config.size, config.pixel_spacing_mm, config.lesion_contrast)
    write_dicom(root / path, rendering.image, study, config)
    report = write_report(study, prior, config)
    write_text(root / report_path(study), report.text)
    rows = Rows(labels=[label_row(study, report, path)], sites=[study.site])
    ship = study.rng(config.seed, EXPORT_STREAM, study.study_index)
    for number, lesion in enumerate(study.lesions, start=1):
        if ship.random() < config.mask_fraction:
            relative = mask_path(study, number)
            write_mask(root / relative, rendering.masks[lesion.finding].astype(np.uint8) * 255)
            rows.lesions.append({"Path": path, "finding": lesion.finding, "mask": relative})
    for finding in FINDINGS:
        lesion = study.lesion(finding)
        labelled, said = report.labels[finding], report.states[finding]
        rows.truth.append({
            "Path": path, "finding": finding, "state": int(lesion is not None),
            "laterality": lesion.laterality if lesion else None,
            "location": lesion.location if lesion else None,
            "severity": lesion.severity if lesion else None,
            "in_labels": None if labelled is None else float(labelled),
            "in_report": said,
        })
    return rows


def write_dicom(path: Path, image: np.ndarray, study: Study, config: PhantomParams) -> None:
    """A 12-bit MONOCHROME2 computed radiograph with a synthetic, non-identifying patient."""
    pixels = np.round(np.clip(image, 0, 1) * (2**BITS_STORED - 1)).astype(np.uint16)
    identity = f"{config.seed}/{image_path(study)}"  # UIDs are deterministic in seed and study
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[identity, "instance"])
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[identity, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[identity, "series"])
    number = study.patient_number
    ds.PatientName = f"PHANTOM^{number:05d}"
    ds.PatientID = f"PHANTOM-{number:05d}"
    ds.PatientSex = study.sex[0]
    ds.PatientAge = f"{study.age:03d}Y"
    date = FIRST_STUDY_DATE + datetime.timedelta(days=(number - 1) % 365 + study.days_from_first)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.StudyID = str(study.study_index + 1)
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Modality = "CR"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.InstitutionName = study.site
    ds.Manufacturer = study.site
    ds.ManufacturerModelName = "cxrsynth phantom"
    ds.BurnedInAnnotation = "NO"
    ds.PixelSpacing = [config.pixel_spacing_mm, config.pixel_spacing_mm]
    ds.ImagerPixelSpacing = [config.pixel_spacing_mm, config.pixel_spacing_mm]
    ds.set_pixel_data(pixels, photometric_interpretation="MONOCHROME2", bits_stored=BITS_STORED,
                      generate_instance_uid=False)
    ds.WindowCenter = 2**(BITS_STORED - 1)
    ds.WindowWidth = 2**BITS_STORED
    with atomic_path(path) as temp:
        ds.save_as(temp, enforce_file_format=True)


def read_dicom_image(path: str | Path) -> np.ndarray:
    """A written phantom DICOM back as float32 in [0, 1]."""
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float32) / (2 ** int(ds.BitsStored) - 1)


def tables(rows: Rows) -> dict[str, pd.DataFrame]:
    """The three tables, sorted so that the order of generation does not matter."""
    labels = pd.DataFrame(rows.labels, columns=list(CHEXPERT_COLUMNS)).sort_values("Path", kind="stable")
    lesions = pd.DataFrame(rows.lesions, columns=list(LESION_COLUMNS)).sort_values(["Path", "mask"], kind="stable")
    truth = pd.DataFrame(rows.truth, columns=list(TRUTH_COLUMNS))
    truth["finding_order"] = truth["finding"].map(FINDINGS.index)
    truth = truth.sort_values(["Path", "finding_order"], kind="stable").drop(columns="finding_order")
    truth["state"] = truth["state"].astype("int8")
    truth["in_report"] = truth["in_report"].astype("Int8")
    labels["Age"] = labels["Age"].astype(int)
    return {LABELS: labels.reset_index(drop=True), LESIONS: lesions.reset_index(drop=True),
            TRUTH: truth.reset_index(drop=True)}


def write_tables(rows: Rows, root: str | Path) -> dict[str, pd.DataFrame]:
    written = tables(rows)
    for name, frame in written.items():
        write_csv(Path(root) / name, frame)
    return written


def publish(staging: Path, final: Path) -> None:
    """Swap a fully written collection into place: readers never see a half-written one."""
    retired = final.with_name(f".{final.name}.retired")
    shutil.rmtree(retired, ignore_errors=True)
    if final.exists():
        os.replace(final, retired)
    os.replace(staging, final)
    shutil.rmtree(retired, ignore_errors=True)
