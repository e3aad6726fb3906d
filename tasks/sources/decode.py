"""Radiograph files (DICOM, PNG, JPG) to float32 images in [0, 1], brighter = more attenuation.

DICOM goes through pydicom's own display pipeline: the modality LUT or rescale slope/intercept,
then the VOI LUT or window centre/width when the file has one, then MONOCHROME1 is inverted.
Values are scaled by the range the file declares (the VOI output range, else the modality
output range of the stored bits), never by the image's own contents, so exposure differences
between acquisitions survive. PNG and JPG are display-ready: 8-bit is scaled by 255, 16-bit by
65535, colour is turned to luminance (alpha dropped).

What comes back is the pixels plus the metadata ingest needs (pixel spacing, site, view), never
an identifier. Errors name the file in the message but keep a file-free ``reason`` for the
quarantine list, because file names can embed patient ids.
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.encaps import get_frame
from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array
from pydicom.uid import DeflatedExplicitVRLittleEndian

from cxrsynth.tasks.sources.base import SourceError

DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}
DICOM_MAGIC_OFFSET = 128
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "YBR_PARTIAL_420")
INFLATE_CHUNK = 1 << 20
# A file may hold its pixels at up to 8 bytes each (3 samples of 16 bits, and room for headers,
# overlays and private tags); anything larger is not one radiograph of at most max_pixels.
BYTES_PER_PIXEL = 8
HEADER_ALLOWANCE = 16 << 20
DEFLATED_UID = str(DeflatedExplicitVRLittleEndian).encode("ascii")
UNIT_BAND_ELEMENTS = 1 << 17  # float64 values scaled per band: 1 MiB, within a core's L2 cache


@dataclass(frozen=True)
class ReadLimits:
    """What a file must satisfy before any decoder runs (ingest.max_pixels, ingest.min_size, the collection root)."""

    max_pixels: int = 20_000_000
    min_size: int = 2
    root: Path | None = None  # files must resolve inside it (symlinks followed); None: anywhere

    @property
    def max_bytes(self) -> int:
        return self.max_pixels * BYTES_PER_PIXEL + HEADER_ALLOWANCE


DEFAULT_LIMITS = ReadLimits()


class DecodeError(SourceError):
    """A file that cannot be decoded. ``reason`` says what is wrong without naming the file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # float32 (H, W) in [0, 1], brighter = more attenuation
    pixel_spacing_mm: float | None = None  # at this image's resolution
    site: str | None = None  # InstitutionName, else Manufacturer
    view: str | None = None  # ViewPosition, upper case


def confine(path: str | Path, limits: ReadLimits = DEFAULT_LIMITS) -> Path:
    """``path`` itself, or a DecodeError when it resolves (through any symlink) outside ``limits.root``."""
    path = Path(path)
    if limits.root is not None and not Path(os.path.realpath(path)).is_relative_to(os.path.realpath(limits.root)):
        raise DecodeError(path, "resolves outside ingest.path (set ingest.allow_outside_path to read it)")
    return path


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def read_file(path: str | Path, limits: ReadLimits = DEFAULT_LIMITS) -> bytes:
    """The bytes of a regular file inside the root and within the size limit, or a DecodeError saying why not."""
    path = confine(path, limits)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; what was opened is checked before reading.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise DecodeError(path, "file not found") from None
    except OSError as exc:
        raise DecodeError(path, f"cannot read file ({exc.strerror or type(exc).__name__})") from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise DecodeError(path, f"is {kind}, not a regular image file")
    with os.fdopen(descriptor, "rb") as handle:
        os.set_blocking(descriptor, True)
        size = os.fstat(descriptor).st_size
        if size > limits.max_bytes:
            raise DecodeError(path, f"file is {size} bytes, more than ingest.max_pixels allows ({limits.max_bytes})")
        data = handle.read(limits.max_bytes + 1)
    if not data:
        raise DecodeError(path, "empty file")
    if len(data) > limits.max_bytes:  # it grew while being read
        raise DecodeError(path, f"file is more than {limits.max_bytes} bytes (ingest.max_pixels)")
    return data


