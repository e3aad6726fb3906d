"""A trained classifier on disk, and what the evaluation asks of it: probabilities and features."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from cxrsynth.models.classifier import FindingClassifier, build_classifier
from cxrsynth.tasks.classifier.data import LabelledImages, inference_loader
from cxrsynth.tasks.device import CONTIGUOUS, MemoryFormat, autocast
from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks import torch_files

CHECKPOINT = "model.pt"


def save_classifier(model: FindingClassifier, path: str | Path) -> None:
    """The weights with the architecture and finding order they belong to (atomic write)."""
    payload = {"architecture": model.architecture, "findings": list(FINDINGS),
               "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()}}
    torch_files.save(payload, path)


def load_classifier(directory: str | Path, device: torch.device | str = "cpu",
                    layout: MemoryFormat = CONTIGUOUS["classifier"]) -> FindingClassifier:
    """The classifier saved in ``directory/model.pt``, in eval mode, in memory format ``layout`` (see
    ``classifier_memory_format``; the one-channel images it reads are in either format already)."""
    path = Path(directory) / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"{path}: classifier checkpoint not found (has train_classifier run?)")
    payload = torch.load(path, map_location=device, weights_only=True)
    if list(payload.get("findings", [])) != list(FINDINGS):
        raise ValueError(f"{path}: trained for findings {payload.get('findings')}, this code models {list(FINDINGS)}")
    # A lesion head is known by its weights: checkpoints from before it existed load unchanged.
    lesion_head = any(key.startswith("lesion_head.") for key in payload["state_dict"])
    model = build_classifier(payload["architecture"], lesion_head)
    model.load_state_dict(payload["state_dict"])
    return layout.module(model.to(device)).eval()


def _image_batches(images_or_frame, root: str | Path, batch_size: int) -> Iterator[torch.Tensor]:
    """Batches (B, 1, H, W) from a manifest frame (read from ``root``) or an array of images
    shaped (n, H, W) or (n, 1, H, W) in [0, 1]."""
    if isinstance(images_or_frame, pd.DataFrame):
        for batch in inference_loader(LabelledImages(images_or_frame, root), batch_size):
            yield batch["image"]
        return
    images = torch.as_tensor(np.asarray(images_or_frame), dtype=torch.float32)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected images shaped (n, H, W) or (n, 1, H, W), got {tuple(images.shape)}")
    yield from images.split(batch_size)


@torch.no_grad()
def _apply(model: FindingClassifier, images_or_frame, root, batch_size: int, head,
           precision: torch.dtype | None) -> np.ndarray:
    """``head`` over the batches under autocast to ``precision``; float32 out (NumPy has no bf16)."""
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    for images in tqdm(_image_batches(images_or_frame, root, batch_size), desc="classifier", leave=False, unit="batch"):
        with autocast(device, precision):
            outputs.append(head(images.to(device)).float().cpu().numpy())
    return np.concatenate(outputs) if outputs else np.empty((0, 0), dtype=np.float32)


def predict(model: FindingClassifier, frame, root: str | Path = ".", batch_size: int = 64,
            precision: torch.dtype | None = None) -> np.ndarray:
    """Probabilities (n, len(FINDINGS)) in FINDINGS order, for a manifest frame's rows or an image array;
    the network under autocast to ``precision`` (None: float32; see ``tasks.device.autocast_dtype``)."""
    probabilities = _apply(model, frame, root, batch_size, lambda x: torch.sigmoid(model(x)), precision)
    return probabilities.reshape(-1, len(FINDINGS))


def extract_features(model: FindingClassifier, images_or_frame, root: str | Path = ".", batch_size: int = 64,
                     precision: torch.dtype | None = None) -> np.ndarray:
    """Penultimate features (n, model.feature_dim), for a manifest frame's rows or an image array."""
    return _apply(model, images_or_frame, root, batch_size, model.features, precision).reshape(-1, model.feature_dim)
