"""A figure of a few lesion masks overlaid on their working images (an MLflow artifact)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cxrsynth.tasks.findings import FINDINGS  # noqa: E402
from cxrsynth.tasks.io import atomic_path, read_mask, read_png16  # noqa: E402
from cxrsynth.tasks.masks import labelmap  # noqa: E402

COLOURS = plt.get_cmap("tab10").colors


def overlay(image: np.ndarray, label_map: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """An RGB rendering of a grey image with each finding's mask tinted in its own colour."""
    rgb = np.repeat(image[..., None], 3, axis=2).astype(np.float32)
    for index, channel in enumerate(labelmap.decode(label_map)):
        inside = channel > 0
        rgb[inside] = (1 - alpha) * rgb[inside] + alpha * np.asarray(COLOURS[index], dtype=np.float32)
    return rgb


def overlay_figure(frame: pd.DataFrame, path: str | Path, root: str | Path = ".", count: int = 8) -> int:
    """Save the first ``count`` masked images (by image_id) with their masks; return how many were drawn.
    Panels are titled by finding only: no identifier reaches the artifact."""
    masked = frame[frame["mask_path"].notna()].sort_values("image_id").head(count)
    columns = max(1, min(4, len(masked)))
    rows = max(1, -(-len(masked) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.3 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, row in zip(axes.ravel(), masked.itertuples()):
        label_map = read_mask(Path(root) / row.mask_path)
        axis.imshow(overlay(read_png16(Path(root) / row.path), label_map), interpolation="nearest")
        present = [finding for index, finding in enumerate(FINDINGS) if np.any(label_map & (1 << index))]
        axis.set_title("\n".join(present), fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLOURS[i]) for i in range(len(FINDINGS))]
    figure.legend(handles, FINDINGS, loc="lower center", ncol=3, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.08, 1, 0.97))
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png", dpi=100)
    plt.close(figure)
    return len(masked)
