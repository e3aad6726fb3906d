"""Evaluation metrics, all as plain functions over arrays: downstream AUROC with DeLong intervals
and tests, fidelity (FID/KID/SSIM/PSNR), lesion preservation, diversity (PRDC), memorisation."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping


def json_ready(value):
    """Nested metrics with NaN and infinities turned into None (JSON has no such numbers)."""
    if isinstance(value, Mapping):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def mlflow_key(key: str) -> str:
    """A flattened metrics key as MLflow accepts metric and tag names (``label+mask``: ``label_mask``)."""
    return re.sub(r"[^\w\-. :/]", "_", key)


def numeric(flat: Mapping[str, object]) -> dict[str, float]:
    """The numeric entries of a flattened metrics dict, keyed as MLflow accepts metric names."""
    return {mlflow_key(key): float(value) for key, value in flat.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def textual(flat: Mapping[str, object]) -> dict[str, str]:
    """The text entries of a flattened metrics dict (a finding's status, a comparison's reading, the
    best baseline's name): what MLflow keeps as tags, since its metrics are numbers only."""
    return {mlflow_key(key): value for key, value in flat.items() if isinstance(value, str)}
