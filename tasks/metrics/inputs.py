"""What evaluate reads: the real manifest's splits, the synthetic manifest, their images and masks
as arrays, and the test labels. An unreadable image is quarantined (listed, skipped), not fatal."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cxrsynth.tasks import manifest
from cxrsynth.tasks.classifier.data import classifier_labels
from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.io import read_mask, read_png16
from cxrsynth.tasks.masks import labelmap

@dataclass
class ImageSet:
    """Manifest rows with their images (N, H, W) and per-finding masks (N, F, H, W) loaded."""

    frame: pd.DataFrame
    images: np.ndarray
    masks: np.ndarray
    quarantined: list[dict] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return self.frame["image_id"].astype(str).tolist()

    def __len__(self) -> int:
        return len(self.frame)

    def subset(self, keep: np.ndarray) -> "ImageSet":
        keep = np.asarray(keep)
        return ImageSet(self.frame[keep].reset_index(drop=True), self.images[keep], self.masks[keep], self.quarantined)


def _read_row(row: pd.Series, root: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    image = read_png16(root / row["path"])
    if image.shape != (size, size):
        raise ValueError(f"image is {image.shape}, expected ({size}, {size})")
    mask_path = row.get("mask_path")
    if mask_path is None or pd.isna(mask_path):
        return image, np.zeros((len(FINDINGS), size, size), np.float32)
    label_map = read_mask(root / mask_path)
    if label_map.shape != (size, size):
        raise ValueError(f"mask is {label_map.shape}, expected ({size}, {size})")
    return image, labelmap.decode(label_map)


def load_set(frame: pd.DataFrame, root: str | Path, size: int, name: str) -> ImageSet:
    """Read every row's image and mask; a row that fails is quarantined with its reason."""
    root = Path(root)
    prefix = f"{root.resolve()}{os.sep}"  # reasons name files relative to the project, never where it lies
    images, masks, kept, quarantined = [], [], [], []
    for position, (_, row) in enumerate(tqdm(frame.iterrows(), total=len(frame), desc=f"{name} images", leave=False)):
        try:
            image, mask = _read_row(row, root, size)
        except (OSError, ValueError) as exc:
            quarantined.append({"set": name, "image_id": row["image_id"], "reason": str(exc).replace(prefix, "")})
            continue
        images.append(image)
        masks.append(mask.astype(bool))
        kept.append(position)
    return ImageSet(
        frame=frame.iloc[kept].reset_index(drop=True),
        images=np.stack(images) if images else np.zeros((0, size, size), np.float32),
        masks=np.stack(masks) if masks else np.zeros((0, len(FINDINGS), size, size), bool),
        quarantined=quarantined,
    )


def read_real(path: str | Path) -> pd.DataFrame:
    frame = manifest.read(path)
    return frame[frame["source"] == "real"].reset_index(drop=True)


def read_synthetic(path: str | Path) -> pd.DataFrame:
    frame = manifest.read(path)
    leaked = frame.index[(frame["source"] != "synthetic") | (frame["split"] != "train")].tolist()
    if leaked:
        raise manifest.ManifestError(f"{path}: rows {leaked[:10]} are not synthetic training rows")
    return frame.reset_index(drop=True)


def mask_conditioned(frame: pd.DataFrame) -> np.ndarray:
    """Rows whose image was generated from (or, for real rows, ships) a lesion mask: a mask file,
    and a condition type that names the mask where the row records one."""
    has_mask = frame["mask_path"].notna().to_numpy() if "mask_path" in frame else np.zeros(len(frame), bool)
    if "condition_type" not in frame:
        return has_mask
    condition = frame["condition_type"].astype("string")
    return has_mask & (condition.isna() | condition.str.contains("mask", regex=False)).to_numpy(dtype=bool)


def finding_states(frame: pd.DataFrame) -> np.ndarray:
    """(n, F) float: 1 present, 0 absent, -1 uncertain, NaN not mentioned (as the manifest says)."""
    return manifest.label_matrix(frame)


def evaluation_labels(frame: pd.DataFrame) -> np.ndarray:
    """(n, F) test labels: present 1; absent or not mentioned 0; uncertain NaN (left out). Uncertain
    also where the report or label file hedged and parse_reports' ``ignore`` policy left the state
    null: a hedged positive scored as a negative would pull every variant's AUROC down."""
    labels = classifier_labels(frame, "negative")
    labels[labels == -1] = np.nan
    return labels