def decode_image(path: str | Path, limits: ReadLimits = DEFAULT_LIMITS) -> DecodedImage:
    """Decode a DICOM, PNG or JPG file (format from its content, else its suffix)."""
    return decode_bytes(read_file(path, limits), path, limits)


def decode_bytes(data: bytes, path: str | Path, limits: ReadLimits = DEFAULT_LIMITS) -> DecodedImage:
    """Decode a file's bytes; ``path`` only picks the format when the content does not and names errors."""
    path = Path(path)
    if is_dicom(data) or path.suffix.lower() in DICOM_SUFFIXES:
        return _decode_dicom(data, path, limits)
    return _decode_picture(data, path, limits)


def check_size(path: Path, rows: int, columns: int, limits: ReadLimits, what: str = "image") -> None:
    """Refuse an image whose declared size is over ``max_pixels`` or under ``min_size`` (before decoding)."""
    if rows * columns > limits.max_pixels:
        raise DecodeError(path, f"{what} declares {rows}x{columns} pixels, more than ingest.max_pixels ({limits.max_pixels})")
    if min(rows, columns) < limits.min_size:
        raise DecodeError(path, f"{what} is {rows}x{columns}, smaller than ingest.min_size ({limits.min_size})")


def is_dicom(data: bytes) -> bool:
    return data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM"


def scrubbed(exc: BaseException, path: Path) -> str:
    """An exception's text with the file's path and name taken out (library messages quote them)."""
    text = str(exc)
    for name in (str(path), path.name, path.stem):
        if name:  # whole words only, so a short stem does not eat into ordinary words
            text = re.sub(rf"(?<![\w]){re.escape(name)}(?![\w])", "<file>", text)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ----------------------------------------------------------------------------------------- DICOM


def _decode_dicom(data: bytes, path: Path, limits: ReadLimits) -> DecodedImage:
    dataset = _read_dataset(data, path, limits)
    if "PixelData" not in dataset:
        raise DecodeError(path, "DICOM has no pixel data (truncated, or not an image object)")
    try:
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError) as exc:  # e.g. '1A': the file is quarantined, not the whole chunk failed
        raise DecodeError(path, f"DICOM NumberOfFrames is not a number ({scrubbed(exc, path)})") from None
    if frames > 1:
        raise DecodeError(path, f"multi-frame DICOM ({frames} frames) is not a single radiograph")
    photometric = _check_header(dataset, path, limits)
    _check_codestream(dataset, path, limits)
    try:
        # The function, not the Dataset property: the property also fingerprints the pixel elements twice
        # to cache its array, which costs as much as decoding a small image.
        stored = pixel_array(dataset)
    except Exception as exc:  # pydicom raises many types for truncated or undecodable pixel data
        raise DecodeError(path, f"DICOM pixel data cannot be decoded ({scrubbed(exc, path)})") from None
    try:
        if photometric in MONOCHROME:
            values, (low, high) = _display_values(stored, dataset)
        elif photometric == "PALETTE COLOR":
            values, (low, high) = _luminance(apply_color_lut(stored, dataset)), (0.0, 65535.0)  # 16-bit LUT entries
        else:
            values, (low, high) = _luminance(stored), (0.0, float(2 ** int(dataset.BitsStored) - 1))  # RGB after pydicom
        # Low values are white in MONOCHROME1: flipped to bright = attenuation.
        pixels = _unit_float32(values, low, high, flip=photometric == "MONOCHROME1")
    except Exception as exc:  # a malformed LUT or window fails in many ways; the file is quarantined
        raise DecodeError(path, f"DICOM intensity transform failed ({scrubbed(exc, path)})") from None
    return DecodedImage(
        pixels=_checked(pixels, path, limits),
        pixel_spacing_mm=_dicom_spacing(dataset),
        site=_text(dataset, "InstitutionName") or _text(dataset, "Manufacturer"),
        view=(_text(dataset, "ViewPosition") or "").upper() or None,
    )


