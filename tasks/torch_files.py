"""torch.save with the same bytes for the same tensors, written atomically.

``torch.save`` to a path names the zip archive inside the file after the path's stem; written
through a temporary file (``atomic_path``) that stem is random, so identical weights gave
different bytes and DVC saw a changed model (``evaluate`` re-ran for nothing). Saved to a buffer
the archive is always named ``archive``. Tensors are saved contiguous: ``torch.save`` writes a tensor's
storage in memory order, so a channels_last model (``runtime.channels_last``) would otherwise give
other bytes, and load as channels_last, for the same weights.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import torch

from cxrsynth.tasks.io import atomic_path


def row_major_strides(shape: torch.Size) -> tuple[int, ...]:
    """The strides of a contiguous tensor of ``shape``. ``is_contiguous`` also accepts other strides
    along dimensions of size 1 (a channels_last weight of one input channel keeps them), and those
    strides are saved too."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def contiguous_tensors(payload: object) -> object:
    """``payload`` with every tensor in it (through dicts, lists and tuples) in contiguous (row-major)
    memory. What holds no other tensor is returned itself, so a contiguous payload pickles as before; a
    copied dict keeps its type and attributes (a state_dict's ``_metadata``)."""
    if isinstance(payload, torch.Tensor):
        return payload if payload.stride() == row_major_strides(payload.shape) else payload.clone(
            memory_format=torch.contiguous_format)
    if isinstance(payload, dict):
        items = {key: contiguous_tensors(value) for key, value in payload.items()}
        if all(items[key] is value for key, value in payload.items()):
            return payload
        copied = copy.copy(payload)
        copied.update(items)
        return copied
    if type(payload) in (list, tuple):
        items = [contiguous_tensors(value) for value in payload]
        return payload if all(a is b for a, b in zip(items, payload, strict=True)) else type(payload)(items)
    return payload


def save(payload: object, path: str | Path) -> None:
    """``torch.save(payload)`` to ``path``: deterministic bytes, contiguous tensors, atomic replace."""
    buffer = io.BytesIO()
    torch.save(contiguous_tensors(payload), buffer)
    with atomic_path(path) as temp:
        temp.write_bytes(buffer.getvalue())
