"""Stand-ins for evaluate's tests: a tiny classifier with the project classifier's interface
(``model(x)`` logits, ``features(x)``, ``feature_dim``), its directory format, and a small project
on disk (real and synthetic manifests, images, masks) built with the foundation's writers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from tasks import manifest
from tasks.datasets import ManifestImages
from tasks.findings import FINDINGS
from tasks.io import write_mask, write_png16
from tasks.masks import labelmap


class TinyClassifier(nn.Module):
    """Mean brightness and texture features; one logit per finding."""

    feature_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, self.feature_dim, 3, padding=1)
        self.head = nn.Linear(self.feature_dim, len(FINDINGS))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(F.relu(self.conv(images)), 1).flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def save_tiny_classifier(directory: Path, seed: int) -> None:
    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(TinyClassifier().state_dict(), directory / "model.pt")
    (directory / "config.json").write_text(json.dumps({"architecture": "tiny", "seed": seed}))


def load_tiny_classifier(directory: Path) -> TinyClassifier:
    model = TinyClassifier()
    model.load_state_dict(torch.load(Path(directory) / "model.pt", weights_only=True))
    return model.eval()


def predict_tiny(model: nn.Module, frame: pd.DataFrame, root=".", batch_size: int = 64) -> np.ndarray:
    data = ManifestImages(frame, root)
    with torch.no_grad():
        images = torch.stack([data[i]["image"] for i in range(len(data))]) if len(data) else torch.zeros(0, 1, 1, 1)
        return torch.sigmoid(model(images)).numpy() if len(data) else np.zeros((0, len(FINDINGS)))


def use_tiny_classifiers(monkeypatch) -> None:
    """Point evaluate's classifier seam at the tiny classifier's loader and predictor."""
    from tasks.metrics import classifiers

    monkeypatch.setattr(classifiers, "load", load_tiny_classifier)
    monkeypatch.setattr(classifiers, "predict", predict_tiny)


def radiograph(rng: np.random.Generator, size: int, lesions: dict[str, np.ndarray]) -> np.ndarray:
    """A smooth chest-like image with noise; nodules brighten, pneumothorax darkens its mask."""
    y, x = np.mgrid[0:size, 0:size] / size
    image = 0.5 + 0.25 * np.cos(np.pi * (x - 0.5)) - 0.15 * np.exp(-((x - 0.3) ** 2 + (y - 0.5) ** 2) * 12)
    image = image + rng.normal(0, 0.03, (size, size))
    for finding, mask in lesions.items():
        image = image + (0.3 if finding != "pneumothorax" else -0.25) * mask
    return np.clip(image, 0, 1).astype(np.float32)


def lesion_mask(rng: np.random.Generator, size: int, finding: str) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    if finding == "pneumothorax":
        top, left = rng.integers(1, 4), rng.integers(1, 4)
        mask[top:top + size // 3, left:left + size // 4] = True
    else:
        cy, cx, r = rng.integers(size // 4, 3 * size // 4), rng.integers(size // 4, 3 * size // 4), size // 8
        y, x = np.mgrid[0:size, 0:size]
        mask = (y - cy) ** 2 + (x - cx) ** 2 <= r * r
    return mask


def _row(image_id: str, path: str, mask_path: str | None, present: list[str]) -> dict:
    row = {"image_id": image_id, "path": path, "mask_path": mask_path, "dataset": "tiny"}
    for finding in FINDINGS:
        row[finding] = 1 if finding in present else 0
    return row


def build_tiny_project(root: Path, size: int = 32, n_real: int = 48, n_synthetic: int = 12, seed: int = 0) -> None:
    """Real train/val/test images with nodule and pneumothorax lesions (masks for most), synthetic
    images of both conditioned on moved masks, both manifests."""
    rng = np.random.default_rng(seed)
    rows = []
    splits = ["train"] * (n_real // 2) + ["val"] * (n_real // 6) + ["test"] * (n_real - n_real // 2 - n_real // 6)
    for index, split in enumerate(splits):
        present = [f for f, share in (("nodule", 0.35), ("pneumothorax", 0.35), ("cardiomegaly", 0.3))
                   if rng.random() < share]
        masks = {f: lesion_mask(rng, size, f) for f in present if f != "cardiomegaly"}
        image_id = f"r{index:03d}"
        write_png16(root / f"data/ingest/images/{image_id}.png", radiograph(rng, size, masks))
        mask_path = None
        if masks and rng.random() < 0.85:
            mask_path = f"data/prepare_masks/masks/{image_id}.png"
            write_mask(root / mask_path, labelmap.encode(masks, (size, size)))
        row = _row(image_id, f"data/ingest/images/{image_id}.png", mask_path, present)
        rows.append({**row, "patient_id": f"p{index:03d}", "split": split, "source": "real"})
    real = pd.DataFrame(rows)
    manifest.write(real, root / "data/prepare_masks/manifest.parquet", "prepare_masks")

    train_ids = real.loc[real["split"] == "train", "image_id"].tolist()
    rows = []
    for index in range(n_synthetic):
        finding = ("nodule", "pneumothorax")[index % 2]
        mask = lesion_mask(rng, size, finding)
        image_id = f"s{index:03d}"
        write_png16(root / f"data/generate/images/{image_id}.png", radiograph(rng, size, {finding: mask}))
        mask_path = f"data/generate/masks/{image_id}.png"
        write_mask(root / mask_path, labelmap.encode({finding: mask}, (size, size)))
        row = _row(image_id, f"data/generate/images/{image_id}.png", mask_path, [finding])
        rows.append({**row, "split": "train", "source": "synthetic", "condition_type": "label+mask",
                     "seed": index, "sampler": "ddim", "steps": 3, "guidance_scale": 2.0,
                     "template_image_id": train_ids[index % len(train_ids)]})
    # one exact copy of a training image, which memorisation must flag
    copy_of = train_ids[0]
    (root / "data/generate/images/s_copy.png").write_bytes((root / f"data/ingest/images/{copy_of}.png").read_bytes())
    rows.append({**_row("s_copy", "data/generate/images/s_copy.png", None, ["nodule"]),
                 "split": "train", "source": "synthetic", "condition_type": "text", "seed": 99})
    manifest.write(pd.DataFrame(rows), root / "data/generate/manifest.parquet", "generate")
