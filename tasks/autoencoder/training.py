"""Training the autoencoder of latent diffusion: L1 + KL, an optional patch-adversarial and
perceptual term, Adam, EMA, progress bar, interval checkpoints and exact resume.

Batches depend only on (seed, step) and the latent sampling draws from torch's global generator,
whose state every checkpoint carries, so a resumed run ends on the weights of an uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.losses import PatchAdversarialLoss
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from cxrsynth.models.autoencoder import (
    AutoencoderConfig,
    FeaturePerceptualLoss,
    build_autoencoder,
    build_discriminator,
    kl_divergence,
)
from cxrsynth.tasks import threads
from cxrsynth.tasks.device import ChannelsLastSetting, MemoryFormat, autocast, autocast_dtype, choose_memory_format
from cxrsynth.tasks.diffusion.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from cxrsynth.tasks.diffusion.data import StepBatches
from cxrsynth.tasks.diffusion.model_io import mapping_digest
from cxrsynth.tasks.diffusion.training import make_ema
from cxrsynth.tasks.init_from import InitReport, init_autoencoder
from cxrsynth.tasks.params import AutoencoderLossParams, AutoencoderParams

StepHook = Callable[[int, dict[str, float]], None]


def config_of(params: AutoencoderParams) -> AutoencoderConfig:
    return AutoencoderConfig(
        downsampling=params.downsampling, latent_channels=params.latent_channels, base_channels=params.base_channels,
        num_res_blocks=params.num_res_blocks, attention_at_bottom=params.attention_at_bottom,
    )


@dataclass
class _Run:
    """What a checkpoint holds, besides the config digest."""

    autoencoder: nn.Module
    ema: AveragedModel
    optimizer: torch.optim.Optimizer
    discriminator: nn.Module | None
    optimizer_d: torch.optim.Optimizer | None
    precision: torch.dtype | None = None  # autocast of the networks' forward passes (not saved: a resume may differ)
    step: int = 0
    history: list[tuple[int, float]] = field(default_factory=list)

    def forward(self, network: nn.Module, *inputs: torch.Tensor) -> object:
        """``network(*inputs)`` under the run's autocast."""
        with autocast(inputs[0].device, self.precision):
            return network(*inputs)

    def snapshot(self, digest: str, config: dict) -> dict:
        state = {"model": self.autoencoder.state_dict(), "ema": self.ema.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "history": self.history, "rng": torch.get_rng_state(),
                 "digest": digest, "config": config}
        if self.discriminator is not None:
            state |= {"discriminator": self.discriminator.state_dict(), "optimizer_d": self.optimizer_d.state_dict()}
        return state

    def restore(self, state: dict) -> None:
        self.autoencoder.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(state["discriminator"])
            self.optimizer_d.load_state_dict(state["optimizer_d"])
        self.step, self.history = int(state["step"]), [tuple(entry) for entry in state["history"]]
        torch.set_rng_state(state["rng"])


def autoencoder_memory_format(params: AutoencoderParams, channels_last: ChannelsLastSetting,
                              device: torch.device | str) -> MemoryFormat:
    """The autoencoder's memory format in training on ``device`` under ``autoencoder.mixed_precision``
    (``runtime.channels_last`` = ``channels_last``); the discriminator stays contiguous."""
    precision = autocast_dtype(params.mixed_precision, torch.device(device), "autoencoder.mixed_precision")
    return choose_memory_format(channels_last, "autoencoder", device, precision)


def _new_run(params: AutoencoderParams, seed: int, device: torch.device, layout: MemoryFormat) -> _Run:
    precision = autocast_dtype(params.mixed_precision, device, "autoencoder.mixed_precision")
    torch.manual_seed(seed)
    autoencoder = layout.module(build_autoencoder(config_of(params)).to(device))  # the EMA copy follows
    adversarial = params.loss.adversarial_weight > 0
    discriminator = build_discriminator().to(device) if adversarial else None
    return _Run(
        autoencoder=autoencoder, ema=make_ema(autoencoder, params.ema_decay),
        optimizer=torch.optim.Adam(autoencoder.parameters(), lr=params.learning_rate),
        discriminator=discriminator,
        optimizer_d=torch.optim.Adam(discriminator.parameters(), lr=params.learning_rate) if adversarial else None,
        precision=precision,
    )


def _generator_loss(run: _Run, images: torch.Tensor, terms: AutoencoderLossParams, adversarial_on: bool,
                    perceptual: FeaturePerceptualLoss | None) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    # The losses take float32 outputs: L1, KL and the adversarial terms lose digits in bf16.
    reconstruction, z_mu, z_sigma = (output.float() for output in run.forward(run.autoencoder, images))
    parts = {"l1": F.l1_loss(reconstruction, images), "kl": kl_divergence(z_mu, z_sigma)}
    loss = parts["l1"] + terms.kl_weight * parts["kl"]
    if perceptual is not None and terms.perceptual_weight > 0:
        parts["perceptual"] = perceptual(reconstruction, images)
        loss = loss + terms.perceptual_weight * parts["perceptual"]
    if adversarial_on:
        logits = run.forward(run.discriminator, reconstruction.contiguous())[-1].float()
        parts["adversarial"] = PatchAdversarialLoss(criterion="least_squares")(
            logits, target_is_real=True, for_discriminator=False)
        loss = loss + terms.adversarial_weight * parts["adversarial"]
    return loss, {name: float(value.detach()) for name, value in parts.items()}, reconstruction


