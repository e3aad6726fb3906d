import gzip
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.params import IngestParams
from cxrsynth.tasks.sources.base import Localisation, SourceError
from cxrsynth.tasks.sources.chexpert import CHEXPERT_FINDINGS, read_chexpert, read_chexpert_csv
from cxrsynth.tasks.sources.folder import read_folder
from cxrsynth.tasks.sources.mimic import read_mimic
from cxrsynth.tasks.sources.nih import NIH_FINDINGS, read_nih
from cxrsynth.tasks.sources.phantom.collection import read_phantom
from cxrsynth.tasks.sources.registry import READERS, read_source
from cxrsynth.tasks.sources.siim import read_siim
from tests.sourcefiles import CHEXPERT_HEADER, chexpert_row, ramp, write_csv, write_dicom, write_phantom_collection, write_picture

# ------------------------------------------------------------------------------------- CheXpert


def _chexpert(root: Path, train_rows, valid_rows=()) -> Path:
    folder = root / "CheXpert-v1.0-small"
    write_csv(folder / "train.csv", CHEXPERT_HEADER, train_rows)
    if valid_rows:
        write_csv(folder / "valid.csv", CHEXPERT_HEADER, valid_rows)
    return folder


def test_chexpert_labels_views_and_paths(tmp_path):
    folder = _chexpert(
        tmp_path,
        [
            chexpert_row("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", "AP",
                         **{"Lung Lesion": "1.0", "Pneumothorax": "0.0", "Pleural Effusion": "-1.0", "Edema": "1.0"}),
            chexpert_row("CheXpert-v1.0-small/train/patient00001/study1/view2_lateral.jpg", "LATERAL"),
        ],
        [chexpert_row("CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg", "PA", Cardiomegaly="1.0")],
    )
    records = read_chexpert(folder)
    assert [r.row for r in records] == [1, 2, 1]
    first = records[0]
    assert first.image_path == tmp_path / "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    assert (first.patient_key, first.study_key, first.view) == ("patient00001", "patient00001/study1", "AP")
    assert first.labels == {"cardiomegaly": None, "pleural_effusion": -1, "pneumothorax": 0, "nodule": 1,
                            "atelectasis": None, "consolidation": None}
    assert records[1].view == "LATERAL" and records[2].labels["cardiomegaly"] == 1
    assert set(CHEXPERT_FINDINGS.values()) == set(FINDINGS)


def test_chexpert_missing_column_is_named(tmp_path):
    header = [c for c in CHEXPERT_HEADER if c != "Pneumothorax"]
    write_csv(tmp_path / "train.csv", header, [])
    with pytest.raises(SourceError, match=r"train.csv: missing column\(s\) 'Pneumothorax'"):
        read_chexpert(tmp_path)


def test_chexpert_bad_value_names_row_and_column(tmp_path):
    folder = _chexpert(tmp_path, [chexpert_row("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"),
                                  chexpert_row("CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg",
                                               Atelectasis="2.0")])
    with pytest.raises(SourceError, match=r"row 2, column 'Atelectasis'"):
        read_chexpert(folder)


def test_chexpert_path_without_patient_folder(tmp_path):
    folder = _chexpert(tmp_path, [chexpert_row("CheXpert-v1.0-small/train/view1_frontal.jpg")])
    with pytest.raises(SourceError, match="row 1: Path has no patientNNNNN"):
        read_chexpert(folder)
    with pytest.raises(SourceError, match="no CheXpert label file"):
        read_chexpert(tmp_path)


def test_chexpert_real_rows(shared_data, tmp_path):
    csv_path = shared_data / "formats" / "chexpert-train.head500.csv"
    records = read_chexpert_csv(csv_path, tmp_path)
    raw = pd.read_csv(csv_path)
    assert len(records) == len(raw) == 500
    for column, finding in CHEXPERT_FINDINGS.items():
        for value, state in ((1.0, 1), (0.0, 0), (-1.0, -1)):
            assert sum(r.labels[finding] == state for r in records) == (raw[column] == value).sum()
        assert sum(r.labels[finding] is None for r in records) == raw[column].isna().sum()
    assert {r.view for r in records} <= {"AP", "PA", "LATERAL", "LL", "RL", None}
    assert len({r.patient_key for r in records}) == raw["Path"].str.extract(r"(patient\d+)")[0].nunique()
    assert records[0].image_path == tmp_path / raw["Path"][0]


# ------------------------------------------------------------------------------------- MIMIC-CXR-JPG


