from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from cxrsynth.tasks.io import write_png16
from cxrsynth.tasks.masks import geometry
from cxrsynth.tasks.masks.geometry import Geometry
from cxrsynth.tasks.masks.rle import decode_rle, encode_rle

# (source height, source width) -> the fit into a 32 px canvas: scale 0.25 keeps every edge on a pixel.
SQUARE, TALL, WIDE = (128, 128), (128, 64), (64, 128)


def source_box_image(shape: tuple[int, int], x: int, y: int, w: int, h: int) -> np.ndarray:
    image = np.full(shape, 0.2, dtype=np.float32)
    image[y : y + h, x : x + w] = 1.0
    return image


def test_fit_pads_tall_and_wide_sources_symmetrically():
    tall, wide = geometry.fit(*TALL, 32), geometry.fit(*WIDE, 32)
    assert (tall.scale, tall.content_shape, tall.pad_top, tall.pad_left) == (0.25, (32, 16), 0, 8)
    assert (wide.scale, wide.content_shape, wide.pad_top, wide.pad_left) == (0.25, (16, 32), 8, 0)
    assert geometry.fit(*SQUARE, 32).shape == (32, 32)


def test_geometry_that_overflows_its_canvas_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        Geometry(128, 64, 0.25, pad_top=0, pad_left=20, height=32, width=32)
    with pytest.raises(ValueError, match="not a valid geometry"):
        Geometry(0, 64, 0.25, 0, 0, 32, 32)


def test_of_row_reads_the_manifest_columns():
    row = {"orig_height": 128, "orig_width": 64, "scale": 0.25, "pad_top": 0, "pad_left": 8}
    assert Geometry.of_row(row, (32, 32)) == geometry.fit(*TALL, 32)


@pytest.mark.parametrize("shape, pad", [(SQUARE, (0, 0)), (TALL, (0, 8)), (WIDE, (8, 0))])
def test_box_maps_source_to_working_with_the_padding(shape, pad):
    fit = geometry.fit(*shape, 32)
    mask = geometry.box_mask("16,8,24,32", fit)  # x, y, w, h in source pixels
    expected = np.zeros((32, 32), bool)
    expected[pad[0] + 2 : pad[0] + 10, pad[1] + 4 : pad[1] + 10] = True
    assert np.array_equal(mask, expected)


def test_box_keeps_pixels_it_covers_at_least_half():
    fit = geometry.fit(100, 100, 10)  # scale 0.1: the box spans working rows [1.4, 3.6), columns [2.4, 4.6)
    mask = geometry.box_mask("24,14,22,22", fit)
    expected = np.zeros((10, 10), bool)
    expected[1:4, 3] = expected[2, 2:5] = True  # edge pixels are 0.6 covered, corners only 0.36
    assert np.array_equal(mask, expected)


@pytest.mark.parametrize("shape", [SQUARE, TALL, WIDE])
def test_box_mask_sits_on_the_bright_square_of_its_resampled_image(shape):
    fit = geometry.fit(*shape, 32)
    x, y, w, h = 12, 20, 40, 28
    working_image = geometry.resample(source_box_image(shape, x, y, w, h), fit)
    mask = geometry.box_mask(f"{x},{y},{w},{h}", fit)
    assert mask.shape == working_image.shape == (32, 32)
    assert np.array_equal(mask, working_image >= 0.6)


def test_box_mask_overlays_a_bright_square_whose_edges_fall_between_pixels():
    fit = geometry.fit(300, 170, 64)  # scale and padding that do not land on whole pixels
    x, y, w, h = 33, 101, 57, 44
    working_image = geometry.resample(source_box_image((300, 170), x, y, w, h), fit)
    mask = geometry.box_mask(f"{x},{y},{w},{h}", fit)
    bright = working_image >= 0.6
    assert np.logical_and(mask, bright).sum() / np.logical_or(mask, bright).sum() > 0.8
    assert working_image[mask].mean() > 0.8


@pytest.mark.parametrize("value, message", [
    ("100,10,40,10", "outside"),
    ("-1,10,10,10", "outside"),
    ("10,60,10,10", "outside"),
    ("10,10,0,10", "no area"),
    ("10,10,10", "expected 4"),
    ("a,b,c,d", "not comma-separated numbers"),
    ("nan,1,2,3", "non-finite"),
])
def test_bad_boxes_are_refused(value, message):
    with pytest.raises(ValueError, match=message):
        geometry.box_mask(value, geometry.fit(*WIDE, 32))


@pytest.mark.parametrize("shape", [SQUARE, TALL, WIDE])
def test_rectangular_polygon_matches_its_box(shape):
    fit = geometry.fit(*shape, 32)
    polygon = geometry.polygon_mask("16,8;40,8;40,40;16,40", fit)
    assert np.array_equal(polygon, geometry.box_mask("16,8,24,32", fit))


def test_triangle_polygon_takes_the_pixel_centres_inside_it():
    fit = geometry.fit(64, 64, 64)  # scale 1: working = source
    mask = geometry.polygon_mask("0,0;20.5,0;0,20.5", fit)
    rows, cols = np.mgrid[0:64, 0:64]
    assert np.array_equal(mask, (rows + 0.5) + (cols + 0.5) < 20.5)


