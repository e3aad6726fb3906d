from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrsynth.tasks import manifest
from cxrsynth.tasks.findings import FINDINGS, patient_side
from cxrsynth.tasks.masks import attributes
from cxrsynth.tasks.masks.geometry import Geometry, fit

SQUARE = fit(64, 64, 32)  # scale 0.5, no padding
WIDE = fit(64, 128, 32)  # scale 0.25, content rows 8..24


def square_mask(geometry: Geometry, top: int, left: int, size: int) -> np.ndarray:
    mask = np.zeros(geometry.shape, bool)
    mask[top : top + size, left : left + size] = True
    return mask


def test_patient_left_is_image_right():
    assert patient_side(20.0, midline=16.0) == "left"
    assert patient_side(10.0, midline=16.0) == "right"


def test_lesion_attributes_of_a_known_square():
    found = attributes.lesion_attributes(square_mask(SQUARE, 2, 20, 4), SQUARE, pixel_spacing_mm=2.0)
    assert found == {
        "area_px": 16, "area_mm2": 64.0, "centroid_y": 3.5, "centroid_x": 21.5,
        "bbox": [2, 20, 6, 24], "laterality": "left", "zone": "upper",
    }


@pytest.mark.parametrize("spacing", [None, float("nan"), pd.NA])
def test_area_in_mm2_is_null_without_pixel_spacing(spacing):
    assert attributes.lesion_attributes(square_mask(SQUARE, 2, 2, 2), SQUARE, spacing)["area_mm2"] is None


def test_laterality_follows_the_midline_of_an_asymmetrically_padded_source():
    geometry = Geometry(100, 50, 0.5, pad_top=7, pad_left=20, height=64, width=64)  # midline at column 32.5
    assert attributes.laterality(square_mask(geometry, 30, 33, 1), 33.0, geometry) == "left"
    assert attributes.laterality(square_mask(geometry, 30, 31, 1), 31.0, geometry) == "right"


def test_a_lesion_with_a_quarter_of_its_area_across_the_midline_is_bilateral():
    straddling = np.zeros(SQUARE.shape, bool)
    straddling[10:14, 12:20] = True  # 4 columns each side of the midline at 16
    mostly_right = np.zeros(SQUARE.shape, bool)
    mostly_right[10:14, 13:20] = True  # 3 of 7 columns on the image's left: still bilateral
    barely_across = np.zeros(SQUARE.shape, bool)
    barely_across[10:14, 15:25] = True  # 1 of 10 columns on the image's left
    assert attributes.laterality(straddling, 15.5, SQUARE) == "bilateral"
    assert attributes.laterality(mostly_right, 16.0, SQUARE) == "bilateral"
    assert attributes.laterality(barely_across, 19.5, SQUARE) == "left"


def test_zone_is_the_third_of_the_source_image_not_of_the_padded_canvas():
    # WIDE's image rows are 8..24 on the canvas; its thirds are 8..13.3, 13.3..18.7, 18.7..24.
    assert attributes.zone(8.0, WIDE) == "upper"
    assert attributes.zone(15.0, WIDE) == "middle"
    assert attributes.zone(20.0, WIDE) == "lower"
    assert [attributes.zone(y, SQUARE) for y in (0.0, 15.0, 31.0)] == ["upper", "middle", "lower"]


def test_empty_or_misshapen_masks_are_refused():
    with pytest.raises(ValueError, match="empty"):
        attributes.lesion_attributes(np.zeros(SQUARE.shape, bool), SQUARE)
    with pytest.raises(ValueError, match="expected the working image's"):
        attributes.lesion_attributes(np.ones((8, 8), bool), SQUARE)


@pytest.mark.parametrize("sides, combined", [
    (["left"], "left"), (["left", "left"], "left"), (["left", "right"], "bilateral"),
    (["right", "bilateral"], "bilateral"), ([None], None),
])
def test_combine_sides(sides, combined):
    assert attributes.combine_sides(pd.Series(sides, dtype=object)) == combined


def test_severity_from_area_tertiles():
    thresholds = attributes.severity_thresholds(pd.Series([0.01, 0.02, 0.03, 0.04, 0.05, 0.06]))
    assert thresholds == pytest.approx((0.02666667, 0.04333333))
    assert [attributes.severity_of(share, thresholds) for share in (0.01, 0.03, 0.06)] == ["mild", "moderate", "severe"]
    assert attributes.severity_thresholds(pd.Series([0.1, 0.2])) is None
    assert attributes.severity_of(0.5, None) is None


