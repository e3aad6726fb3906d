from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrsynth.tasks.sources.decode import DecodedImage, DecodeError, decode_image
from tests.sourcefiles import ramp, write_dicom, write_picture

STORED = ramp(40, 32, high=4095)


def dicom_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR windowing onto [0, 1], written out independently of pydicom."""
    center, width = center - 0.5, width - 1
    return np.clip((values - center) / width + 0.5, 0, 1)


def test_monochrome2_scaled_by_the_declared_bit_range(tmp_path):
    decoded = decode_image(write_dicom(tmp_path / "a.dcm", STORED, bits_stored=12))
    assert decoded.pixels.dtype == np.float32 and decoded.pixels.shape == STORED.shape
    np.testing.assert_allclose(decoded.pixels, STORED / 4095, atol=1e-6)


def test_monochrome1_is_inverted_so_attenuation_is_bright(tmp_path):
    plain = decode_image(write_dicom(tmp_path / "m2.dcm", STORED)).pixels
    inverted = decode_image(write_dicom(tmp_path / "m1.dcm", STORED, photometric="MONOCHROME1")).pixels
    np.testing.assert_allclose(inverted, 1 - plain, atol=1e-6)


def test_negative_rescale_slope_flips_intensities(tmp_path):
    decoded = decode_image(write_dicom(tmp_path / "r.dcm", STORED, rescale=(-1.0, 4095.0)))
    np.testing.assert_allclose(decoded.pixels, 1 - STORED / 4095, atol=1e-6)


def test_window_is_applied_in_rescaled_units(tmp_path):
    slope, intercept, center, width = 2.0, -1000.0, 3000.0, 2000.0
    decoded = decode_image(write_dicom(tmp_path / "w.dcm", STORED, rescale=(slope, intercept), window=(center, width)))
    expected = dicom_window(STORED * slope + intercept, center, width)
    np.testing.assert_allclose(decoded.pixels, expected, atol=1e-6)
    assert decoded.pixels.min() == 0 and decoded.pixels.max() == 1  # the window clips both ends of this ramp


def test_window_on_monochrome1_is_inverted_after_windowing(tmp_path):
    decoded = decode_image(write_dicom(tmp_path / "w1.dcm", STORED, photometric="MONOCHROME1", window=(2048, 1024)))
    np.testing.assert_allclose(decoded.pixels, 1 - dicom_window(STORED.astype(float), 2048, 1024), atol=1e-6)


def test_large_image_is_scaled_band_by_band_exactly_as_one_float64_array(tmp_path):
    stored = ramp(700, 450, high=4095)  # 315,000 pixels: three bands of the float64 scaling
    decoded = decode_image(write_dicom(tmp_path / "big.dcm", stored, photometric="MONOCHROME1", window=(1800.5, 2500)))
    center, width = 1800.5 - 0.5, 2500 - 1  # pydicom's LINEAR window, onto [0, 1] at once; then flipped
    expected = np.clip(1.0 - np.clip((stored - center) / width + 0.5, 0, 1), 0, 1).astype(np.float32)
    np.testing.assert_allclose(decoded.pixels, expected, atol=1e-6)
    assert not np.any(np.diff(decoded.pixels[:, 7]) > 0)  # no seam between bands: values fall monotonically


def test_voi_lut_sequence_maps_through_the_table(tmp_path):
    first = 100
    table = np.round(np.sqrt(np.arange(4000 - first) / (3999 - first)) * 1000).astype(int)  # a non-linear LUT
    decoded = decode_image(write_dicom(tmp_path / "v.dcm", STORED, voi_lut=(first, 16, table)))
    expected = table[np.clip(STORED.astype(int) - first, 0, len(table) - 1)] / table.max()
    np.testing.assert_allclose(decoded.pixels, expected, atol=1e-6)


def test_header_metadata_without_identifiers(tmp_path):
    path = write_dicom(tmp_path / "m.dcm", STORED, pixel_spacing=0.143, institution="SITE-A", manufacturer="ACME",
                       view="AP", patient_name="DOE^JANE", patient_id="P123")
    decoded = decode_image(path)
    assert (decoded.pixel_spacing_mm, decoded.site, decoded.view) == (pytest.approx(0.143), "SITE-A", "AP")
    assert {f.name for f in fields(DecodedImage)} == {"pixels", "pixel_spacing_mm", "site", "view"}
    only_maker = decode_image(write_dicom(tmp_path / "n.dcm", STORED, manufacturer="ACME", pixel_spacing=None, view=None))
    assert (only_maker.site, only_maker.pixel_spacing_mm, only_maker.view) == ("ACME", None, None)


def test_png_8_and_16_bit_scaled_by_their_type_range(tmp_path):
    eight = ramp(20, 30, high=255, dtype=np.uint8)
    sixteen = ramp(20, 30, high=65535, dtype=np.uint16)
    np.testing.assert_allclose(decode_image(write_picture(tmp_path / "8.png", eight)).pixels, eight / 255, atol=1e-6)
    np.testing.assert_allclose(decode_image(write_picture(tmp_path / "16.png", sixteen)).pixels, sixteen / 65535, atol=1e-6)


def test_rgba_and_rgb_png_become_luminance(tmp_path):
    grey = ramp(20, 30, high=255, dtype=np.uint8)
    alpha = np.random.default_rng(0).integers(0, 256, grey.shape, dtype=np.uint8)
    rgba = np.stack([grey, grey, grey, alpha], axis=-1)
    np.testing.assert_allclose(decode_image(write_picture(tmp_path / "rgba.png", rgba)).pixels, grey / 255, atol=1e-6)
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 200
    assert decode_image(write_picture(tmp_path / "red.png", red)).pixels.mean() == pytest.approx(0.299 * 200 / 255, abs=0.01)


def test_jpg_decodes_close_to_what_was_saved(tmp_path):
    smooth = ramp(64, 48, high=255, dtype=np.uint8)
    decoded = decode_image(write_picture(tmp_path / "a.jpg", smooth, quality=95))
    assert np.abs(decoded.pixels - smooth / 255).mean() < 0.01


def _reason(path: Path) -> str:
    with pytest.raises(DecodeError) as caught:
        decode_image(path)
    assert str(path) in str(caught.value)  # the error names the file ...
    assert path.name not in caught.value.reason and path.stem not in caught.value.reason  # ... the reason never does
    return caught.value.reason


def test_truncated_dicom_pixel_data(tmp_path):
    whole = write_dicom(tmp_path / "whole.dcm", STORED).read_bytes()
    cut = tmp_path / "cut-pixels.dcm"
    cut.write_bytes(whole[: len(whole) - 1000])
    assert "DICOM" in _reason(cut)


def test_truncated_dicom_header(tmp_path):
    whole = write_dicom(tmp_path / "whole.dcm", STORED).read_bytes()
    cut = tmp_path / "cut-header.dcm"
    cut.write_bytes(whole[:200])
    assert "DICOM" in _reason(cut)


def test_non_image_file(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is a radiology report, not an image\n" * 20)
    assert _reason(text).startswith("not an image")


def test_truncated_png(tmp_path):
    whole = write_picture(tmp_path / "whole.png", np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8))
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[:300])
    assert "corrupt image data" in _reason(cut)


def test_missing_and_empty_files(tmp_path):
    assert _reason(tmp_path / "absent.dcm") == "file not found"
    empty = tmp_path / "blank.png"
    empty.touch()
    assert _reason(empty) == "empty file"


def test_real_siim_dicom_and_its_monochrome1_variant(shared_data):
    formats = shared_data / "formats"
    original = decode_image(formats / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm")
    variant = decode_image(formats / "Fake_MONOHR1.dcm")
    assert original.pixels.shape == (1024, 1024)
    assert (original.pixel_spacing_mm, original.view) == (pytest.approx(0.168), "PA")
    np.testing.assert_allclose(variant.pixels, 1 - original.pixels, atol=1e-6)
    # a PA chest film: the mediastinum (centre columns) is brighter than the lung fields beside it
    centre = original.pixels[300:700, 460:560].mean()
    lungs = original.pixels[300:700, np.r_[200:300, 720:820]].mean()
    assert centre > lungs + 0.1


def test_real_nih_pngs_including_rgba(shared_data):
    images = sorted((shared_data / "nih-chestxray14-dev" / "images").glob("*.png"))
    rgba = [p for p in images if Image.open(p).mode == "RGBA"]
    assert rgba, "the dev set ships a few RGBA PNGs"
    for path in rgba + images[:2] + sorted((shared_data / "formats").glob("*.jpg")):
        pixels = decode_image(path).pixels
        assert pixels.ndim == 2 and pixels.dtype == np.float32
        assert 0 <= pixels.min() < pixels.max() <= 1


def test_library_messages_lose_the_file_name_but_keep_their_words():
    from cxrsynth.tasks.sources.decode import scrubbed

    path = Path("/data/PID-4711_pix.png")
    text = scrubbed(OSError(f"cannot identify image file '{path}' ({path.stem}), pixel data short"), path)
    assert "PID-4711" not in text and "pixel data short" in text