def _read_dataset(data: bytes, path: Path, limits: ReadLimits) -> pydicom.Dataset:
    if is_dicom(data):
        _check_inflated_size(data, path, limits)
    try:
        return pydicom.dcmread(io.BytesIO(data), force=not is_dicom(data))
    except InvalidDicomError as exc:
        raise DecodeError(path, f"not a valid DICOM file ({scrubbed(exc, path)})") from None
    except Exception as exc:  # a header cut short raises EOFError, struct.error, ValueError, ...
        raise DecodeError(path, f"truncated or corrupt DICOM header ({scrubbed(exc, path)})") from None


def _check_inflated_size(data: bytes, path: Path, limits: ReadLimits) -> None:
    """A deflated data set is inflated whole by pydicom: count what it inflates to first, in bounded chunks."""
    if DEFLATED_UID not in data:  # a deflated file names its transfer syntax in the meta header; parsing that costs more
        return
    stream = io.BytesIO(data)
    try:
        read_preamble(stream, force=False)
        # pydicom's public read_file_meta_info takes only a file name; this is the reader it calls.
        meta = _read_file_meta_info(stream)  # leaves the stream at the data set
    except Exception:  # a broken meta header is reported by the full read that follows
        return
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return
    inflater, pending, inflated = zlib.decompressobj(-zlib.MAX_WBITS), data[stream.tell():], 0
    try:
        while pending and inflated <= limits.max_bytes:
            inflated += len(inflater.decompress(pending, INFLATE_CHUNK))
            pending = inflater.unconsumed_tail
    except zlib.error as exc:
        raise DecodeError(path, f"deflated DICOM data set is corrupt ({exc})") from None
    if inflated > limits.max_bytes:
        raise DecodeError(path, f"deflated DICOM data set inflates to more than {limits.max_bytes} bytes (ingest.max_pixels)")


def _check_header(dataset: pydicom.Dataset, path: Path, limits: ReadLimits) -> str:
    """The declared size, bit depths and photometric interpretation, checked before any decoder runs."""
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        allocated, stored_bits = int(dataset.BitsAllocated), int(dataset.BitsStored)
        high_bit = int(dataset.get("HighBit", stored_bits - 1))
        samples = int(dataset.get("SamplesPerPixel", 1))
    except (AttributeError, TypeError, ValueError) as exc:
        raise DecodeError(path, f"DICOM image header incomplete ({scrubbed(exc, path)})") from None
    check_size(path, rows, columns, limits, "DICOM")
    if not 1 <= stored_bits <= allocated or high_bit != stored_bits - 1:
        raise DecodeError(path, f"inconsistent bit depths: BitsAllocated {allocated}, BitsStored {stored_bits}, HighBit {high_bit}")
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    expected = 1 if photometric in (*MONOCHROME, "PALETTE COLOR") else 3 if photometric in COLOUR else None
    if expected is None:
        raise DecodeError(path, f"unsupported PhotometricInterpretation {photometric!r}")
    if samples != expected:
        raise DecodeError(path, f"{photometric} with SamplesPerPixel {samples} (expected {expected})")
    if photometric == "PALETTE COLOR" and "RedPaletteColorLookupTableDescriptor" not in dataset:
        raise DecodeError(path, "PALETTE COLOR DICOM without a colour lookup table")
    if not dataset.file_meta.get("TransferSyntaxUID", pydicom.uid.ImplicitVRLittleEndian).is_compressed:
        _check_native_bits(dataset, path, allocated, stored_bits)
    return photometric


