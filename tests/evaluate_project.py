"""A small project on disk for evaluate's tests: real and synthetic manifests, images and lesion
masks (nodules bright discs, pneumothoraces dark corners), written with the foundation's writers,
and untrained ``densenet_small`` classifiers saved the way train_classifier saves them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxrsynth.models.classifier import build_classifier
from cxrsynth.tasks import manifest
from cxrsynth.tasks.classifier import save_classifier
from cxrsynth.tasks.classifier.inference import CHECKPOINT
from cxrsynth.tasks.classifier.outputs import seed_dir, write_variant_config
from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.io import write_json, write_mask, write_png16
from cxrsynth.tasks.masks import labelmap


def save_untrained_classifier(directory: Path, variant: str, seeds: list[int], weights_seed: int) -> None:
    """The variant's folder as train_classifier leaves it: one untrained classifier per seed in
    ``seed_<s>/`` (initial weights from ``weights_seed`` + s) and the variant's config.json."""
    for seed in seeds:
        torch.manual_seed(weights_seed + seed)
        save_classifier(build_classifier("densenet_small"), seed_dir(directory, seed) / CHECKPOINT)
        write_json(seed_dir(directory, seed) / "config.json",
                   {"variant": variant, "architecture": "densenet_small", "seed": seed})
    write_variant_config(directory, {"variant": variant, "architecture": "densenet_small", "seeds": list(seeds)})


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
        rows.append({**row, "patient_id": f"p{index:03d}", "split": split, "source": "real",
                     "site": f"site-{index % 2 + 1}"})
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
