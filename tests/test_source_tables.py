"""The index-file rows every adapter walks (tasks/sources/tables.py): numbering, cells, records."""

from pathlib import Path

import pytest

from cxrsynth.tasks.sources.base import Localisation, SourceError, SourceRecord
from cxrsynth.tasks.sources.folder import read_folder
from cxrsynth.tasks.sources.mimic import read_mimic
from cxrsynth.tasks.sources.tables import index_rows, read_table
from tests.sourcefiles import write_csv


def _rows(tmp_path, header, rows):
    path = write_csv(tmp_path / "index.csv", header, rows)
    return list(index_rows(read_table(path), path)), path


def test_rows_are_numbered_as_people_count_them_and_say_where_they_are(tmp_path):
    rows, path = _rows(tmp_path, ["path", "patient_id"], [["a.png", "p1 "], ["b.png", "p2"]])
    assert [(row.number, row.where) for row in rows] == [(1, f"{path} row 1"), (2, f"{path} row 2")]
    assert rows[0].cells == {"path": "a.png", "patient_id": "p1 "}  # as read_table gives them
    assert rows[0].text("patient_id") == "p1" and rows[0].text("no_such_column") == ""


def test_required_cells_come_back_stripped_or_the_row_is_named(tmp_path):
    rows, path = _rows(tmp_path, ["ImageId", "EncodedPixels"], [["1.2.3 ", "-1"], ["1.2.4", "  "]])
    assert rows[0].required("ImageId", "EncodedPixels") == ("1.2.3", "-1")
    with pytest.raises(SourceError, match=rf"^{path} row 2: ImageId and EncodedPixels must be set \(-1 for none\)$"):
        rows[1].required("ImageId", "EncodedPixels", hint=" (-1 for none)")
    with pytest.raises(SourceError, match=r"row 2: EncodedPixels must be set$"):
        rows[1].required("EncodedPixels")
    with pytest.raises(SourceError, match=r"row 1: a, b and c must be set"):
        rows[0].required("a", "b", "c")


def test_a_row_makes_its_record_with_the_view_in_capitals(tmp_path):
    rows, _ = _rows(tmp_path, ["path"], [["a.png"], ["b.png"]])
    boxes = [Localisation("nodule", "box", "1,2,3,4")]
    record = rows[1].record("p1", "p1/s1", Path("a.png"), view=" pa ", labels={"nodule": 1}, localisations=boxes, site="X")
    assert record == SourceRecord(row=2, patient_key="p1", study_key="p1/s1", image_path=Path("a.png"), view="PA",
                                  labels={"nodule": 1}, localisations=boxes, site="X")
    assert rows[0].record("p", "s", Path("b.png"), view="  ").view is None
    assert rows[0].record("p", "s", Path("b.png")).view is None


def test_adapters_name_the_row_of_a_blank_required_cell(tmp_path):
    write_csv(tmp_path / "folder" / "index.csv", ["path", "patient_id"], [["a.png", "p1"], ["b.png", ""]])
    with pytest.raises(SourceError, match=r"index.csv row 2: path and patient_id must be set"):
        read_folder(tmp_path / "folder")
    mimic = tmp_path / "mimic"
    write_csv(mimic / "mimic-cxr-2.0.0-metadata.csv", ["dicom_id", "subject_id", "study_id", "ViewPosition"],
              [["d1", "10000032", "50414267", "PA"], ["d2", "p10000032", "50414267", "PA"]])
    write_csv(mimic / "mimic-cxr-2.0.0-chexpert.csv", ["subject_id", "study_id", "Cardiomegaly", "Pleural Effusion",
                                                       "Pneumothorax", "Lung Lesion", "Atelectasis", "Consolidation"], [])
    with pytest.raises(SourceError, match=r"metadata.csv row 2: subject_id and study_id must be numbers"):
        read_mimic(mimic)
