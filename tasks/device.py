"""The torch device a stage runs on, from ``runtime.device``, and the mixed precision it allows."""

from __future__ import annotations

import torch


def resolve_device(setting: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is an error, not a silent CPU run."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise ValueError("runtime.device is 'cuda' but no CUDA device is available")
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(setting)


def autocast_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """Mixed precision applies on CUDA only: bf16 where the card has it under "auto", else fp16."""
    if device.type != "cuda" or setting == "no":
        return None
    if setting == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp16": torch.float16, "bf16": torch.bfloat16}[setting]
