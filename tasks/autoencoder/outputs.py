"""Where the train_autoencoder stage writes, and what a run with nothing to train leaves there.

The autoencoder serves latent diffusion only: with ``diffusion.space: pixel`` the stage writes a
note in place of the model (``NOT_TRAINED``), an empty loss curve and metrics saying it was
skipped. This module loads neither torch nor MONAI, so a skipped run costs a moment.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from cxrsynth.tasks.io import write_json, write_text
from cxrsynth.tasks.params import Params

NOT_TRAINED = "NOT_TRAINED"  # the note a skipped run leaves in the model folder
EMPTY_LOSS_CURVE = "step,loss\n"  # the header of tasks.diffusion.train_stage.loss_table (a test keeps them equal)


@dataclass(frozen=True)
class StagePaths:
    """Where the stage writes (dvc.yaml's outs, metrics and plot)."""

    model: Path
    checkpoints: Path
    figures: Path
    metrics: Path
    loss_csv: Path


def trains(params: Params) -> bool:
    """Whether the autoencoder is needed: only latent diffusion encodes images."""
    return params.diffusion.space == "latent"


def fresh_folder(folder: Path) -> Path:
    """``folder``, emptied: no file of an earlier run (a stale model, or the skip note) stays beside new ones."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_skipped(paths: StagePaths, space: str) -> dict:
    """The outputs of a run with nothing to train: the note, an empty loss curve and the metrics."""
    reason = f"diffusion.space is {space}: only latent diffusion uses the autoencoder"
    write_text(fresh_folder(paths.model) / NOT_TRAINED, f"{reason}. Set diffusion.space: latent to train it.\n")
    fresh_folder(paths.figures)
    paths.checkpoints.mkdir(parents=True, exist_ok=True)  # kept: a later latent run resumes from it
    write_text(paths.loss_csv, EMPTY_LOSS_CURVE)
    metrics = {"skipped": True, "reason": reason}
    write_json(paths.metrics, metrics)
    return metrics