def _check_native_bits(dataset: pydicom.Dataset, path: Path, allocated: int, stored_bits: int) -> None:
    """Stored values with bits above HighBit set would be masked away by pydicom: refuse them instead."""
    if allocated not in (8, 16, 32) or stored_bits == allocated:
        return
    values = np.frombuffer(dataset.PixelData, dtype=f"<u{allocated // 8}", count=len(dataset.PixelData) // (allocated // 8))
    # Unsigned: the bits above HighBit are all 0, i.e. every value is below 2**BitsStored; signed: they
    # repeat the sign bit, i.e. every value read as signed fits in BitsStored bits. Min and max test that
    # in two passes without a temporary array.
    if int(dataset.get("PixelRepresentation", 0)) == 1:
        as_signed = values.view(f"<i{allocated // 8}")
        wrapped = as_signed.min() < -(1 << (stored_bits - 1)) or as_signed.max() >= 1 << (stored_bits - 1)
    else:
        wrapped = values.max() >= 1 << stored_bits
    if wrapped:
        used = int(values.max()).bit_length()
        raise DecodeError(path, f"stored values use {used} bits, BitsStored declares {stored_bits}")


def _check_codestream(dataset: pydicom.Dataset, path: Path, limits: ReadLimits) -> None:
    """A compressed frame's own declared size and precision, read from its codestream header, must match the DICOM's."""
    syntax = dataset.file_meta.get("TransferSyntaxUID")
    if syntax is None or not syntax.is_encapsulated or syntax == pydicom.uid.RLELossless:
        return  # RLE decodes into a buffer sized from Rows and Columns, already checked
    try:
        frame = get_frame(dataset.PixelData, 0, number_of_frames=1)
        parameters = _codestream_parameters(frame)
    except Exception as exc:
        raise DecodeError(path, f"compressed pixel data has no readable codestream header ({scrubbed(exc, path)})") from None
    rows, columns = int(parameters["rows"]), int(parameters["columns"])
    check_size(path, rows, columns, limits, "the compressed codestream")
    if (rows, columns) != (int(dataset.Rows), int(dataset.Columns)):
        raise DecodeError(path, f"the codestream is {rows}x{columns}, the DICOM header declares {dataset.Rows}x{dataset.Columns}")
    if int(parameters["precision"]) > int(dataset.BitsStored):
        raise DecodeError(path, f"the codestream holds {parameters['precision']}-bit values, BitsStored declares {dataset.BitsStored}")


def _codestream_parameters(frame: bytes) -> dict:
    """Rows, columns and precision as the JPEG 2000 (openjpeg) or JPEG / JPEG-LS (libjpeg) header states them."""
    if frame[:2] == b"\xff\x4f" or frame[4:8] == b"jP  ":  # a J2K codestream or a JP2 file
        import openjpeg

        return openjpeg.get_parameters(frame)
    import libjpeg

    return libjpeg.get_parameters(frame)


def _display_values(stored: np.ndarray, dataset: pydicom.Dataset) -> tuple[np.ndarray, tuple[float, float]]:
    """Stored values -> modality LUT -> VOI LUT / window; and the declared output range to scale them by."""
    values = apply_modality_lut(stored, dataset)
    if _has_voi(dataset):
        if _voi_lut(dataset) is not None and np.all(np.mod(values, 1) == 0):
            values = values.astype(np.int64)  # a VOI LUT indexes by integer value
        low, high = _voi_range(dataset)
        values = apply_voi_lut(values, dataset)
    else:
        low, high = _modality_range(dataset)
    if high == low:
        raise ValueError(f"declared intensity range is empty ({low} to {high})")
    return values, (low, high)


def _unit_float32(values: np.ndarray, low: float, high: float, flip: bool) -> np.ndarray:
    """``(values - low) / (high - low)``, flipped (1 - x) if asked, clipped to [0, 1], as float32.

    The arithmetic is float64, as it always was, but done a band of rows at a time, so the float64
    temporaries stay in the CPU cache instead of making four passes over a 4-8x larger copy of the
    image; every value is the same as the whole-array computation's.
    """
    unit = np.empty(values.shape, dtype=np.float32)  # any shape: _checked names one that is not 2-D
    band = max(1, UNIT_BAND_ELEMENTS // max(1, math.prod(values.shape[1:])))
    for start in range(0, unit.shape[0], band):
        part = np.subtract(values[start : start + band], low, dtype=np.float64)
        part /= high - low
        if flip:
            np.subtract(1.0, part, out=part)
        np.clip(part, 0.0, 1.0, out=part)
        unit[start : start + band] = part
    return unit


def _voi_lut(dataset: pydicom.Dataset) -> pydicom.Dataset | None:
    """The VOI LUT pydicom applies (it prefers a complete table to a window), if any."""
    if dataset.get("VOILUTSequence"):
        item = dataset.VOILUTSequence[0]
        if item.get("LUTDescriptor") is not None and item.get("LUTData") is not None:
            return item
    return None


def _has_voi(dataset: pydicom.Dataset) -> bool:
    window = dataset.get("WindowCenter") is not None and dataset.get("WindowWidth") is not None
    return window or _voi_lut(dataset) is not None


def _stored_range(dataset: pydicom.Dataset) -> np.ndarray:
    bits = int(dataset.BitsStored)
    if int(dataset.get("PixelRepresentation", 0)) == 0:
        return np.array([0, 2**bits - 1], dtype=np.int64)
    return np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1], dtype=np.int64)


