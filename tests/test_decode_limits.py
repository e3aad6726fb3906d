"""Hostile files: sizes checked before any decoder runs, compressed transfer syntaxes, bit depths, paths."""

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import ImageFile
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless

from cxrsynth.tasks.sources.decode import DecodeError, ReadLimits, decode_image, read_file
from tests.sourcefiles import ramp, write_dicom, write_picture

STORED = ramp(40, 32, high=4095)


def _reason(path, limits=ReadLimits()) -> str:
    with pytest.raises(DecodeError) as caught:
        decode_image(path, limits)
    return caught.value.reason


@pytest.fixture
def no_decoder(monkeypatch):
    """Once called, any pixel decoding fails the test: what is refused must be refused from the header alone."""

    def forbid(dicom: bool = True):
        if dicom:
            monkeypatch.setattr(pydicom.Dataset, "pixel_array", property(lambda self: pytest.fail("a DICOM decoder ran")))
        monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("a PIL decoder ran"))

    return forbid


def _rewrite(path: Path, **changes) -> Path:
    dataset = pydicom.dcmread(path)
    for keyword, value in changes.items():
        setattr(dataset, keyword, value)
    dataset.save_as(path)
    return path


def _compressed(tmp_path: Path, syntax, **changes) -> Path:
    path = write_dicom(tmp_path / f"{syntax.name[:8]}.dcm", STORED, bits_stored=12)
    dataset = pydicom.dcmread(path)
    dataset.compress(syntax)
    dataset.save_as(path)
    return _rewrite(path, **changes)


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLSLossless])
def test_jpeg2000_and_jpegls_dicoms_decode_like_the_uncompressed_file(tmp_path, syntax):
    plain = decode_image(write_dicom(tmp_path / "plain.dcm", STORED, bits_stored=12)).pixels
    compressed = _compressed(tmp_path, syntax)
    assert pydicom.dcmread(compressed).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(decode_image(compressed).pixels, plain)


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLSLossless])
def test_compressed_dicom_declaring_a_huge_image_is_refused_before_decoding(tmp_path, syntax, no_decoder):
    path = _compressed(tmp_path, syntax, Rows=13000, Columns=13000)
    no_decoder()
    assert _reason(path) == (
        "DICOM declares 13000x13000 pixels, more than ingest.max_pixels (20000000)")


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLSLossless])
def test_codestream_larger_than_its_header_is_refused_before_decoding(tmp_path, syntax, no_decoder):
    path = _compressed(tmp_path, syntax, Rows=20, Columns=16)
    no_decoder()
    assert _reason(path, ReadLimits(max_pixels=1000)) == (
        "the compressed codestream declares 40x32 pixels, more than ingest.max_pixels (1000)")
    assert _reason(path) == "the codestream is 40x32, the DICOM header declares 20x16"


def test_codestream_deeper_than_bits_stored_is_refused(tmp_path, no_decoder):
    path = _compressed(tmp_path, JPEG2000Lossless, BitsStored=8, HighBit=7)
    no_decoder()
    assert _reason(path) == "the codestream holds 12-bit values, BitsStored declares 8"


def test_deflated_dicom_that_inflates_past_the_limit_is_refused_before_parsing(tmp_path, monkeypatch):
    path = write_dicom(tmp_path / "zip.dcm", np.zeros((2048, 4200), dtype=np.uint16), bits_stored=12)
    dataset = pydicom.dcmread(path)
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    dataset.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 100_000  # 17 MB of pixel data, deflated
    np.testing.assert_array_equal(decode_image(path).pixels, 0)  # within the limit it decodes
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: pytest.fail("the data set was inflated"))
    assert _reason(path, ReadLimits(max_pixels=1000)) == (
        "deflated DICOM data set inflates to more than 16785216 bytes (ingest.max_pixels)")


