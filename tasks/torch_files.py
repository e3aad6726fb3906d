"""torch.save with the same bytes for the same tensors, written atomically.

``torch.save`` to a path names the zip archive inside the file after the path's stem; written
through a temporary file (``atomic_path``) that stem is random, so identical weights gave
different bytes and DVC saw a changed model (``evaluate`` re-ran for nothing). Saved to a buffer
the archive is always named ``archive``.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from cxrsynth.tasks.io import atomic_path


def save(payload: object, path: str | Path) -> None:
    """``torch.save(payload)`` to ``path``: deterministic bytes, atomic replace."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path) as temp:
        temp.write_bytes(buffer.getvalue())
