"""What the classifier trains on: images and labels of a variant's rows (and their lesion masks when
it learns them too), its augmentation and class balancing, and the quarantine of images that cannot
be used."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from monai.utils import convert_to_tensor
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, WeightedRandomSampler, get_worker_info

from cxrsynth.tasks.datasets import ManifestImages
from cxrsynth.tasks.findings import FINDINGS, UNCERTAIN
from cxrsynth.tasks.manifest import label_matrix
from cxrsynth.tasks.masks import labelmap


def classifier_labels(frame: pd.DataFrame, unmentioned: str = "ignore") -> np.ndarray:
    """(n, F) targets of training and validation: 1, 0, or NaN (left out of the loss and the AUROC).
    ``unmentioned`` (``classifier.unmentioned``): ignore keeps a null state NaN; negative counts it
    absent, as evaluate counts the test split, except where the report or the label file said
    uncertain (the ignore policy of parse_reports also leaves those null)."""
    labels = label_matrix(frame)
    if unmentioned == "ignore":
        return labels
    if unmentioned != "negative":
        raise ValueError(f"classifier.unmentioned must be 'ignore' or 'negative', got {unmentioned!r}")
    uncertain = np.zeros(labels.shape, dtype=bool)
    for prefix in ("report_", "structured_"):
        if {f"{prefix}{finding}" for finding in FINDINGS} <= set(frame.columns):
            uncertain |= label_matrix(frame, prefix) == UNCERTAIN
    return np.where(np.isnan(labels) & ~uncertain, np.float32(0.0), labels)


class LabelledImages(ManifestImages):
    """Image (1, H, W) in [0, 1] and label vector (NaN where unknown, see ``classifier_labels``) per
    row. ``transform`` (``augmentation``) augments the image on the fly. ``pixels`` (n, H, W), the
    rows' images decoded already (``decode_images``), spares reading the files again: a variant's
    images are decoded once for all its seeds and epochs.

    With ``label_maps`` (n, H, W), the rows' lesion label maps (``read_label_maps``), each item also
    holds ``mask`` (F, H, W) bool, the row's lesion masks moved with the image by the augmentation,
    and ``mask_known`` (F,) bool, the findings whose map is a target (``lesion_targets_known``)."""

    def __init__(self, frame: pd.DataFrame, root: str | Path = ".", transform: Compose | None = None,
                 pixels: np.ndarray | None = None, unmentioned: str = "ignore",
                 label_maps: np.ndarray | None = None) -> None:
        super().__init__(frame, root)
        if self.labels is None:
            raise ValueError("the classifier needs the finding columns in its manifest")
        for name, array in (("decoded images", pixels), ("label maps", label_maps)):
            if array is not None and len(array) != len(self.frame):
                raise ValueError(f"{len(array)} {name} for {len(self.frame)} manifest rows")
        self.labels = classifier_labels(self.frame, unmentioned)
        self.transform = transform
        self.pixels = pixels
        self.label_maps = label_maps
        self.mask_known = None if label_maps is None else lesion_targets_known(self.labels, label_maps)

    def image(self, index: int) -> np.ndarray:
        return super().image(index) if self.pixels is None else self.pixels[index]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = {"image": torch.from_numpy(self.image(index))[None]}
        if self.label_maps is not None:
            sample["mask"] = torch.from_numpy(labelmap.decode(self.label_maps[index]))
        if self.transform is not None:
            sample = self.transform(sample)
        item = {"image": convert_to_tensor(sample["image"], dtype=torch.float32, track_meta=False).clamp(0.0, 1.0),
                "labels": torch.from_numpy(self.labels[index]), "index": torch.tensor(index)}
        if self.label_maps is not None:
            item["mask"] = convert_to_tensor(sample["mask"], track_meta=False) > 0.5
            item["mask_known"] = torch.from_numpy(self.mask_known[index])
        return item


def read_label_maps(frame: pd.DataFrame, root: str | Path, image_size: int) -> np.ndarray:
    """Every row's bit-coded lesion label map (n, H, W) uint8, zeros where a row has no mask file, read
    once like ``decode_images``. Kept coded, 1 byte a pixel (16 KB an image at 128 px, a quarter of
    its decoded pixels): a row's (F, H, W) channels are decoded when it is drawn, a bit shift a pixel."""
    rows = ManifestImages(frame, root)
    maps = np.zeros((len(rows), image_size, image_size), dtype=np.uint8)
    for index in range(len(rows)):
        label_map = rows.label_map(index)
        if label_map is None:
            continue
        if label_map.shape != maps.shape[1:]:
            raise ValueError(f"{rows.frame.at[index, 'mask_path']}: label map is {label_map.shape[1]}x{label_map.shape[0]}, "
                             f"expected the working size {image_size}x{image_size}")
        maps[index] = label_map
    return maps


def lesion_targets_known(labels: np.ndarray, label_maps: np.ndarray) -> np.ndarray:
    """(n, F) bool: where a row's lesion map of a finding is a training target. Known where the row
    has lesion pixels of that finding (its mask) or its label is 0 (absent: an empty map). A row
    labelled 1 without a mask of the finding is not: its lesion is somewhere, the map does not say
    where. (NaN labels with a mask: known, the mask says where the lesion is.)"""
    bits = np.bitwise_or.reduce(label_maps.reshape(len(label_maps), -1), axis=1)
    has_mask = ((bits[:, None] >> np.arange(len(FINDINGS), dtype=np.uint8)) & 1).astype(bool)
    return has_mask | (labels == 0)


