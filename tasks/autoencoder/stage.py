"""The train_autoencoder stage's work around the loop: the real training and test splits as arrays,
the trained model folder, its reconstruction fidelity on the test split, and the stage's outputs
(their paths, and the outputs of a skipped run: ``tasks/autoencoder/outputs.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxrsynth.tasks.autoencoder.fidelity import reconstruct, reconstruction_fidelity
from cxrsynth.tasks.autoencoder.grid import grid_indices, reconstruction_grid
from cxrsynth.tasks.autoencoder.model_io import save_autoencoder
from cxrsynth.tasks.autoencoder.outputs import StagePaths, fresh_folder
from cxrsynth.tasks.autoencoder.training import (
    AutoencoderOutcome,
    StepHook,
    config_of,
    load_perceptual_network,
    train_autoencoder,
)
from cxrsynth.tasks.diffusion.data import training_rows
from cxrsynth.tasks.diffusion.grids import write_rgb
from cxrsynth.tasks.diffusion.train_stage import LOSS_WINDOW, loss_table
from cxrsynth.tasks.io import write_text
from cxrsynth.tasks.metrics.inputs import ImageSet, load_set
from cxrsynth.tasks.params import Params

GRID_FILE = "reconstructions.png"


def real_split(frame: pd.DataFrame, root: str | Path, size: int, split: str) -> ImageSet:
    """The real images (N, H, W) in [0, 1] and masks of one split; unreadable rows quarantined. The
    training split is diffusion's (``training_rows``): nothing else trains a generator's part."""
    if split == "train":
        rows = training_rows(frame)
    else:
        rows = frame[(frame["split"] == split) & (frame["source"] == "real")].reset_index(drop=True)
    return load_set(rows, root, size, split)


def model_input(images: np.ndarray) -> torch.Tensor:
    """(N, H, W) images in [0, 1] as the autoencoder's (N, 1, H, W) input in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images, np.float32))[:, None] * 2 - 1


def train(params: Params, train_set: ImageSet, checkpoints: Path, device: torch.device,
          on_step: StepHook | None = None) -> AutoencoderOutcome:
    """Train (or resume) on the training split, with the perceptual term when one is configured."""
    if not len(train_set):
        raise ValueError(f"none of the training images could be read ({len(train_set.quarantined)} quarantined)")
    terms = params.autoencoder.loss
    perceptual = load_perceptual_network(terms.perceptual_network) if terms.perceptual_weight > 0 else None
    return train_autoencoder(model_input(train_set.images), params.autoencoder, params.seed, checkpoints, device,
                             perceptual=perceptual.to(device) if perceptual else None, on_step=on_step,
                             channels_last=params.runtime.channels_last)


def write_model(folder: Path, outcome: AutoencoderOutcome, params: Params) -> None:
    """The EMA autoencoder's model folder (what latent diffusion reads)."""
    save_autoencoder(fresh_folder(folder), outcome.ema_model, config_of(params.autoencoder))


@dataclass
class Fidelity:
    """The test split's reconstructions and how faithful they are (``reconstruction_fidelity``)."""

    report: dict
    reconstructed: np.ndarray


def measure_fidelity(autoencoder: torch.nn.Module, test_set: ImageSet, batch_size: int,
                  device: torch.device) -> Fidelity:
    reconstructed = reconstruct(autoencoder, test_set.images, batch_size, device)
    return Fidelity(reconstruction_fidelity(test_set.images, reconstructed, test_set.masks), reconstructed)


def write_grid(folder: Path, test_set: ImageSet, fidelity: Fidelity, count: int) -> Path | None:
    """The reconstruction grid as ``folder/reconstructions.png``; None when the test split is empty."""
    fresh_folder(folder)
    if not len(test_set):
        return None
    indices = grid_indices(test_set.masks, count)
    path = folder / GRID_FILE
    write_rgb(path, reconstruction_grid(test_set.images, fidelity.reconstructed, test_set.masks, indices))
    return path


def stage_metrics(outcome: AutoencoderOutcome, train_set: ImageSet, test_set: ImageSet, fidelity: Fidelity) -> dict:
    """Training figures, whole-image PSNR / SSIM and the per-finding lesion figures of the test split."""
    losses = np.array([loss for _, loss in outcome.history])
    trained_steps = outcome.steps - outcome.resumed_from
    return {
        "skipped": False,
        "steps": outcome.steps,
        "resumed_from_step": outcome.resumed_from,
        "n_train_images": len(train_set),
        "n_test_images": len(test_set),
        "quarantined": len(train_set.quarantined) + len(test_set.quarantined),
        "quarantined_images": [*train_set.quarantined, *test_set.quarantined],
        "parameters": sum(parameter.numel() for parameter in outcome.ema_model.parameters()),
        "loss_first": float(losses[:LOSS_WINDOW].mean()) if len(losses) else None,
        "loss_final": float(losses[-LOSS_WINDOW:].mean()) if len(losses) else None,
        **{f"final_{name}": value for name, value in outcome.last_parts.items()},
        "images_per_s": round(outcome.images_per_s, 3),
        "s_per_step": round(outcome.wall_s / trained_steps, 3) if trained_steps else None,
        "wall_s": round(outcome.wall_s, 2),
        "psnr": fidelity.report["image"]["psnr"],
        "ssim": fidelity.report["image"]["ssim"],
        "lesions": fidelity.report["lesions"],
    }


def write_training_outputs(paths: StagePaths, outcome: AutoencoderOutcome, params: Params) -> None:
    write_model(paths.model, outcome, params)
    write_text(paths.loss_csv, loss_table(outcome.history))