def parsed_manifest(states: dict[str, dict[str, int | None]], **report: dict[str, str]) -> pd.DataFrame:
    """A parse_reports manifest with the given final states per image and report attributes
    (keyword ``<finding>_<attribute>={image_id: value}``); every image 64x64 fitted into 32 px."""
    ids = sorted(states)
    frame = pd.DataFrame({
        "image_id": ids, "patient_id": ids, "split": "train", "source": "real", "dataset": "test",
        "path": [f"images/{i}.png" for i in ids], "orig_height": 64, "orig_width": 64, "scale": 0.5,
        "pad_top": 0, "pad_left": 0,
    })
    for finding in FINDINGS:
        frame[finding] = [states[i].get(finding) for i in ids]
    for column, values in report.items():
        frame[column] = [values.get(i) for i in ids]
    return manifest.conform(frame, "parse_reports")


def lesion_rows(*rows: tuple[str, str, int, str, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["image_id", "finding", "area_px", "laterality", "zone"])


def test_effective_attributes_keep_the_report_and_fill_its_gaps_from_masks():
    frame = parsed_manifest(
        {"a": {"pneumothorax": 1}, "b": {"pneumothorax": 1, "nodule": -1}, "c": {"pneumothorax": 1},
         "d": {"pleural_effusion": 1}, "e": {"nodule": None}},
        pneumothorax_laterality={"a": "right"}, pneumothorax_location={"a": "apical"},
    )
    lesions = lesion_rows(
        ("a", "pneumothorax", 40, "left", "upper"),  # the report says right: the report wins
        ("b", "pneumothorax", 100, "left", "lower"),
        ("b", "pneumothorax", 300, "right", "middle"),  # both sides -> bilateral, location of the largest
        ("c", "pneumothorax", 800, "left", "upper"),
        ("e", "nodule", 5, "left", "middle"),  # a lesion on a finding the report does not mention is kept
    )
    effective = attributes.effective_attributes(frame, lesions).set_index(["image_id", "finding"])
    assert sorted(effective.index) == [("a", "pneumothorax"), ("b", "nodule"), ("b", "pneumothorax"),
                                       ("c", "pneumothorax"), ("d", "pleural_effusion"), ("e", "nodule")]
    assert effective.loc[("a", "pneumothorax"), ["laterality", "location", "severity"]].tolist() == ["right", "apical", "mild"]
    assert effective.loc[("a", "pneumothorax"), ["laterality_from_mask", "location_from_mask", "severity_from_mask"]].tolist() == [False, False, True]
    assert effective.loc[("b", "pneumothorax"), ["laterality", "location", "severity"]].tolist() == ["bilateral", "middle", "moderate"]
    assert effective.loc[("c", "pneumothorax"), "severity"] == "severe"
    assert effective.loc[("b", "nodule"), ["laterality", "severity"]].isna().all()  # uncertain, no mask: no attributes
    assert effective.loc[("e", "nodule"), ["laterality", "location"]].tolist() == ["left", "middle"]
    assert pd.isna(effective.loc[("e", "nodule"), "severity"])  # one nodule mask is too few for tertiles


def test_cardiomegaly_masks_give_severity_but_no_side_or_zone():
    frame = parsed_manifest({name: {"cardiomegaly": 1} for name in "abc"})
    lesions = lesion_rows(*((name, "cardiomegaly", area, "bilateral", "middle") for name, area in zip("abc", (50, 60, 70))))
    effective = attributes.effective_attributes(frame, lesions)
    assert effective["laterality"].isna().all() and effective["location"].isna().all()
    assert effective["severity"].tolist() == ["mild", "moderate", "severe"]


def test_severity_uses_the_share_of_the_source_image_so_padding_does_not_count():
    frame = parsed_manifest({name: {"nodule": 1} for name in "abc"})
    frame.loc[frame["image_id"] == "c", ["orig_height", "scale", "pad_top"]] = [32, 0.5, 8]  # half the image area
    lesions = lesion_rows(("a", "nodule", 10, "left", "upper"), ("b", "nodule", 20, "left", "upper"),
                          ("c", "nodule", 12, "left", "upper"))  # 12 px of a half-size image outranks 20 px
    severity = attributes.effective_attributes(frame, lesions).set_index("image_id")["severity"]
    assert severity.to_dict() == {"a": "mild", "b": "moderate", "c": "severe"}


def test_effective_attributes_without_any_lesion_are_the_report():
    frame = parsed_manifest({"a": {"nodule": 1}}, nodule_severity={"a": "mild"})
    effective = attributes.effective_attributes(frame, lesion_rows())
    assert effective[["image_id", "finding", "severity", "severity_from_mask"]].values.tolist() == [["a", "nodule", "mild", False]]
