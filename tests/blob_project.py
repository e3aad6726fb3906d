"""Toy data for the mix and classifier tests (the ``blob_project`` fixture): real and synthetic
manifests whose images carry each present finding as a bright blob at the finding's own place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxrsynth.tasks import manifest
from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.io import write_png16

# Blob centres as (row, column) fractions of the side, one per finding.
BLOB_CENTRES = [(0.3, 0.3), (0.7, 0.3), (0.3, 0.7), (0.7, 0.7), (0.5, 0.5), (0.5, 0.2)]


def draw_image(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    image = 0.3 + 0.05 * rng.standard_normal((size, size))
    rows, cols = np.mgrid[:size, :size] / size
    for (row, col), label in zip(BLOB_CENTRES, labels):
        if label == 1:
            image += 0.5 * np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / 0.01)
    return np.clip(image, 0, 1).astype(np.float32)


def _labels(n: int, rng: np.random.Generator, prevalence: float) -> dict[str, pd.array]:
    states = (rng.random((n, len(FINDINGS))) < prevalence).astype(float)
    states[rng.random((n, len(FINDINGS))) < 0.1] = np.nan  # not mentioned
    return {finding: pd.array([None if np.isnan(v) else int(v) for v in states[:, i]], dtype="Int8")
            for i, finding in enumerate(FINDINGS)}


def real_frame(splits: dict[str, int], prevalence: float = 0.3, seed: int = 0) -> pd.DataFrame:
    """Real rows, one image per patient, ``splits`` giving the row count of each split."""
    rng = np.random.default_rng(seed)
    split = [name for name, count in splits.items() for _ in range(count)]
    n = len(split)
    return pd.DataFrame({
        "image_id": [f"real-{i:04d}" for i in range(n)],
        "patient_id": [f"p-{i:04d}" for i in range(n)],
        "split": split, "source": "real", "dataset": "phantom",
        "path": [f"data/ingest/images/real-{i:04d}.png" for i in range(n)],
        **_labels(n, rng, prevalence),
    })


def synthetic_frame(per_finding: dict[str, int], seed: int = 0) -> pd.DataFrame:
    """Synthetic training rows: ``per_finding[f]`` images showing only finding f."""
    rows = []
    for finding, count in per_finding.items():
        for k in range(count):
            image_id = f"syn-{finding}-{k:03d}"
            rows.append({"image_id": image_id, "split": "train", "source": "synthetic", "dataset": "synthetic",
                         "path": f"data/generate/images/{image_id}.png", "seed": seed * 1000 + k,
                         "condition_type": "label+mask+text", "sampler": "dpm_solver", "steps": 3,
                         **{f: int(f == finding) for f in FINDINGS}})
    return manifest.conform(pd.DataFrame(rows), "generate")


def write_images(frame: pd.DataFrame, root: Path, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    labels = manifest.label_matrix(frame)
    for path, row in zip(frame["path"], labels):
        write_png16(root / path, draw_image(row, size, rng))


def write_manifests(root: Path, real: pd.DataFrame, synthetic: pd.DataFrame | None, size: int = 32) -> None:
    """The prepare_masks manifest of ``real`` and the generate manifest of ``synthetic``, with their images."""
    manifest.write(real, root / "data/prepare_masks/manifest.parquet", "prepare_masks")
    write_images(real, root, size)
    if synthetic is not None:
        manifest.write(synthetic, root / "data/generate/manifest.parquet", "generate")
        write_images(synthetic, root, size, seed=1)
