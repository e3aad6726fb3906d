"""Manifest rows as torch samples: the image, its per-finding mask stack and its label vector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from cxrsynth.tasks import manifest
from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.io import read_mask, read_png16
from cxrsynth.tasks.masks import labelmap


class ManifestImages(Dataset):
    """Each item: ``image`` (1, H, W) in [0, 1]; ``mask`` (len(FINDINGS), H, W) 0/1;
    ``has_mask`` whether the row has a mask file; ``labels`` (len(FINDINGS),) with NaN where
    the state is unknown (uncertain under the ignore policy, or not mentioned); ``index``."""

    def __init__(self, frame: pd.DataFrame, root: str | Path = ".", label_prefix: str = "") -> None:
        self.frame = frame.reset_index(drop=True)
        self.root = Path(root)
        self.labels = manifest.label_matrix(self.frame, label_prefix) if set(FINDINGS) <= set(self.frame.columns) else None
        self.mask_paths = self.frame["mask_path"] if "mask_path" in self.frame.columns else None

    def __len__(self) -> int:
        return len(self.frame)

    def image(self, index: int) -> np.ndarray:
        return read_png16(self.root / self.frame.at[index, "path"])

    def label_map(self, index: int) -> np.ndarray | None:
        """The row's bit-coded lesion label map (H, W) uint8 (``labelmap``), None where it has no mask file."""
        mask_path = None if self.mask_paths is None else self.mask_paths.iat[index]
        if mask_path is None or pd.isna(mask_path):
            return None
        return read_mask(self.root / mask_path)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = self.image(index)
        label_map = self.label_map(index)
        if label_map is None:
            masks = np.zeros((len(FINDINGS), *image.shape), dtype=np.float32)
        else:
            masks = labelmap.decode(label_map)
        labels = self.labels[index] if self.labels is not None else np.full(len(FINDINGS), np.nan, np.float32)
        return {
            "image": torch.from_numpy(image)[None],
            "mask": torch.from_numpy(masks),
            "has_mask": torch.tensor(label_map is not None),
            "labels": torch.from_numpy(labels),
            "index": torch.tensor(index),
        }