def _mimic(root: Path) -> Path:
    write_csv(root / "mimic-cxr-2.0.0-metadata.csv", ["dicom_id", "subject_id", "study_id", "ViewPosition", "Rows"],
              [["d1", "10000032", "50414267", "PA", "3056"], ["d2", "10000032", "50414267", "LATERAL", "3056"],
               ["d3", "11000011", "53000001", "", "2544"]])
    labels = write_csv(root / "labels.tmp", ["subject_id", "study_id", "No Finding", *CHEXPERT_FINDINGS],
                       [["10000032", "50414267", "", "1.0", "", "-1.0", "1.0", "", "0.0"]])
    with gzip.open(root / "mimic-cxr-2.0.0-chexpert.csv.gz", "wb") as handle:  # as PhysioNet ships it
        handle.write(labels.read_bytes())
    labels.unlink()
    report = root / "files/p10/p10000032/s50414267.txt"
    report.parent.mkdir(parents=True)
    report.write_text("FINDINGS: Small right pneumothorax.\nIMPRESSION: Pneumothorax.\n")
    return root


def test_mimic_images_labels_and_reports(tmp_path):
    records = read_mimic(_mimic(tmp_path))
    assert [r.image_path.relative_to(tmp_path).as_posix() for r in records] == [
        "files/p10/p10000032/s50414267/d1.jpg", "files/p10/p10000032/s50414267/d2.jpg", "files/p11/p11000011/s53000001/d3.jpg"]
    assert [r.view for r in records] == ["PA", "LATERAL", None]
    assert records[0].labels == {"cardiomegaly": 1, "pleural_effusion": None, "pneumothorax": -1, "nodule": 1,
                                 "atelectasis": None, "consolidation": 0}
    assert records[0].report.startswith("FINDINGS: Small right pneumothorax") and records[1].report == records[0].report
    assert records[2].report is None and set(records[2].labels.values()) == {None}
    assert records[0].patient_key == records[1].patient_key != records[2].patient_key


def test_mimic_missing_index_file(tmp_path):
    _mimic(tmp_path)
    (tmp_path / "mimic-cxr-2.0.0-metadata.csv").unlink()
    with pytest.raises(SourceError, match="mimic-cxr-2.0.0-metadata.csv"):
        read_mimic(tmp_path)


# ------------------------------------------------------------------------------------- NIH


NIH_HEADER = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
              "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"]


def _nih(root: Path, labels=("Effusion|Mass", "No Finding", "Pneumothorax")) -> Path:
    rows = []
    for number, finding_labels in enumerate(labels, start=1):
        name = f"{number:08d}_000.png"
        write_picture(root / f"images_00{number}" / "images" / name, ramp(32, 32, high=255, dtype=np.uint8))
        rows.append([name, finding_labels, "0", str(number), "50", "F", "PA" if number % 2 else "AP", "2048", "2500", "0.143", "0.143"])
    write_csv(root / "Data_Entry_2017_v2020.csv", NIH_HEADER, rows)
    (root / "BBox_List_2017.csv").write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
        "00000001_000.png,Effusion,10.5,20,30,40\n"
        "00000001_000.png,Mass,1,2,3,4\n"
        "00000003_000.png,Pneumothorax,5,6,7,8\n"
    )
    return root


def test_nih_labels_boxes_and_spacing(tmp_path):
    records = read_nih(_nih(tmp_path))
    assert [r.image_path for r in records] == [tmp_path / f"images_00{n}/images/{n:08d}_000.png" for n in (1, 2, 3)]
    assert records[0].labels == {f: int(f == "pleural_effusion") for f in FINDINGS}
    assert records[1].labels == dict.fromkeys(FINDINGS, 0)
    assert records[0].localisations == [Localisation("pleural_effusion", "box", "10.5,20,30,40")]  # the Mass box is not modelled
    assert records[2].localisations == [Localisation("pneumothorax", "box", "5,6,7,8")]
    assert (records[0].pixel_spacing_mm, records[0].pixel_spacing_shape) == (pytest.approx(0.143), (2500, 2048))
    assert [r.view for r in records] == ["PA", "AP", "PA"]
    assert len({r.patient_key for r in records}) == 3


def test_nih_unknown_label_names_the_row(tmp_path):
    with pytest.raises(SourceError, match=r"row 2: unknown NIH label 'Flu'"):
        read_nih(_nih(tmp_path, labels=("Effusion", "Flu|Nodule")))


