from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrsynth.tasks import manifest
from cxrsynth.tasks.findings import FINDINGS, finding_index
from cxrsynth.tasks.io import read_mask, read_png16, write_png16
from cxrsynth.tasks.masks import geometry, labelmap
from cxrsynth.tasks.masks.attributes import effective_attributes
from cxrsynth.tasks.masks.overlay import overlay, overlay_figure
from cxrsynth.tasks.masks.prepare import (
    LESION_COLUMNS,
    lesions_table,
    manifest_additions,
    prepare_image,
    prepare_images,
    read_localisations,
    rejected_table,
    unknown_images,
)
from cxrsynth.tasks.masks.summary import summarise
from cxrsynth.tasks.masks.rle import encode_rle

SIZE = 32
OUT = Path("data/prepare_masks")
# image_id -> source (height, width): square, tall and wide sources, each padded differently.
SOURCES = {"img0": (64, 64), "img1": (128, 64), "img2": (64, 128), "img3": (96, 96)}
BOX = (16, 8, 24, 28)  # x, y, w, h in source pixels: inside every source above


def box_text(x: int, y: int, w: int, h: int) -> str:
    return f"{x},{y},{w},{h}"


def source_image(shape: tuple[int, int], boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """A dim source image with a bright square at every lesion box."""
    image = np.full(shape, 0.15, dtype=np.float32)
    for x, y, w, h in boxes:
        image[y : y + h, x : x + w] = 1.0
    return image


def ingest_frame() -> pd.DataFrame:
    rows = []
    for index, (image_id, (height, width)) in enumerate(SOURCES.items()):
        fitted = geometry.fit(height, width, SIZE)
        rows.append({
            "image_id": image_id, "patient_id": f"P{index}", "study_id": f"S{index}",
            "split": ("train", "train", "val", "test")[index], "source": "real", "dataset": "test", "site": "SITE-A",
            "path": f"data/ingest/images/{image_id}.png", "view": "PA", "orig_height": height, "orig_width": width,
            "scale": fitted.scale, "pad_top": fitted.pad_top, "pad_left": fitted.pad_left,
            "pixel_spacing_mm": 2.0 if index % 2 == 0 else None, "report": "text",
        })
    return pd.DataFrame(rows)


def parsed_frame(ingested: pd.DataFrame, states: dict[str, dict[str, int]]) -> pd.DataFrame:
    frame = ingested.copy()
    for finding in FINDINGS:
        frame[finding] = [states.get(image_id, {}).get(finding) for image_id in frame["image_id"]]
        frame[f"report_{finding}"] = frame[finding]
    return frame


def build_project(root: Path, states: dict[str, dict[str, int]], localisations: list[dict],
                  bright_boxes: dict[str, list[tuple[int, int, int, int]]]) -> None:
    """A tmp project as ingest and parse_reports leave it: images, manifests, localisations."""
    ingested = ingest_frame()
    for row in ingested.itertuples():
        fitted = geometry.fit(row.orig_height, row.orig_width, SIZE)
        source = source_image((row.orig_height, row.orig_width), bright_boxes.get(row.image_id, []))
        write_png16(root / row.path, geometry.resample(source, fitted))
    manifest.write(ingested, root / "data/ingest/manifest.parquet", "ingest")
    manifest.write(parsed_frame(ingested, states), root / "data/parse_reports/manifest.parquet", "parse_reports")
    pd.DataFrame(localisations, columns=["image_id", "lesion", "finding", "kind", "value"]).to_parquet(
        root / "data/ingest/localisations.parquet", index=False)


def write_source_mask(root: Path, name: str, shape: tuple[int, int], box: tuple[int, int, int, int]) -> str:
    mask = np.zeros(shape, np.uint8)
    x, y, w, h = box
    mask[y : y + h, x : x + w] = 255
    path = root / "data/ingest/source_masks" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(path)
    return path.relative_to(root).as_posix()


def localisation(image_id: str, lesion: int, finding: str, kind: str, value: str) -> dict:
    return {"image_id": image_id, "lesion": lesion, "finding": finding, "kind": kind, "value": value}


def row_of(root: Path, image_id: str) -> dict:
    frame = manifest.read(root / "data/parse_reports/manifest.parquet")
    return frame[frame["image_id"] == image_id].to_dict("records")[0]


@pytest.fixture
def project(tmp_path):
    build_project(tmp_path, {"img1": {"pneumothorax": 1, "nodule": 0}, "img2": {"nodule": 1}}, [], {})
    return tmp_path


def prepare(root: Path, image_id: str, rows: list[dict], min_area_px: int = 2):
    frame = pd.DataFrame(rows, columns=["image_id", "lesion", "finding", "kind", "value"])
    return prepare_image(row_of(root, image_id), frame, root, OUT, min_area_px)


def test_every_kind_of_localisation_becomes_the_same_lesion(project):
    shape = SOURCES["img1"]
    source = np.zeros(shape, bool)
    x, y, w, h = BOX
    source[y : y + h, x : x + w] = True
    result = prepare(project, "img1", [
        localisation("img1", 0, "pneumothorax", "box", box_text(*BOX)),
        localisation("img1", 1, "pneumothorax", "polygon", f"{x},{y};{x + w},{y};{x + w},{y + h};{x},{y + h}"),
        localisation("img1", 2, "pneumothorax", "rle", encode_rle(source)),
        localisation("img1", 3, "pneumothorax", "mask", write_source_mask(project, "img1_3.png", shape, BOX)),
    ])
    assert result.rejected == []
    expected = geometry.box_mask(box_text(*BOX), geometry.fit(*shape, SIZE))
    for lesion in result.lesions:
        assert np.array_equal(read_mask(project / lesion["mask_path"]) > 0, expected), lesion["lesion"]
    assert [lesion["mask_path"] for lesion in result.lesions] == [f"data/prepare_masks/lesions/img1_{k}.png" for k in range(4)]
    assert result.mask_path == "data/prepare_masks/masks/img1.png"
    label_map = read_mask(project / result.mask_path)
    assert np.array_equal(label_map, expected.astype(np.uint8) << finding_index("pneumothorax"))


def test_lesion_records_carry_their_attributes(project):
    result = prepare(project, "img2", [localisation("img2", 5, "nodule", "box", box_text(*BOX))])
    (lesion,) = result.lesions
    assert set(lesion) == set(LESION_COLUMNS)
    # img2 is 64x128 fitted into 32: scale 0.25, 8 rows of padding on top; the box is 6 x 7 working pixels.
    assert lesion["bbox"] == [10, 4, 17, 10] and lesion["area_px"] == 42
    assert lesion["area_mm2"] == pytest.approx(42 * 4.0)
    # centroid at source row 22 of 64 (just past the first third), column 28 of 128 (image left = patient right)
    assert (lesion["laterality"], lesion["zone"], lesion["kind"], lesion["lesion"]) == ("right", "middle", "box", 5)


def test_two_findings_share_one_label_map(project):
    result = prepare(project, "img1", [
        localisation("img1", 0, "pneumothorax", "box", "0,0,64,64"),
        localisation("img1", 1, "pleural_effusion", "box", "0,32,64,64"),
    ])
    decoded = labelmap.decode(read_mask(project / result.mask_path))
    assert decoded[finding_index("pneumothorax")].sum() == 16 * 16
    assert decoded[finding_index("pleural_effusion")].sum() == 16 * 16
    assert (decoded.sum(axis=0) == 2).sum() == 16 * 8


@pytest.mark.parametrize("kind, value, code", [
    ("rle", "8000 300", "bad_rle"),  # runs past pixel 8192, the end of the 128x64 source
    ("box", "60,10,20,20", "bad_box"),  # right edge at 80 on a 64 px wide source
    ("polygon", "0,0;10,0", "bad_polygon"),
    ("circle", "1,2,3", "unknown_kind"),
])
def test_bad_localisations_are_rejected_and_the_rest_kept(project, kind, value, code):
    result = prepare(project, "img1", [
        localisation("img1", 0, "pneumothorax", kind, value),
        localisation("img1", 1, "pneumothorax", "box", box_text(*BOX)),
    ])
    assert [lesion["lesion"] for lesion in result.lesions] == [1]
    assert len(result.rejected) == 1 and result.rejected[0]["image_id"] == "img1" and result.rejected[0]["lesion"] == "0"
    assert result.rejected[0]["reason"].startswith(f"{code}: ")


def test_mask_file_of_the_wrong_shape_is_rejected(project):
    path = write_source_mask(project, "img1_0.png", (64, 64), BOX)  # img1's source is 128x64
    (rejected,) = prepare(project, "img1", [localisation("img1", 0, "pneumothorax", "mask", path)]).rejected
    assert rejected["reason"].startswith("bad_mask: mask file has shape (64, 64)")


def test_unreadable_mask_file_is_rejected(project):
    path = project / "data/ingest/source_masks/img1_0.png"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x89PNG broken")
    result = prepare(project, "img1", [localisation("img1", 0, "pneumothorax", "mask", "data/ingest/source_masks/img1_0.png")])
    assert result.lesions == [] and result.mask_path is None
    assert result.rejected[0]["reason"].startswith("bad_mask: mask file is unreadable")


def test_unknown_finding_is_rejected(project):
    (rejected,) = prepare(project, "img1", [localisation("img1", 0, "fracture", "box", box_text(*BOX))]).rejected
    assert rejected["reason"].startswith("unknown_finding: 'fracture'")


def test_a_mask_for_a_finding_the_labels_deny_is_rejected(project):
    result = prepare(project, "img1", [localisation("img1", 0, "nodule", "box", box_text(*BOX))])
    assert result.lesions == [] and result.rejected[0]["reason"].startswith("denied_by_labels: ")


def test_lesions_on_uncertain_or_unmentioned_findings_are_kept(project):
    result = prepare(project, "img1", [localisation("img1", 0, "consolidation", "box", box_text(*BOX))])
    assert [lesion["finding"] for lesion in result.lesions] == ["consolidation"]


def test_lesions_under_min_area_are_rejected(project):
    result = prepare(project, "img1", [localisation("img1", 0, "pneumothorax", "box", "8,8,4,4")], min_area_px=2)
    assert result.rejected[0]["reason"] == "too_small: 1 px at working size, under min_area_px=2"


def test_a_lesion_id_given_twice_is_rejected(project):
    result = prepare(project, "img1", [localisation("img1", 0, "pneumothorax", "box", box_text(*BOX))] * 2)
    assert len(result.lesions) == 1 and result.rejected[0]["reason"].startswith("duplicate_lesion: ")


def test_an_image_whose_working_png_is_missing_rejects_its_lesions(project):
    (project / "data/ingest/images/img1.png").unlink()
    result = prepare(project, "img1", [localisation("img1", 0, "pneumothorax", "box", box_text(*BOX))])
    assert result.rejected[0]["reason"] == "bad_image: working image unreadable (FileNotFoundError)"


def test_localisations_of_images_not_in_the_manifest_are_rejected():
    frame = pd.DataFrame([localisation("img0", 0, "nodule", "box", "1,1,2,2"), localisation("ghost", 3, "nodule", "box", "1,1,2,2")])
    assert unknown_images(frame, pd.Series(["img0"])) == [
        {"image_id": "ghost", "lesion": "3", "reason": "unknown_image: no manifest row has this image_id"}]


def test_read_localisations_checks_the_file_and_its_columns(tmp_path):
    with pytest.raises(FileNotFoundError, match="ingest writes it"):
        read_localisations(tmp_path / "localisations.parquet")
    pd.DataFrame({"image_id": ["a"], "finding": ["nodule"]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="missing columns lesion, kind, value"):
        read_localisations(tmp_path / "bad.parquet")


def test_tables_and_manifest_additions_cover_every_image(project):
    localisations = pd.DataFrame([
        localisation("img1", 0, "pneumothorax", "box", box_text(*BOX)),
        localisation("img2", 0, "nodule", "box", box_text(*BOX)),
        localisation("img2", 1, "fracture", "box", box_text(*BOX)),
    ])
    frame = manifest.read(project / "data/parse_reports/manifest.parquet")
    rows = frame[frame["image_id"].isin(["img1", "img2"])].to_dict("records")
    results = prepare_images(rows, localisations, project, OUT, 2)
    lesions, rejected = lesions_table(results), rejected_table(results)
    assert list(lesions.columns) == list(LESION_COLUMNS) and len(lesions) == 2
    assert rejected.values.tolist() == [["img2", "1", "unknown_finding: 'fracture' is not one of " + ", ".join(FINDINGS)]]
    additions = manifest_additions(frame["image_id"], results)
    assert additions.set_index("image_id")["n_lesions"].to_dict() == {"img0": 0, "img1": 1, "img2": 1, "img3": 0}
    assert additions["mask_path"].isna().tolist() == [True, False, False, True]
    assert lesions_table([]).columns.tolist() == list(LESION_COLUMNS)


def test_summary_counts_positives_with_and_without_masks(project):
    frame = manifest.read(project / "data/parse_reports/manifest.parquet")
    frame["mask_path"] = [None, "m1", "m2", None]
    lesions = pd.DataFrame({"image_id": ["img1", "img2", "img2"], "finding": ["pneumothorax", "nodule", "consolidation"],
                            "area_px": [10, 20, 30], "area_mm2": [None, 80.0, 120.0],
                            "laterality": ["left"] * 3, "zone": ["upper"] * 3})
    rejected = pd.DataFrame({"image_id": ["img0", "img3"], "lesion": ["0", "1"], "reason": ["bad_box: x", "bad_rle: y"]})
    metrics = summarise(frame, lesions, rejected, effective_attributes(frame, lesions))
    assert metrics["positives"]["pneumothorax"] == {"total": 1, "with_mask": 1, "without_mask": 0}
    assert metrics["positives"]["nodule"] == {"total": 1, "with_mask": 1, "without_mask": 0}
    assert metrics["positives"]["cardiomegaly"] == {"total": 0, "with_mask": 0, "without_mask": 0}
    assert metrics["lesions_without_positive_state"]["consolidation"] == 1
    assert metrics["rejected_by_reason"] == {"bad_box": 1, "bad_rle": 1}
    assert metrics["area_px"]["nodule"] == {"count": 1, "mean": 20.0, "median": 20.0, "min": 20.0, "max": 20.0}
    assert metrics["area_mm2"]["pneumothorax"]["count"] == 0 and metrics["area_mm2"]["pneumothorax"]["mean"] is None
    assert metrics["filled_from_masks"]["laterality"] == 3
    assert (metrics["images"], metrics["images_with_mask"], metrics["lesions"], metrics["rejected"]) == (4, 2, 3, 2)


def test_overlay_tints_each_finding_in_its_own_colour():
    image = np.zeros((4, 4), np.float32)
    label_map = np.zeros((4, 4), np.uint8)
    label_map[0, 0] = 1 << finding_index("nodule")
    rgb = overlay(image, label_map)
    assert rgb.shape == (4, 4, 3) and rgb[0, 0].sum() > 0 and rgb[1:, 1:].sum() == 0


def test_overlay_figure_draws_masked_images_only(project):
    result = prepare(project, "img1", [localisation("img1", 0, "pneumothorax", "box", box_text(*BOX))])
    frame = manifest.read(project / "data/parse_reports/manifest.parquet")
    frame["mask_path"] = [result.mask_path if i == "img1" else None for i in frame["image_id"]]
    assert overlay_figure(frame, project / "overlay.png", root=project) == 1
    assert Image.open(project / "overlay.png").size[0] > 100


FLOW_STATES = {
    "img0": {"pneumothorax": 1, "cardiomegaly": 1},
    "img1": {"nodule": 1, "pneumothorax": 0},
    "img2": {"pleural_effusion": 1, "nodule": 1},
    "img3": {"consolidation": -1, "nodule": 1},
}


@pytest.mark.slow
def test_flow_writes_masks_that_overlay_their_images(tmp_path, tiny_project):
    from cxrsynth.flows.prepare_masks import prepare_masks_flow

    boxes = {"img0": [(8, 8, 20, 24)], "img1": [BOX], "img2": [(70, 20, 40, 30)], "img3": [(50, 40, 30, 30)]}
    rle_source = np.zeros(SOURCES["img2"], bool)
    x, y, w, h = boxes["img2"][0]
    rle_source[y : y + h, x : x + w] = True
    localisations = [
        localisation("img0", 0, "pneumothorax", "box", box_text(*boxes["img0"][0])),
        localisation("img1", 0, "nodule", "polygon", "16,8;40,8;40,36;16,36"),
        localisation("img1", 1, "pneumothorax", "box", box_text(*BOX)),  # the labels deny it
        localisation("img1", 2, "nodule", "box", "60,100,10,10"),  # outside the 64 px wide source
        localisation("img2", 0, "pleural_effusion", "rle", encode_rle(rle_source)),
        localisation("img2", 1, "pleural_effusion", "rle", "9000 10"),  # does not fit 64x128
        localisation("img3", 0, "consolidation", "mask", "data/ingest/source_masks/img3_0.png"),
        localisation("img3", 1, "atelectasis", "mask", "data/ingest/source_masks/img3_1.png"),  # wrong shape
        localisation("img3", 2, "edema", "box", "1,1,20,20"),
        localisation("ghost", 0, "nodule", "box", "1,1,20,20"),
    ]
    build_project(tmp_path, FLOW_STATES, localisations, boxes)
    write_source_mask(tmp_path, "img3_0.png", SOURCES["img3"], boxes["img3"][0])
    write_source_mask(tmp_path, "img3_1.png", (10, 10), (1, 1, 3, 3))
    tiny_project()

    metrics = prepare_masks_flow("params.yaml")

    out = tmp_path / OUT
    frame = manifest.read(out / "manifest.parquet")
    lesions = pd.read_parquet(out / "lesions.parquet")
    rejected = pd.read_csv(out / "rejected.csv")
    assert sorted(frame["image_id"]) == sorted(SOURCES)
    assert frame.set_index("image_id")["n_lesions"].to_dict() == {"img0": 1, "img1": 1, "img2": 1, "img3": 1}
    for row in frame.itertuples():  # every mask overlays its image: same shape, on the bright square
        image = read_png16(tmp_path / row.path)
        label_map = read_mask(tmp_path / row.mask_path)
        assert label_map.shape == image.shape
        assert image[label_map > 0].min() >= 0.5
        assert (label_map > 0).sum() >= 0.8 * (image >= 0.6).sum()
    for lesion in lesions.itertuples():
        assert read_mask(tmp_path / lesion.mask_path).shape == (SIZE, SIZE)
        assert frame.set_index("image_id").at[lesion.image_id, lesion.finding] != 0
    codes = dict(zip(zip(rejected["image_id"], rejected["lesion"].astype(str)), rejected["reason"].str.split(":").str[0]))
    assert codes == {("img1", "1"): "denied_by_labels", ("img1", "2"): "bad_box", ("img2", "1"): "bad_rle",
                     ("img3", "1"): "bad_mask", ("img3", "2"): "unknown_finding", ("ghost", "0"): "unknown_image"}
    accounted = set(zip(lesions["image_id"], lesions["lesion"].astype(str))) | set(codes)
    assert accounted == {(item["image_id"], str(item["lesion"])) for item in localisations}
    assert metrics["positives"]["nodule"] == {"total": 3, "with_mask": 1, "without_mask": 2}
    assert metrics["positives"]["cardiomegaly"] == {"total": 1, "with_mask": 0, "without_mask": 1}
    assert metrics["lesions_without_positive_state"]["consolidation"] == 1
    assert json.loads((tmp_path / "metrics/prepare_masks.json").read_text()) == json.loads(json.dumps(metrics))
    assert (out / "overlays.png").exists()

    import mlflow

    runs = mlflow.search_runs(experiment_names=["cxrsynth"])
    assert runs["tags.cxrsynth.stage"].tolist() == ["prepare_masks"]
    assert runs["metrics.rejected"].tolist() == [6.0]
    shutil.rmtree(out / "lesions")  # a rerun rebuilds the same outputs
    assert prepare_masks_flow("params.yaml") == metrics


def test_a_source_without_localisations_keeps_every_positive_unmasked(project):
    frame = manifest.read(project / "data/parse_reports/manifest.parquet")
    written = manifest.validate(manifest.extend(frame, manifest_additions(frame["image_id"], []), "prepare_masks"), "prepare_masks")
    lesions, rejected = lesions_table([]), rejected_table([])
    metrics = summarise(written, lesions, rejected, effective_attributes(written, lesions))
    assert written["mask_path"].isna().all() and (written["n_lesions"] == 0).all()
    assert metrics["positives"]["pneumothorax"] == {"total": 1, "with_mask": 0, "without_mask": 1}
    assert (metrics["lesions"], metrics["rejected"], metrics["rejected_by_reason"]) == (0, 0, {})
