"""Where a phantom collection's files lie, shared by the writer and the reader.

Layout under the collection root (``data/phantom/``): ``files/patientNNNNN/studyM/
view1_frontal.dcm`` (12-bit MONOCHROME2 DICOM), ``reports/patientNNNNN/studyM.txt``,
``masks/patientNNNNN/studyM_K.png`` for the lesions that ship a mask, and three tables:
``labels.csv`` (CheXpert ``train.csv`` format), ``lesions.csv`` (``Path, finding, mask``) and
``truth.csv`` (per image and finding: what the image shows, with its attributes, what the label
CSV says and what the report says). Patient ids are synthetic (``PHANTOM-00001``).
"""

from __future__ import annotations

from cxrsynth.tasks.sources.phantom.study import Study

LABELS = "labels.csv"
LESIONS = "lesions.csv"
TRUTH = "truth.csv"
REPORTS = "reports"
LESION_COLUMNS: tuple[str, ...] = ("Path", "finding", "mask")
TRUTH_COLUMNS: tuple[str, ...] = ("Path", "finding", "state", "laterality", "location", "severity",
                                  "in_labels", "in_report")


def patient_folder(patient_number: int) -> str:
    return f"patient{patient_number:05d}"


def image_path(study: Study) -> str:
    """Path of a study's DICOM, relative to its collection's root (CheXpert's naming)."""
    return f"files/{patient_folder(study.patient_number)}/study{study.study_index + 1}/view1_frontal.dcm"


def report_path(study: Study) -> str:
    return f"{REPORTS}/{patient_folder(study.patient_number)}/study{study.study_index + 1}.txt"


def mask_path(study: Study, lesion_number: int) -> str:
    return f"masks/{patient_folder(study.patient_number)}/study{study.study_index + 1}_{lesion_number}.png"