def _discriminator_step(run: _Run, images: torch.Tensor, reconstruction: torch.Tensor, weight: float) -> float:
    adversarial = PatchAdversarialLoss(criterion="least_squares")
    fake = adversarial(run.forward(run.discriminator, reconstruction.detach().contiguous())[-1].float(),
                       target_is_real=False, for_discriminator=True)
    real = adversarial(run.forward(run.discriminator, images.contiguous())[-1].float(), target_is_real=True,
                       for_discriminator=True)
    loss = weight * 0.5 * (fake + real)
    run.optimizer_d.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer_d.step()
    return float(loss)


def train_step(run: _Run, images: torch.Tensor, terms: AutoencoderLossParams,
               perceptual: FeaturePerceptualLoss | None = None) -> dict[str, float]:
    """One optimisation step of the autoencoder (and, once due, the discriminator)."""
    run.autoencoder.train()
    adversarial_on = run.discriminator is not None and run.step >= terms.adversarial_from_step
    loss, parts, reconstruction = _generator_loss(run, images, terms, adversarial_on, perceptual)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.ema.update_parameters(run.autoencoder)
    if adversarial_on:
        parts["discriminator"] = _discriminator_step(run, images, reconstruction, terms.adversarial_weight)
    return {"loss": float(loss.detach()), **parts}


@dataclass
class AutoencoderOutcome:
    ema_model: nn.Module
    history: list[tuple[int, float]]
    steps: int
    resumed_from: int
    images_per_s: float
    last_parts: dict[str, float]
    init_report: InitReport | None = None  # what autoencoder.init_from loaded and did not (None: not used, or resumed)
    wall_s: float = 0.0  # time of the steps trained in this run (not the resumed ones)


def train_autoencoder(images: torch.Tensor, params: AutoencoderParams, seed: int, checkpoint_dir: str | Path,
                      device: torch.device | str = "cpu", perceptual: FeaturePerceptualLoss | None = None,
                      on_step: StepHook | None = None, channels_last: ChannelsLastSetting = False) -> AutoencoderOutcome:
    """Train on ``images`` (N, 1, H, W) in [-1, 1] up to ``params.steps``, resuming from the newest
    checkpoint in ``checkpoint_dir`` (refused when it belongs to another autoencoder config; saved in
    either memory format). ``channels_last``: ``runtime.channels_last``, see ``autoencoder_memory_format``;
    one-channel images are in either format already."""
    device = torch.device(device)
    config = asdict(config_of(params)) | {"adversarial": params.loss.adversarial_weight > 0}
    digest = mapping_digest(config)
    run = _new_run(params, seed, device, autoencoder_memory_format(params, channels_last, device))
    latest = latest_checkpoint(checkpoint_dir)
    init_report = None
    if latest is not None:
        run.restore(load_checkpoint(latest, digest, config))
    elif params.init_from:  # a fresh start from pretrained weights (the EMA copies them at its first update)
        init_report = init_autoencoder(run.autoencoder, asdict(config_of(params)), params.init_from)
    resumed_from, started, parts = run.step, time.perf_counter(), {}
    bar = tqdm(total=params.steps, initial=run.step, desc="train_autoencoder", unit="step", dynamic_ncols=True)
    for batch in StepBatches(len(images), params.batch_size, seed, run.step, params.steps):
        parts = train_step(run, images[batch].to(device), params.loss, perceptual)
        threads.tick()  # fewer torch threads while other processes keep CPUs busy
        run.step += 1
        run.history.append((run.step, parts["loss"]))
        bar.update(1)
        bar.set_postfix(l1=f"{parts['l1']:.4f}")
        if on_step:
            on_step(run.step, parts)
        if run.step % params.checkpoint_every == 0 or run.step == params.steps:
            save_checkpoint(checkpoint_dir, run.step, run.snapshot(digest, config))
    bar.close()
    trained, wall_s = (run.step - resumed_from) * params.batch_size, time.perf_counter() - started
    return AutoencoderOutcome(ema_model=run.ema.module.eval(), history=run.history, steps=run.step,
                              resumed_from=resumed_from, images_per_s=trained / wall_s, last_parts=parts,
                              wall_s=wall_s, init_report=init_report)


def load_perceptual_network(path: str | Path) -> FeaturePerceptualLoss:
    """The perceptual term from a local TorchScript feature network; nothing is downloaded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"autoencoder.loss.perceptual_network: {path} is not a file (a TorchScript module "
                                "mapping (B, 1, H, W) images to feature maps)")
    return FeaturePerceptualLoss(torch.jit.load(str(path), map_location="cpu"))