def _modality_range(dataset: pydicom.Dataset) -> tuple[float, float]:
    """What the stored bit range becomes through the modality LUT or rescale (a slope may be negative)."""
    ends = np.asarray(apply_modality_lut(_stored_range(dataset), dataset), dtype=np.float64)
    return float(ends.min()), float(ends.max())


def _voi_range(dataset: pydicom.Dataset) -> tuple[float, float]:
    """The VOI transform's output range, asked of pydicom itself rather than re-derived."""
    table_item = _voi_lut(dataset)
    if table_item is not None:
        entries, first, _bits = (int(v) for v in table_item.LUTDescriptor)
        table = apply_voi_lut(np.arange(first, first + (entries or 2**16), dtype=np.int64), dataset)
        return float(table.min()), float(table.max())
    # Windowing maps everything below the window to its lowest output and above to its highest.
    with np.errstate(over="ignore"):
        ends = apply_voi_lut(np.array([-1e12, 1e12]), dataset)
    return float(ends[0]), float(ends[1])


def _dicom_spacing(dataset: pydicom.Dataset) -> float | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = dataset.get(keyword)
        if value:
            try:
                spacing = [float(v) for v in value]
            except (TypeError, ValueError):
                continue
            if all(s > 0 for s in spacing):
                return float(np.mean(spacing))
    return None


def _text(dataset: pydicom.Dataset, keyword: str) -> str | None:
    value = dataset.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or None


# ------------------------------------------------------------------------------------- PNG / JPG


def _decode_picture(data: bytes, path: Path, limits: ReadLimits) -> DecodedImage:
    try:
        with Image.open(io.BytesIO(data)) as opened:
            check_size(path, opened.height, opened.width, limits, opened.format or "image")  # from the header alone
            opened.load()
            image = opened.copy()
    except UnidentifiedImageError:
        raise DecodeError(path, "not an image: neither DICOM nor a format PIL recognises") from None
    except DecodeError:
        raise
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError, ...
        raise DecodeError(path, f"corrupt image data ({scrubbed(exc, path)})") from None
    return DecodedImage(pixels=_checked(_picture_to_unit(image, path), path, limits))


def _picture_to_unit(image: Image.Image, path: Path) -> np.ndarray:
    if image.mode.startswith("I;16") or image.mode == "I":  # 16-bit greyscale PNG
        return np.asarray(image, dtype=np.float64).astype(np.float32) / 65535.0
    if image.mode == "F":
        raise DecodeError(path, "floating-point image: no declared intensity range")
    if image.mode != "L":
        image = image.convert("L")  # RGB, RGBA, LA, P, 1, CMYK: ITU-R 601 luminance, alpha dropped
    return np.asarray(image, dtype=np.float32) / 255.0


def _luminance(stored: np.ndarray) -> np.ndarray:
    if stored.ndim == 3 and stored.shape[-1] in (3, 4):
        return stored[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return stored.astype(np.float64)


def _checked(pixels: np.ndarray, path: Path, limits: ReadLimits) -> np.ndarray:
    if pixels.ndim != 2:
        raise DecodeError(path, f"expected a 2-D greyscale image, got shape {pixels.shape}")
    check_size(path, *pixels.shape, limits, "decoded image")
    return pixels.astype(np.float32, copy=False)