def _png_declaring(tmp_path: Path, width: int, height: int) -> Path:
    """A small PNG whose header (IHDR, with a correct CRC) declares another size."""
    path = write_picture(tmp_path / "bomb.png", np.zeros((8, 8), dtype=np.uint8))
    data = bytearray(path.read_bytes())
    start = data.index(b"IHDR")
    data[start + 4 : start + 12] = struct.pack(">II", width, height)
    data[start + 17 : start + 21] = struct.pack(">I", zlib.crc32(bytes(data[start : start + 17])))
    path.write_bytes(bytes(data))
    return path


def test_png_declaring_12000_squared_is_refused_from_its_header(tmp_path, no_decoder):
    path = _png_declaring(tmp_path, 12000, 12000)
    no_decoder()
    assert _reason(path) == (
        "PNG declares 12000x12000 pixels, more than ingest.max_pixels (20000000)")


def test_images_below_min_size_are_refused(tmp_path):
    tiny = write_picture(tmp_path / "tiny.png", np.full((3, 3), 128, dtype=np.uint8))
    assert _reason(tiny, ReadLimits(min_size=16)) == "PNG is 3x3, smaller than ingest.min_size (16)"
    small_dicom = write_dicom(tmp_path / "tiny.dcm", ramp(3, 3), bits_stored=12)
    assert _reason(small_dicom, ReadLimits(min_size=16)) == "DICOM is 3x3, smaller than ingest.min_size (16)"


def test_values_wider_than_bits_stored_are_refused_not_wrapped(tmp_path):
    path = _rewrite(write_dicom(tmp_path / "wrap.dcm", STORED, bits_stored=12), BitsStored=8, HighBit=7)
    assert _reason(path) == "stored values use 12 bits, BitsStored declares 8"
    signed = write_dicom(tmp_path / "signed.dcm", (STORED.astype(np.int16) - 2048), bits_stored=12)
    assert pydicom.dcmread(signed).PixelRepresentation == 1
    assert decode_image(signed).pixels.shape == (40, 32)  # sign-extended negatives are not "wider"
    edges = (STORED.astype(np.int16) - 2048)
    edges[0, :2] = -2048, 2047  # the ends of the signed 12-bit range
    too_wide = edges.copy()
    too_wide[1, 1] = 2048
    declared_12 = {"BitsStored": 12, "HighBit": 11}
    assert decode_image(_rewrite(write_dicom(tmp_path / "edges.dcm", edges, bits_stored=16), **declared_12)).pixels.shape == (40, 32)
    assert _reason(_rewrite(write_dicom(tmp_path / "wide.dcm", too_wide, bits_stored=16), **declared_12)) == (
        "stored values use 16 bits, BitsStored declares 12")  # counted on the unsigned words, as pydicom stores them


def test_a_frame_count_that_is_not_a_number_is_quarantined(tmp_path):
    path = _rewrite(write_dicom(tmp_path / "frames.dcm", STORED, bits_stored=12), NumberOfFrames="97")
    data = path.read_bytes()
    path.write_bytes(data.replace(b"IS\x02\x0097", b"IS\x02\x001A"))  # pydicom refuses to write it: patch the bytes
    assert _reason(path).startswith("DICOM NumberOfFrames is not a number (ValueError: ")


@pytest.mark.parametrize("changes, reason", [
    ({"BitsStored": 16, "BitsAllocated": 8}, "inconsistent bit depths: BitsAllocated 8, BitsStored 16, HighBit 11"),
    ({"HighBit": 15}, "inconsistent bit depths: BitsAllocated 16, BitsStored 12, HighBit 15"),
    ({"PhotometricInterpretation": "PALETTE COLOR"}, "PALETTE COLOR DICOM without a colour lookup table"),
    ({"SamplesPerPixel": 3}, "MONOCHROME2 with SamplesPerPixel 3 (expected 1)"),
    ({"PhotometricInterpretation": "HSV"}, "unsupported PhotometricInterpretation 'HSV'"),
])
def test_inconsistent_headers_are_quarantined_with_the_reason(tmp_path, changes, reason):
    path = _rewrite(write_dicom(tmp_path / "bad.dcm", STORED, bits_stored=12), **changes)
    assert _reason(path) == reason