def decode_images(frame: pd.DataFrame, root: str | Path = ".") -> np.ndarray:
    """Every row's image (n, H, W) float32 in [0, 1], read once: the classifier trains one model per
    seed on the same rows, and decoding the PNGs every epoch of every seed would cost more than a
    small model's forward pass. Memory: 4 bytes a pixel (16 KB an image at 64 px, 256 KB at 256 px)."""
    images = ManifestImages(frame, root)
    if not len(images):
        return np.empty((0, 0, 0), dtype=np.float32)
    return np.stack([images.image(index) for index in range(len(images))]).astype(np.float32, copy=False)


def augmentation(settings: dict, image_size: int) -> Compose:
    """Classical augmentation from a variant's settings: a small rotation, shift and zoom, gamma,
    brightness, noise. No flips: left-right moves the heart to the wrong side, up-down the diaphragm.
    Dictionary transforms on ``{"image": (1, H, W)}`` and, when the classifier learns lesion maps,
    ``"mask": (F, H, W)``: the affine moves both together (the mask by nearest neighbour, so it stays
    0/1); the intensity transforms touch the image only."""
    prob = settings["prob"]
    shift = settings["translate_fraction"] * image_size
    image = ["image"]
    return Compose([
        RandAffined(keys=["image", "mask"], mode=["bilinear", "nearest"], prob=prob,
                    rotate_range=(np.deg2rad(settings["rotate_degrees"]),), translate_range=(shift, shift),
                    scale_range=(settings["zoom"], settings["zoom"]), padding_mode="zeros", allow_missing_keys=True),
        RandAdjustContrastd(keys=image, prob=prob, gamma=tuple(settings["gamma"])),
        RandScaleIntensityd(keys=image, factors=settings["intensity_scale"], prob=prob),
        RandShiftIntensityd(keys=image, offsets=settings["intensity_shift"], prob=prob),
        RandGaussianNoised(keys=image, prob=prob, std=settings["noise_std"], sample_std=False),
    ])


def pos_weight(frame: pd.DataFrame, unmentioned: str = "ignore") -> torch.Tensor:
    """Per finding, known negatives over known positives (``classifier_labels``), never below 1: rare
    findings weigh more, common ones are not weighed down (1 where a finding has no positive)."""
    labels = classifier_labels(frame, unmentioned)
    positive, negative = (labels == 1).sum(axis=0), (labels == 0).sum(axis=0)
    weight = np.where(positive > 0, negative / np.maximum(positive, 1), 1.0)
    return torch.tensor(np.maximum(weight, 1.0), dtype=torch.float32)


def sample_weights(frame: pd.DataFrame, unmentioned: str = "ignore") -> np.ndarray:
    """Per row, the largest pos_weight among the findings it shows (1 for rows showing none), so
    oversampling gives each finding the balance pos_weight gives it in the loss."""
    present = label_matrix(frame) == 1
    weights = np.where(present, pos_weight(frame, unmentioned).numpy()[None, :], 1.0)
    return weights.max(axis=1)


def _image_problem(path: Path, image_size: int) -> str | None:
    try:
        with Image.open(path) as image:
            size = image.size
    except FileNotFoundError:
        return "image file missing"
    except (UnidentifiedImageError, OSError) as exc:
        return f"image unreadable: {type(exc).__name__}"
    if size != (image_size, image_size):
        return f"image is {size[0]}x{size[1]}, expected the working size {image_size}x{image_size}"
    return None


def check_images(frame: pd.DataFrame, root: str | Path, image_size: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rows into usable ones and a quarantine (``image_id, reason``) of missing, unreadable or
    wrong-sized images; reads only image headers."""
    problems = [_image_problem(Path(root) / path, image_size) for path in frame["path"]]
    bad = np.array([problem is not None for problem in problems], dtype=bool)
    quarantine = pd.DataFrame({"image_id": frame.loc[bad, "image_id"].astype(str).tolist(),
                               "reason": [problem for problem in problems if problem is not None]})
    return frame[~bad].reset_index(drop=True), quarantine


def seed_worker(worker_id: int) -> None:
    """Each loader worker seeds numpy, random and its copy of the augmentation from torch's per-worker
    seed, which the loader's seeded generator fixes: same seed, same augmented batches. One torch thread
    per worker: the workers share the CPUs with the training process (torch's worker loop sets it too;
    said here so a loader built elsewhere with this function keeps it)."""
    torch.set_num_threads(1)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    dataset = get_worker_info().dataset
    if getattr(dataset, "transform", None) is not None:
        dataset.transform.set_random_state(seed=seed)


def training_loader(dataset: LabelledImages, batch_size: int, seed: int, num_workers: int, oversample: bool,
                    unmentioned: str = "ignore") -> DataLoader:
    """Shuffled (or oversampled, with replacement) batches in an order fixed by ``seed``. Workers
    persist across epochs, so a cached dataset's images stay decoded in them too."""
    generator = torch.Generator().manual_seed(seed)
    if dataset.transform is not None:
        dataset.transform.set_random_state(seed=seed)
    sampler = None
    if oversample:
        weights = torch.as_tensor(sample_weights(dataset.frame, unmentioned), dtype=torch.double)
        sampler = WeightedRandomSampler(weights, num_samples=len(dataset), replacement=True, generator=generator)
    return DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler, generator=generator,
                      num_workers=num_workers, worker_init_fn=seed_worker, persistent_workers=num_workers > 0)


def inference_loader(dataset: LabelledImages, batch_size: int, num_workers: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      persistent_workers=num_workers > 0)
