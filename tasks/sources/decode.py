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
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from cxrsynth.tasks.sources.base import SourceError

DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}
DICOM_MAGIC_OFFSET = 128


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


def read_file(path: str | Path) -> bytes:
    """The file's bytes, or a DecodeError saying it is missing or empty."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DecodeError(path, "file not found") from None
    except IsADirectoryError:
        raise DecodeError(path, "is a directory, not an image file") from None
    except OSError as exc:
        raise DecodeError(path, f"cannot read file ({exc.strerror or type(exc).__name__})") from None
    if not data:
        raise DecodeError(path, "empty file")
    return data


def decode_image(path: str | Path) -> DecodedImage:
    """Decode a DICOM, PNG or JPG file (format from its content, else its suffix)."""
    return decode_bytes(read_file(path), path)


def decode_bytes(data: bytes, path: str | Path) -> DecodedImage:
    """Decode a file's bytes; ``path`` only picks the format when the content does not and names errors."""
    path = Path(path)
    if is_dicom(data) or path.suffix.lower() in DICOM_SUFFIXES:
        return _decode_dicom(data, path)
    return _decode_picture(data, path)


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


def _decode_dicom(data: bytes, path: Path) -> DecodedImage:
    dataset = _read_dataset(data, path)
    if "PixelData" not in dataset:
        raise DecodeError(path, "DICOM has no pixel data (truncated, or not an image object)")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DecodeError(path, f"multi-frame DICOM ({frames} frames) is not a single radiograph")
    try:
        stored = dataset.pixel_array
    except Exception as exc:  # pydicom raises many types for truncated or undecodable pixel data
        raise DecodeError(path, f"DICOM pixel data cannot be decoded ({scrubbed(exc, path)})") from None
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    try:
        if photometric in ("MONOCHROME1", "MONOCHROME2"):
            pixels = _display_values(stored, dataset)
        else:
            pixels = _luminance(stored) / (2 ** int(dataset.BitsStored) - 1)  # colour: RGB after pydicom
    except Exception as exc:  # a malformed LUT or window fails in many ways; the file is quarantined
        raise DecodeError(path, f"DICOM intensity transform failed ({scrubbed(exc, path)})") from None
    if photometric == "MONOCHROME1":  # low values are white: flip to bright = attenuation
        pixels = 1.0 - pixels
    return DecodedImage(
        pixels=_checked(np.clip(pixels, 0.0, 1.0).astype(np.float32), path),
        pixel_spacing_mm=_dicom_spacing(dataset),
        site=_text(dataset, "InstitutionName") or _text(dataset, "Manufacturer"),
        view=(_text(dataset, "ViewPosition") or "").upper() or None,
    )


def _read_dataset(data: bytes, path: Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data), force=not is_dicom(data))
    except InvalidDicomError as exc:
        raise DecodeError(path, f"not a valid DICOM file ({scrubbed(exc, path)})") from None
    except Exception as exc:  # a header cut short raises EOFError, struct.error, ValueError, ...
        raise DecodeError(path, f"truncated or corrupt DICOM header ({scrubbed(exc, path)})") from None


def _display_values(stored: np.ndarray, dataset: pydicom.Dataset) -> np.ndarray:
    """Stored values -> modality LUT -> VOI LUT / window, scaled to [0, 1] by the declared output range."""
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
    return (np.asarray(values, dtype=np.float64) - low) / (high - low)


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


def _decode_picture(data: bytes, path: Path) -> DecodedImage:
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            image = opened.copy()
    except UnidentifiedImageError:
        raise DecodeError(path, "not an image: neither DICOM nor a format PIL recognises") from None
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError, ...
        raise DecodeError(path, f"corrupt image data ({scrubbed(exc, path)})") from None
    return DecodedImage(pixels=_checked(_picture_to_unit(image, path), path))


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


def _checked(pixels: np.ndarray, path: Path) -> np.ndarray:
    if pixels.ndim != 2:
        raise DecodeError(path, f"expected a 2-D greyscale image, got shape {pixels.shape}")
    if min(pixels.shape) < 2:
        raise DecodeError(path, f"image too small ({pixels.shape[0]}x{pixels.shape[1]})")
    return pixels.astype(np.float32, copy=False)
