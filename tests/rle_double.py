"""SIIM-ACR run-length helpers for the mask tests.

``tasks/masks/rle.py`` (``decode_rle``) is written on another branch. The ``rle_decoder`` fixture
uses it once it is importable, and until then installs the minimal decoder below in its place.
``encode_rle`` builds test strings in the same format: (start, length) pairs, each start counted
from the end of the previous run, over the pixels in column-major order.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest


def encode_rle(mask: np.ndarray) -> str:
    flat = np.concatenate([[0], mask.T.ravel().astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2], edges[1::2]
    gaps = starts - np.concatenate([[0], ends[:-1]])
    return " ".join(f"{gap} {length}" for gap, length in zip(gaps, ends - starts))


def decode_rle_double(rle: str, height: int, width: int) -> np.ndarray:
    numbers = [int(part) for part in rle.split()]
    if len(numbers) % 2:
        raise ValueError("RLE has an odd count of numbers")
    flat = np.zeros(height * width, dtype=bool)
    position = 0
    for gap, length in zip(numbers[0::2], numbers[1::2]):
        position += gap
        if gap < 0 or length < 1 or position + length > flat.size:
            raise ValueError(f"RLE does not fit a {height}x{width} image")
        flat[position : position + length] = True
        position += length
    return flat.reshape(width, height).T


@pytest.fixture
def rle_decoder(monkeypatch):
    """The project's decode_rle, or the double standing in for it until tasks/masks/rle.py lands."""
    try:
        from tasks.masks.rle import decode_rle
    except ImportError:
        module = types.ModuleType("tasks.masks.rle")
        module.decode_rle = decode_rle_double
        monkeypatch.setitem(sys.modules, "tasks.masks.rle", module)
        return decode_rle_double
    return decode_rle