def test_nih_unknown_box_label_and_missing_column(tmp_path):
    root = _nih(tmp_path)
    (root / "BBox_List_2017.csv").write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n00000001_000.png,Lump,1,2,3,4\n")
    with pytest.raises(SourceError, match=r"BBox_List_2017.csv row 1: unknown NIH label 'Lump'"):
        read_nih(root)
    table = pd.read_csv(root / "Data_Entry_2017_v2020.csv").drop(columns=["Patient ID"])
    table.to_csv(root / "Data_Entry_2017_v2020.csv", index=False)
    with pytest.raises(SourceError, match=r"missing column\(s\) 'Patient ID'"):
        read_nih(root)


def test_nih_mapping_covers_the_fifteen_labels():
    released = {"Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis", "Hernia",
                "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax", "No Finding"}
    assert released <= set(NIH_FINDINGS)
    assert {v for v in NIH_FINDINGS.values() if v} == set(FINDINGS)


def test_nih_real_dev_set(shared_data):
    root = shared_data / "nih-chestxray14-dev"
    records = read_nih(root)
    assert len(records) == 313 and all(r.image_path.is_file() for r in records)
    counts = {f: sum(r.labels[f] == 1 for r in records) for f in FINDINGS}
    assert counts == {"atelectasis": 53, "pleural_effusion": 45, "nodule": 52, "cardiomegaly": 29,
                      "pneumothorax": 22, "consolidation": 47}
    boxes = [l for r in records for l in r.localisations]
    assert sorted(l.finding for l in boxes) == ["atelectasis", "cardiomegaly", "nodule", "nodule"]
    assert all(l.kind == "box" and len(l.value.split(",")) == 4 for l in boxes)
    assert all(r.pixel_spacing_mm and 0.1 < r.pixel_spacing_mm < 0.2 for r in records)
    assert {r.view for r in records} == {"PA", "AP"}


# ------------------------------------------------------------------------------------- SIIM-ACR


def _siim(root: Path, rows) -> Path:
    for number, patient in enumerate(["P-A", "P-A", "P-B"], start=1):
        write_dicom(root / "dicom-images-train" / f"study{number}" / "series" / f"1.2.3.{number}.dcm", ramp(16, 16, high=255),
                    bits_stored=8, patient_id=patient, view="AP" if number == 3 else "PA")
    (root / "train-rle.csv").write_text("ImageId, EncodedPixels\n" + "".join(f"{a}, {b}\n" for a, b in rows))
    return root


def test_siim_rle_rows_and_header_keys(tmp_path):
    records = read_siim(_siim(tmp_path, [("1.2.3.1", "-1"), ("1.2.3.2", "3 4"), ("1.2.3.2", "20 5"), ("1.2.3.3", "0 2")]))
    assert [r.row for r in records] == [1, 2, 4]
    assert [r.labels for r in records] == [{"pneumothorax": 0}, {"pneumothorax": 1}, {"pneumothorax": 1}]
    assert records[1].localisations == [Localisation("pneumothorax", "rle", "3 4"), Localisation("pneumothorax", "rle", "20 5")]
    assert [r.patient_key for r in records] == ["P-A", "P-A", "P-B"]  # from the header, pseudonymised by ingest
    assert [r.view for r in records] == ["PA", "PA", "AP"]
    assert records[0].image_path.name == "1.2.3.1.dcm"


def test_siim_contradictory_rows_and_missing_csv(tmp_path):
    with pytest.raises(SourceError, match="row 2: an image listed with -1"):
        read_siim(_siim(tmp_path / "a", [("1.2.3.1", "-1"), ("1.2.3.1", "3 4")]))
    with pytest.raises(SourceError, match="row 2: an image listed with -1"):
        read_siim(_siim(tmp_path / "b", [("1.2.3.1", "3 4"), ("1.2.3.1", "-1")]))
    (tmp_path / "b" / "train-rle.csv").unlink()
    with pytest.raises(SourceError, match="one RLE CSV"):
        read_siim(tmp_path / "b")


def test_siim_real_rle_file_and_dicom(shared_data, tmp_path):
    formats = shared_data / "formats"
    dicom = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
    (tmp_path / "dicom-images-train" / "a").mkdir(parents=True)
    (tmp_path / "dicom-images-train" / "a" / dicom).symlink_to(formats / dicom)
    (tmp_path / "train-rle.csv").symlink_to(formats / "siim-pneumothorax-train-rle.head300.csv")
    records = read_siim(tmp_path)
    assert len(records) == 300 and sum(r.labels["pneumothorax"] == 1 for r in records) == 95
    present = records[0]
    assert present.image_path.is_file() and present.labels == {"pneumothorax": 0} and present.view == "PA"
    assert present.patient_key == "16d7f894-55d7-4d95-8957-d18987f0e981"  # the header's PatientID
    assert sum(r.image_path.is_file() for r in records) == 1  # the others are quarantined by ingest


