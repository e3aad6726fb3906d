"""One uint8 label map per image: bit i is set where finding FINDINGS[i] has a lesion.

Bits, not classes, because findings overlap (an effusion under an atelectasis).
"""

from __future__ import annotations

import numpy as np

from cxrsynth.tasks.findings import FINDINGS, finding_index


def encode(masks: dict[str, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Per-finding binary masks to one bit-coded uint8 map of ``shape``."""
    label_map = np.zeros(shape, dtype=np.uint8)
    for finding, mask in masks.items():
        if mask.shape != shape:
            raise ValueError(f"{finding} mask has shape {mask.shape}, expected {shape}")
        label_map |= (mask.astype(bool).astype(np.uint8) << finding_index(finding))
    return label_map


def decode(label_map: np.ndarray) -> np.ndarray:
    """Bit-coded map (H, W) to a float32 stack (len(FINDINGS), H, W) of 0/1 channels."""
    bits = np.arange(len(FINDINGS), dtype=np.uint8)
    return ((label_map[None, :, :] >> bits[:, None, None]) & 1).astype(np.float32)
