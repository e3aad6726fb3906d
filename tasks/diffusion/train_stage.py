"""The train_diffusion stage's work around the loop: data, tokenizer and model set-up, and outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxrsynth.tasks.device import resolve_device
from cxrsynth.tasks.diffusion.controlnet import train_with_control
from cxrsynth.tasks.diffusion.data import (
    DiffusionDataset,
    readable_rows,
    texts_of,
    training_rows,
)
from cxrsynth.tasks.diffusion.distributed import Replica, process_group
from cxrsynth.tasks.diffusion.labels import read_lesions
from cxrsynth.tasks.diffusion.latent import latent_training_data
from cxrsynth.tasks.diffusion.model_io import build_model, load_text_backbone, model_config
from cxrsynth.tasks.diffusion.tokenizer import build_tokenizer
from cxrsynth.tasks.diffusion.training import TrainHooks, TrainingSetup, TrainOutcome, train_diffusion
from cxrsynth.tasks.init_from import init_diffusion
from cxrsynth.tasks.io import write_text
from cxrsynth.tasks.params import Params
from cxrsynth.tasks.sites import training_sites_only

MODEL_DIR = Path("data/train_diffusion/model")
AUTOENCODER_DIR = Path("data/train_autoencoder/model")  # read in latent space only
CHECKPOINT_DIR = Path("data/train_diffusion/checkpoints")
LOSS_CSV = Path("plots/train_diffusion/loss.csv")
LOSS_WINDOW = 50  # steps averaged for the first / final loss figures


def training_device(params: Params, replica: Replica) -> torch.device:
    return replica.device(resolve_device(params.runtime.device))


def run_training(params: Params, prepared: TrainingSetup, replica: Replica = Replica(),
                 hooks: TrainHooks | None = None, root: str | Path = ".") -> TrainOutcome:
    """Train (or resume) the prepared model; in the process group when one of several replicas."""
    device = training_device(params, replica)
    train = train_with_control if params.diffusion.mask_control == "controlnet" else train_diffusion
    with process_group(replica, device):
        return train(prepared, params.diffusion, Path(root) / CHECKPOINT_DIR, params.seed, device, hooks, replica)


def training_setup(params: Params, frame: pd.DataFrame, root: str | Path = ".",
                   autoencoder_dir: str | Path | None = None) -> TrainingSetup:
    """The training split as a dataset, the tokenizer built from its texts, and a fresh model. In
    latent space (``diffusion.space``) the images are encoded once by the autoencoder in
    ``autoencoder_dir`` (default: ``root``/AUTOENCODER_DIR) and the latents' scale measured on them."""
    diffusion, text = params.diffusion, params.diffusion.text_encoder
    # evaluate.train_sites: the generator learns from the classifiers' training sites only (tasks/sites.py)
    rows, quarantined = readable_rows(training_rows(training_sites_only(frame, params.evaluate.train_sites)), root)
    if rows.empty:
        raise ValueError(f"none of the training images could be read ({len(quarantined)} quarantined)")
    tokenizer = build_tokenizer(texts_of(rows, text.source), text.kind, text.max_tokens, text.min_word_count, text.path)
    dataset = DiffusionDataset(rows, root, tokenizer, text.source, cache=diffusion.train.cache_images,
                               lesions=read_lesions(root))
    image_size = int(dataset[0]["image"].shape[-1])
    codec, latent = None, None
    if diffusion.space == "latent":
        codec, latent = latent_training_data(autoencoder_dir or Path(root) / AUTOENCODER_DIR, dataset,
                                             resolve_device(params.runtime.device))
    config = model_config(diffusion, image_size, tokenizer, dataset.maskable, latent)
    backbone = load_text_backbone(text.path) if text.kind == "pretrained" and "text" in diffusion.conditions else None
    torch.manual_seed(params.seed)  # the initial weights
    model = build_model(config, backbone)
    # A resumed run restores its checkpoint over these weights; init_from shapes only the start.
    report = init_diffusion(model, config, diffusion.init_from) if diffusion.init_from else None
    return TrainingSetup(dataset, tokenizer, config, model, quarantined, init_report=report, codec=codec,
                         channels_last=params.runtime.channels_last)


def loss_table(history: list[tuple[int, float]]) -> str:
    return "step,loss\n" + "".join(f"{step},{loss:.6f}\n" for step, loss in history)


def training_metrics(outcome: TrainOutcome, setup: TrainingSetup) -> dict:
    losses = np.array([loss for _, loss in outcome.history])
    return {
        "steps": outcome.steps,
        "resumed_from_step": outcome.resumed_from,
        "n_train_images": len(setup.dataset),
        "quarantined": len(setup.quarantined),
        "quarantined_images": setup.quarantined,
        "parameters": sum(p.numel() for p in setup.model.parameters() if p.requires_grad),
        "loss_first": float(losses[:LOSS_WINDOW].mean()) if len(losses) else None,
        "loss_final": float(losses[-LOSS_WINDOW:].mean()) if len(losses) else None,
        "images_per_s": round(outcome.images_per_s, 3),
        "wall_s": round(outcome.wall_s, 2),
        **{f"loss_final_{name}": value for name, value in outcome.parts.items() if name != "loss"},
        **({} if setup.config.latent is None else {"latent_scale_factor": setup.config.latent.scale_factor}),
    }


def write_training_outputs(outcome: TrainOutcome, setup: TrainingSetup, root: str | Path = ".") -> None:
    """The EMA model folder and the loss curve."""
    root = Path(root)
    setup.pipeline(outcome.ema_model).save_pretrained(root / MODEL_DIR)
    write_text(root / LOSS_CSV, loss_table(outcome.history))