# ------------------------------------------------------------------------------------- folder


FOLDER_HEADER = ["path", "patient_id", "study_id", "view", "report", "pixel_spacing_mm", "site", "pneumothorax", "nodule"]


def test_folder_rows(tmp_path):
    write_dicom(tmp_path / "a.dcm", ramp())
    write_picture(tmp_path / "sub" / "b.png", ramp(high=255, dtype=np.uint8))
    write_csv(tmp_path / "index.csv", FOLDER_HEADER, [
        ["a.dcm", "X1", "s1", "pa", "No pneumothorax.", "0.2", "Clinic", "0", ""],
        ["sub/b.png", "X1", "", "", "", "", "", "1", "-1"],
    ])
    first, second = read_folder(tmp_path)
    assert first.image_path == tmp_path / "a.dcm" and second.image_path == tmp_path / "sub" / "b.png"
    assert (first.view, first.report, first.pixel_spacing_mm, first.site) == ("PA", "No pneumothorax.", 0.2, "Clinic")
    assert first.labels == {"pneumothorax": 0, "nodule": None} and second.labels == {"pneumothorax": 1, "nodule": -1}
    assert first.patient_key == second.patient_key and first.study_key != second.study_key
    assert (second.view, second.report, second.pixel_spacing_mm) == (None, None, None)
    assert read_folder(tmp_path / "index.csv")[0].image_path == first.image_path  # ingest.path may name the CSV


def test_folder_unknown_column_names_it(tmp_path):
    write_csv(tmp_path / "index.csv", ["path", "patient_id", "fracture"], [["a.png", "X", "1"]])
    with pytest.raises(SourceError, match=r"column\(s\) 'fracture' are neither"):
        read_folder(tmp_path)


def test_folder_missing_required_column_and_bad_values(tmp_path):
    write_csv(tmp_path / "a" / "index.csv", ["path", "view"], [["a.png", "PA"]])
    with pytest.raises(SourceError, match=r"missing column\(s\) 'patient_id'"):
        read_folder(tmp_path / "a")
    write_csv(tmp_path / "b" / "index.csv", ["path", "patient_id", "nodule"], [["a.png", "X", "yes"]])
    with pytest.raises(SourceError, match=r"row 1, column 'nodule': label value 'yes'"):
        read_folder(tmp_path / "b")
    write_csv(tmp_path / "c" / "index.csv", ["path", "patient_id", "pixel_spacing_mm"], [["a.png", "X", "-1"]])
    with pytest.raises(SourceError, match="row 1, column 'pixel_spacing_mm'"):
        read_folder(tmp_path / "c")
    write_csv(tmp_path / "c" / "other.csv", ["path"], [])
    with pytest.raises(SourceError, match="expected one index CSV"):
        read_folder(tmp_path / "c")


# ------------------------------------------------------------------------------------- phantom collection


def test_phantom_collection_labels_reports_and_masks(tmp_path):
    root = write_phantom_collection(tmp_path / "phantom", n_patients=4)
    records = read_phantom(root)
    assert len(records) == 5  # patient 3 has two studies
    assert all(r.report and r.report.startswith("FINDINGS:") for r in records)
    with_masks = [r for r in records if r.localisations]
    assert with_masks and all(r.labels["pneumothorax"] == 1 for r in with_masks)
    assert all(l.kind == "mask" and Path(l.value).is_file() for r in with_masks for l in r.localisations)
    assert records[1].labels["cardiomegaly"] == -1


def test_phantom_lesion_rows_are_checked(tmp_path):
    root = write_phantom_collection(tmp_path / "phantom", n_patients=2)
    write_csv(root / "lesions.csv", ["Path", "finding", "mask"],
              [["files/patient00001/study1/view1_frontal.dcm", "fracture", "masks/x.png"]])
    with pytest.raises(SourceError, match="lesions.csv row 1: unknown finding 'fracture'"):
        read_phantom(root)
    write_csv(root / "lesions.csv", ["Path", "finding", "mask"], [["files/patient09999/study1/view1_frontal.dcm", "nodule", "m.png"]])
    with pytest.raises(SourceError, match="lesions.csv row 1: Path is not in labels.csv"):
        read_phantom(root)


# ------------------------------------------------------------------------------------- registry


def test_registry_serves_every_configurable_source(tmp_path):
    assert set(READERS) == set(typing.get_args(IngestParams.model_fields["source"].annotation))
    with pytest.raises(SourceError, match="unknown data source"):
        read_source("padchest", tmp_path)
    with pytest.raises(SourceError, match="data source folder not found"):
        read_source("nih", tmp_path / "absent")
