"""The SIIM-ACR pneumothorax run-length format.

``"start length start length ..."`` over the image flattened column-major (down each column, then
the next), where each start counts the pixels skipped since the end of the previous run (the
first from pixel 0). ``-1`` (or an empty string) means no lesion. The challenge's masks are
1024 x 1024, but nothing here assumes that size.
"""

from __future__ import annotations

import numpy as np

NO_LESION = "-1"


def _numbers(rle: str) -> np.ndarray:
    try:
        numbers = np.array([int(token) for token in rle.split()], dtype=np.int64)
    except ValueError:
        raise ValueError(f"RLE holds a token that is not an integer: {rle[:60]!r}") from None
    if len(numbers) % 2:
        raise ValueError(f"RLE has an odd number of values ({len(numbers)}); expected start/length pairs")
    if (numbers < 0).any():
        raise ValueError("RLE holds a negative start or length")
    return numbers


def decode_rle(rle: str, height: int, width: int) -> np.ndarray:
    """A SIIM-ACR RLE string as a boolean (height, width) mask; ValueError if it does not fit."""
    rle = rle.strip()
    flat = np.zeros(height * width, dtype=bool)
    if rle in ("", NO_LESION):
        return flat.reshape((height, width), order="F")
    numbers = _numbers(rle)
    lengths = numbers[1::2]
    if (lengths == 0).any():
        raise ValueError("RLE holds a run of length 0")
    starts = np.cumsum(numbers)[0::2]  # absolute: every gap and run before this run, and its own gap
    ends = starts + lengths
    if ends[-1] > flat.size:
        raise ValueError(
            f"RLE runs to pixel {int(ends[-1])} but a {height}x{width} image has {flat.size} pixels; "
            "wrong image size for this mask?"
        )
    for start, end in zip(starts, ends):
        flat[start:end] = True
    return flat.reshape((height, width), order="F")


def encode_rle(mask: np.ndarray) -> str:
    """A 2-D mask (non-zero = lesion) in the SIIM-ACR RLE format; ``-1`` when empty."""
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    flat = np.asarray(mask, dtype=bool).ravel(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], flat, [0]))))
    if not len(edges):
        return NO_LESION
    starts, ends = edges[0::2], edges[1::2]
    gaps = starts - np.concatenate(([0], ends[:-1]))
    return " ".join(f"{gap} {length}" for gap, length in zip(gaps, ends - starts))
