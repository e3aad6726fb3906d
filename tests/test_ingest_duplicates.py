from pathlib import Path

import pytest

from cxrsynth.tasks.ingest import duplicates, images, select
from cxrsynth.tasks.ingest.images import ImageResult
from cxrsynth.tasks.sources.base import SourceRecord


def _listing(*entries):
    """(patient, pixel digest or None for a quarantined file) per row -> records, pseudonyms, results."""
    records = [SourceRecord(row=row, patient_key=patient, study_key="s", image_path=Path(f"{row}.png"))
               for row, (patient, _) in enumerate(entries, start=1)]
    pseudonyms = select.pseudonymise(records)
    results = {p.image_id: ImageResult(p.image_id, pixel_digest=digest or "missing", reason=None if digest else "file not found")
               for p, (_, digest) in zip(pseudonyms, entries)}
    return records, pseudonyms, results


def test_exact_duplicates_under_one_patient_are_dropped_with_a_reason():
    records, pseudonyms, results = _listing(("a", "x"), ("a", "y"), ("a", "x"), ("b", "z"), ("a", "x"), ("c", None))
    resolved = duplicates.resolve(records, pseudonyms, results, "stop")
    assert resolved.duplicates == ["img-000003", "img-000005"] and resolved.merged_patients == 0
    assert resolved.results["img-000003"].reason == "exact duplicate of img-000001 (source row 1): identical decoded pixels"
    assert [resolved.results[f"img-00000{n}"].reason for n in (1, 2, 4)] == [None, None, None]
    assert resolved.results["img-000006"].reason == "file not found"  # quarantined files are never duplicates
    assert resolved.pseudonyms == pseudonyms and results["img-000003"].reason is None  # the input is not changed


def test_one_image_under_two_patients_stops_naming_the_rows():
    records, pseudonyms, results = _listing(("a", "x"), ("b", "y"), ("c", "x"), ("d", "y"), ("e", "w"))
    with pytest.raises(duplicates.PatientConflict) as caught:
        duplicates.resolve(records, pseudonyms, results, "stop")
    assert str(caught.value) == (
        "2 image(s) listed under more than one patient, so one image could land in two splits: "
        "source row 1 (pat-00001) and source row 3 (pat-00003); source row 2 (pat-00002) and source row 4 (pat-00004). "
        "Correct the index, or set ingest.patient_conflict: merge to treat those patients as one.")


def test_merge_folds_every_image_of_the_patients_into_the_first():
    # b shares an image with a, and c shares another with b: a, b and c become one patient.
    records, pseudonyms, results = _listing(("a", "x"), ("b", "x"), ("b", "y"), ("c", "y"), ("c", "q"), ("d", "z"))
    resolved = duplicates.resolve(records, pseudonyms, results, "merge")
    assert [p.patient_id for p in resolved.pseudonyms] == ["pat-00001"] * 5 + ["pat-00004"]
    assert resolved.duplicates == ["img-000002", "img-000004"] and resolved.merged_patients == 2
    assert [p.study_id for p in resolved.pseudonyms] == [p.study_id for p in pseudonyms]


def test_remove_outputs_deletes_the_duplicate_image_and_its_masks(tmp_path):
    result = ImageResult("img-000002", localisations=((0, "nodule", "mask", "img-000002_0.png"), (1, "nodule", "box", "1,2,3,4")))
    for path in (tmp_path / images.IMAGES / "img-000002.png", tmp_path / images.SOURCE_MASKS / "img-000002_0.png",
                 tmp_path / images.IMAGES / "img-000001.png"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"png")
    duplicates.remove_outputs(tmp_path, result)
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == ["img-000001.png"]