def test_palette_colour_with_its_table_is_read_through_it(tmp_path):
    path = _rewrite(write_dicom(tmp_path / "palette.dcm", ramp(40, 32, high=255), bits_stored=8),
                    PhotometricInterpretation="PALETTE COLOR")
    dataset = pydicom.dcmread(path)
    ramp16 = (np.arange(256, dtype=np.uint16) * 257).tobytes()
    for offset in range(3):  # red, green, blue: descriptor (0028,110x) and table (0028,120x)
        dataset.add_new(0x00281101 + offset, "US", [256, 0, 16])
        dataset.add_new(0x00281201 + offset, "OW", ramp16)
    dataset.save_as(path)
    np.testing.assert_allclose(decode_image(path).pixels, ramp(40, 32, high=255) / 255, atol=1e-4)


@pytest.mark.parametrize("make, reason", [
    (lambda d: os.mkfifo(d / "pipe.png") or d / "pipe.png", "is a FIFO, not a regular image file"),
    (lambda d: Path("/dev/zero"), "is a character device, not a regular image file"),
    (lambda d: (d / "folder.png").mkdir() or d / "folder.png", "is a directory, not a regular image file"),
])
def test_only_regular_files_are_read(tmp_path, make, reason):
    with pytest.raises(DecodeError) as caught:
        read_file(make(tmp_path))  # a FIFO with no writer would block forever if it were opened for reading
    assert caught.value.reason == reason


def test_files_larger_than_the_limit_are_not_read(tmp_path):
    path = tmp_path / "big.dcm"
    with path.open("wb") as handle:
        handle.truncate(ReadLimits(max_pixels=10).max_bytes + 1)  # sparse: no disk used
    with pytest.raises(DecodeError, match="file is 16777297 bytes, more than ingest.max_pixels allows"):
        read_file(path, ReadLimits(max_pixels=10))


def test_paths_are_confined_to_the_root(tmp_path):
    root, outside = tmp_path / "collection", tmp_path / "elsewhere"
    inside = write_picture(root / "a.png", np.zeros((8, 8), dtype=np.uint8))
    secret = write_picture(outside / "secret.png", np.zeros((8, 8), dtype=np.uint8))
    (root / "link.png").symlink_to(secret)
    (root / "inner-link.png").symlink_to(inside)
    limits = ReadLimits(root=root)
    assert read_file(inside, limits) == read_file(root / "inner-link.png", limits)
    for path in (root / ".." / "elsewhere" / "secret.png", secret, root / "link.png", Path("/etc/hostname")):
        with pytest.raises(DecodeError) as caught:
            read_file(path, limits)
        assert caught.value.reason == "resolves outside ingest.path (set ingest.allow_outside_path to read it)"
    assert read_file(root / "link.png") == read_file(secret)  # no root: anywhere


def test_mask_files_are_confined_and_size_checked_before_decoding(tmp_path, no_decoder):
    from cxrsynth.tasks.ingest.images import WorkItem, process_item
    from cxrsynth.tasks.sources.base import Localisation

    root = tmp_path / "collection"
    image = write_dicom(root / "a.dcm", ramp(40, 20), bits_stored=12)
    bomb = _png_declaring(root, 12000, 12000)
    outside = write_picture(tmp_path / "outside.png", np.zeros((40, 20), dtype=np.uint8))
    limits = ReadLimits(root=root)
    no_decoder(dicom=False)  # the image decodes; no mask may
    for value, reason in ((str(bomb), "mask of lesion 0 is 12000x12000, image is 40x20"),
                          (str(outside), "mask file of lesion 0 resolves outside ingest.path (set ingest.allow_outside_path to read it)")):
        item = WorkItem("img-000001", image, (Localisation("nodule", "mask", value),))
        result = process_item(item, 16, tmp_path / "out", limits)
        assert result.reason == reason
