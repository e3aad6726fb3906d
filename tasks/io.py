"""Atomic file writes (text, JSON, Parquet, CSV) and the project's image file formats.

Images are float32 arrays in [0, 1], brighter meaning more attenuation (MONOCHROME2 display
convention), stored as 16-bit greyscale PNG. Masks are uint8 PNG. Every write goes to a temporary
file in the target folder and is renamed into place, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

PNG16_MAX = 65535


def _file_mode() -> int:
    """What a plain open() would give a new file: 0o666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    temp = Path(temp_name)
    try:
        yield temp
        os.chmod(temp, _file_mode())  # mkstemp makes files private (0600); outputs are shared
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as temp:
        temp.write_text(text)


def write_json(path: str | Path, payload: object) -> None:
    write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n")


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


def write_png16(path: str | Path, image: np.ndarray) -> None:
    """Write a 2-D float image in [0, 1] as a 16-bit greyscale PNG."""
    if image.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D image, got shape {image.shape}")
    with atomic_path(path) as temp:
        Image.fromarray(to_uint16(image)).save(temp, format="PNG")


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
