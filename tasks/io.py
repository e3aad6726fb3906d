"""Atomic file writes (text, JSON, Parquet, CSV) and the project's image file formats.

Images are float32 arrays in [0, 1], brighter meaning more attenuation (MONOCHROME2 display
convention), stored as 16-bit greyscale PNG. Masks are uint8 PNG. Every write goes to a temporary
file in the target folder and is renamed into place, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

PNG16_MAX = 65535
TEMP_NAME_TRIES = 100
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_FILTER_UP = 2  # each row minus the row above, byte by byte (PNG spec, filter type 2)
# zlib's run-length strategy, which ignores the level (0 aside). The low bits of 16-bit radiographs
# are noise that LZ77's string matching cannot shorten and only spends time on: on such images RLE
# writes files no larger than the default strategy's at any level, 1.7-2.6x faster, and it still packs
# the runs of zero padding (benchmarks/bench_ingest.py --levels measures it).
PNG_ZLIB_LEVEL = 1
PNG_ZLIB_STRATEGY = zlib.Z_RLE


def _new_temp_file(folder: Path, name: str) -> Path:
    """A new empty file ``.name.<random>.tmp`` in ``folder``, created as a plain open() would (the umask applied).

    Created with O_EXCL under a random name, like ``tempfile.mkstemp``, but with open()'s mode rather
    than mkstemp's private 0600, so no chmod (nor a process-wide umask read, which races with other
    threads creating files) is needed before the rename.
    """
    for _ in range(TEMP_NAME_TRIES):
        temp = folder / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
            return temp
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: no free temporary name for {name} in {TEMP_NAME_TRIES} tries")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    try:
        temp = _new_temp_file(path.parent, path.name)
    except FileNotFoundError:  # the folder is made only when missing: one system call less per file
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = _new_temp_file(path.parent, path.name)
    try:
        yield temp
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as temp:
        temp.write_text(text)


def write_json(path: str | Path, payload: object, sort_keys: bool = True) -> None:
    """Indented JSON; keys sorted unless the payload's own (deterministic) order is meant to be read first."""
    write_text(path, json.dumps(payload, indent=2, sort_keys=sort_keys, default=_json_default) + "\n")


def write_parquet(path: str | Path, frame: pd.DataFrame, schema: pa.Schema | None = None) -> None:
    """Write a DataFrame as Parquet, without its index; with ``schema``, converted to exactly that schema.

    Without a schema the bytes are those of ``frame.to_parquet(path, index=False)``.
    """
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    with atomic_path(path) as temp:
        pq.write_table(table, temp)


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    """Write a DataFrame as CSV, without its index."""
    with atomic_path(path) as temp:
        frame.to_csv(temp, index=False)


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def to_uint16(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * PNG16_MAX).astype(np.uint16)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(payload, zlib.crc32(kind)))


def encode_png16(pixels: np.ndarray, level: int = PNG_ZLIB_LEVEL, strategy: int = PNG_ZLIB_STRATEGY) -> bytes:
    """A 2-D uint16 array as the bytes of a 16-bit greyscale PNG: every row Up-filtered, deflated by zlib.

    Why not Pillow's encoder: it tries all five PNG filters on every row and keeps the best, which
    alone takes longer than this whole function, for files no smaller on radiographs. Up is one
    numpy subtraction. Any PNG reader decodes the result (tests read it back with Pillow, pixel by
    pixel).
    """
    if pixels.ndim != 2 or pixels.dtype != np.uint16 or 0 in pixels.shape:
        raise ValueError(f"expected a non-empty 2-D uint16 array, got {pixels.dtype} of shape {pixels.shape}")
    height, width = pixels.shape
    rows = pixels.astype(">u2").view(np.uint8)  # PNG samples are big-endian
    filtered = np.empty((height, 2 * width + 1), dtype=np.uint8)
    filtered[:, 0] = PNG_FILTER_UP
    filtered[0, 1:] = rows[0]  # the row above the first counts as zeros
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8 wraps modulo 256, as the filter does
    deflate = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS, 8, strategy)
    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)  # 16-bit greyscale, no interlace
    return (PNG_SIGNATURE + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", deflate.compress(filtered) + deflate.flush()) + _png_chunk(b"IEND", b""))


def write_png16(path: str | Path, image: np.ndarray) -> None:
    """Write a 2-D float image in [0, 1] as a 16-bit greyscale PNG."""
    if image.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D image, got shape {image.shape}")
    encoded = encode_png16(to_uint16(image))
    with atomic_path(path) as temp:
        temp.write_bytes(encoded)


def read_png16(path: str | Path) -> np.ndarray:
    """Read a project PNG back as float32 in [0, 1]."""
    with Image.open(path) as image:
        array = np.asarray(image)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    return array.astype(np.float32) / PNG16_MAX


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    """Write a uint8 mask (binary or a bit-coded label map) as PNG."""
    if mask.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D mask, got shape {mask.shape}")
    with atomic_path(path) as temp:
        Image.fromarray(mask.astype(np.uint8)).save(temp, format="PNG")


def read_mask(path: str | Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image).astype(np.uint8)
