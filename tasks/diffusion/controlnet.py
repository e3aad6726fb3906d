"""Training ControlNet mask control (``diffusion.mask_control: controlnet``): the base denoiser is frozen
and only the control branch trains.

The base is either loaded (``diffusion.init_from``: kept exactly as loaded, no base steps) or trained
here first: ``diffusion.train.steps`` with every mask dropped, so the control branch stays idle and the
base learns the mask-free model that guidance contrasts against; its checkpoints go to ``base/`` under
the checkpoint folder. Then the branch starts as a copy of the base U-Net's encoder (the ControlNet
recipe; its zero-initialised output convolutions leave the base's predictions unchanged at first) and
trains ``diffusion.controlnet.steps`` on the frozen base, checkpointing in the checkpoint folder itself.
Both phases resume like plain training; the steps reported for the branch follow on from the base's.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from monai.networks.utils import copy_model_state

from cxrsynth.models.denoiser import ConditionalDenoiser
from cxrsynth.tasks.diffusion.distributed import Replica
from cxrsynth.tasks.diffusion.training import TrainHooks, TrainingSetup, TrainOutcome, train_diffusion
from cxrsynth.tasks.params import DiffusionParams

BASE_FOLDER = "base"


def train_base_only(model: ConditionalDenoiser) -> ConditionalDenoiser:
    """Everything trainable but the control branch (idle while the base trains)."""
    model.requires_grad_(True)
    model.controlnet.requires_grad_(False)
    return model


def train_branch_only(model: ConditionalDenoiser) -> ConditionalDenoiser:
    """The base frozen (U-Net, anchor, label and text encoders), the control branch trainable."""
    for parameter in model.base_parameters():
        parameter.requires_grad_(False)
    model.controlnet.requires_grad_(True)
    return model


def branch_from_base(model: ConditionalDenoiser) -> None:
    """The control branch's encoder starts as a copy of the base U-Net's (names and shapes match)."""
    copy_model_state(model.controlnet, model.unet.state_dict())


def base_settings(diffusion: DiffusionParams) -> DiffusionParams:
    """Base training: every mask dropped, so the control branch never runs."""
    return diffusion.model_copy(update={"dropout": diffusion.dropout.model_copy(update={"mask": 1.0})})


def branch_settings(diffusion: DiffusionParams) -> DiffusionParams:
    """Branch training: the control branch's steps and learning rate in the training loop's settings."""
    control = diffusion.controlnet
    train = diffusion.train.model_copy(update={"steps": control.steps, "learning_rate": control.learning_rate})
    return diffusion.model_copy(update={"train": train})


def shifted(hooks: TrainHooks, offset: int) -> TrainHooks:
    """``hooks`` with the branch's step numbers continuing after the base's ``offset`` steps."""
    return TrainHooks(
        on_step=hooks.on_step and (lambda step, parts: hooks.on_step(step + offset, parts)),
        on_checkpoint=hooks.on_checkpoint and (
            lambda step, path, history: hooks.on_checkpoint(step + offset, path, _shift(history, offset))),
        on_sample=hooks.on_sample and (lambda step, model: hooks.on_sample(step + offset, model)),
    )


def _shift(history: list[tuple[int, float]], offset: int) -> list[tuple[int, float]]:
    return [(step + offset, loss) for step, loss in history]


def combined(base: TrainOutcome | None, branch: TrainOutcome, batch_size: int) -> TrainOutcome:
    """One outcome for both phases: the branch's model and final loss parts, steps and history in sequence."""
    if base is None:
        return branch
    offset = base.steps
    training_s = sum(o.steps_this_run * batch_size / o.images_per_s for o in (base, branch) if o.images_per_s)
    images = (base.steps_this_run + branch.steps_this_run) * batch_size
    return TrainOutcome(
        ema_model=branch.ema_model, history=base.history + _shift(branch.history, offset),
        steps=offset + branch.steps,
        resumed_from=offset + branch.resumed_from if branch.resumed_from else base.resumed_from,
        steps_this_run=base.steps_this_run + branch.steps_this_run,
        images_per_s=images / training_s if training_s else 0.0, wall_s=base.wall_s + branch.wall_s,
        parts=branch.parts,
    )


def train_with_control(setup: TrainingSetup, diffusion: DiffusionParams, checkpoint_dir: str | Path, seed: int,
                       device: torch.device | str = "cpu", hooks: TrainHooks | None = None,
                       replica: Replica = Replica()) -> TrainOutcome:
    """Train (or resume) the base unless ``diffusion.init_from`` loaded it, then the control branch on it."""
    hooks, checkpoint_dir = hooks or TrainHooks(), Path(checkpoint_dir)
    base_outcome, base = None, setup.model
    if diffusion.init_from is None:
        train_base_only(setup.model)
        base_outcome = train_diffusion(setup, base_settings(diffusion), checkpoint_dir / BASE_FOLDER, seed, device,
                                       hooks, replica)
        base = base_outcome.ema_model
    branch_from_base(base)
    branch = train_diffusion(replace(setup, model=train_branch_only(base)), branch_settings(diffusion),
                             checkpoint_dir, seed, device, shifted(hooks, base_outcome.steps if base_outcome else 0),
                             replica)
    return combined(base_outcome, branch, diffusion.train.batch_size)