@pytest.mark.parametrize("value, message", [
    ("0,0;10,0", "at least 3"),
    ("0,0;10,0;10,200", "outside"),
    ("0,0;10;10,10", "expected 2"),
    ("", "not comma-separated"),
])
def test_bad_polygons_are_refused(value, message):
    with pytest.raises(ValueError, match=message):
        geometry.polygon_mask(value, geometry.fit(*TALL, 32))


@pytest.mark.parametrize("shape", [SQUARE, TALL, WIDE])
def test_rle_resamples_like_its_box(shape):
    source = np.zeros(shape, bool)
    source[8:40, 16:40] = True
    fit = geometry.fit(*shape, 32)
    assert np.array_equal(geometry.rle_mask(encode_rle(source), fit), geometry.box_mask("16,8,24,32", fit))


def test_rle_decoding_is_column_major():
    fit = geometry.fit(4, 4, 4)
    mask = geometry.rle_mask("1 2", fit)  # pixels 1 and 2 counted down the first column
    assert np.array_equal(np.argwhere(mask), [[1, 0], [2, 0]])


def test_rle_that_does_not_fit_the_source_is_refused():
    with pytest.raises(ValueError):
        geometry.rle_mask("100 50", geometry.fit(8, 8, 4))


@pytest.mark.parametrize("shape", [SQUARE, TALL, WIDE])
def test_mask_file_resamples_like_its_box(tmp_path, shape):
    source = np.zeros(shape, np.uint8)
    source[8:40, 16:40] = 255
    Image.fromarray(source).save(tmp_path / "m.png")
    fit = geometry.fit(*shape, 32)
    assert np.array_equal(geometry.file_mask(tmp_path / "m.png", fit), geometry.box_mask("16,8,24,32", fit))


def test_colour_mask_file_ignores_alpha(tmp_path):
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[10:20, 30:40, 2] = 1
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "m.png")
    source = geometry.read_source_mask(tmp_path / "m.png")
    assert source.sum() == 100 and source[10:20, 30:40].all()


def test_mask_file_of_the_wrong_shape_is_refused(tmp_path):
    Image.fromarray(np.zeros((64, 32), np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(ValueError, match=r"shape \(64, 32\), expected the source image's \(128, 64\)"):
        geometry.file_mask(tmp_path / "m.png", geometry.fit(*TALL, 32))


def test_unreadable_and_missing_mask_files_are_refused_without_their_path(tmp_path):
    (tmp_path / "patient123.png").write_bytes(b"not a png")
    fit = geometry.fit(*TALL, 32)
    with pytest.raises(ValueError, match="unreadable") as unreadable:
        geometry.file_mask(tmp_path / "patient123.png", fit)
    with pytest.raises(ValueError, match="missing") as missing:
        geometry.file_mask(tmp_path / "patient456.png", fit)
    assert "patient" not in str(unreadable.value) + str(missing.value)


def test_localisation_mask_dispatches_on_kind_and_resolves_mask_paths(tmp_path):
    fit = geometry.fit(*WIDE, 32)
    source = np.zeros(WIDE, np.uint8)
    source[8:40, 16:40] = 1
    Image.fromarray(source).save(tmp_path / "m.png")
    expected = geometry.box_mask("16,8,24,32", fit)
    for kind, value in [("box", "16,8,24,32"), ("polygon", "16,8;40,8;40,40;16,40"),
                        ("rle", encode_rle(source.astype(bool))), ("mask", "m.png")]:
        assert np.array_equal(geometry.localisation_mask(kind, value, fit, root=tmp_path), expected), kind
    with pytest.raises(ValueError, match="unknown localisation kind 'circle'"):
        geometry.localisation_mask("circle", "1", fit)


def test_canvas_shape_reads_the_png_header(tmp_path):
    write_png16(tmp_path / "i.png", np.zeros((32, 48), np.float32))
    assert geometry.canvas_shape(tmp_path / "i.png") == (32, 48)


def test_resample_refuses_an_array_of_another_size():
    with pytest.raises(ValueError, match="expected the source image's"):
        geometry.resample(np.zeros((10, 10)), geometry.fit(*TALL, 32))


@pytest.mark.shared_data
def test_real_siim_rle_masks_keep_their_area_at_working_size(shared_data):
    with (shared_data / "formats" / "siim-pneumothorax-train-rle.head300.csv").open() as handle:
        rows = [row for row in csv.reader(handle)][1:]
    encoded = [value.strip() for _, value in rows if value.strip() != "-1"][:20]
    assert encoded, "no positive RLE rows in the sample"
    fit = geometry.fit(1024, 1024, 64)
    for rle in encoded:
        source = decode_rle(rle, 1024, 1024)
        working = geometry.rle_mask(rle, fit)
        expected = source.sum() * fit.scale**2
        assert abs(working.sum() - expected) <= 0.15 * expected + 4


@pytest.mark.shared_data
def test_real_nih_boxes_keep_their_area_at_working_size(shared_data):
    folder = shared_data / "nih-chestxray14-dev"
    with (folder / "BBox_List_2017.csv").open() as handle:
        boxes = [row[2:6] for row in list(csv.reader(handle))[1:]]
    assert boxes, "no boxes in the sample"
    for x, y, w, h in boxes:
        fit = geometry.fit(1024, 1024, 64)  # NIH boxes are given in the distributed 1024 px images
        mask = geometry.box_mask(f"{x},{y},{w},{h}", fit)
        expected = float(w) * float(h) * fit.scale**2
        assert abs(mask.sum() - expected) <= 0.25 * expected + 2
