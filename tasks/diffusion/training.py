"""The diffusion training loop: condition dropout, lesion-preserving loss, AdamW, EMA, mixed precision,
gradient clipping, progress bar, interval checkpoints and resume.

Everything random in a step (timesteps, noise, condition dropout) is drawn from one generator that
is saved in the checkpoint, and batches depend only on (seed, step), so a resumed run continues
exactly where the interrupted one stood.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cxrsynth.models.denoiser import ConditionalDenoiser
from cxrsynth.models.latent import LatentCodec, mask_grid
from cxrsynth.models.losses import CleanEstimate, lesion_preserving_loss
from cxrsynth.tasks import threads
from cxrsynth.tasks.device import (
    CONTIGUOUS,
    ChannelsLastSetting,
    MemoryFormat,
    Precision,
    autocast,
    choose_precision,
)
from cxrsynth.tasks.diffusion.checkpoints import (
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from cxrsynth.tasks.diffusion.data import (
    DiffusionDataset,
    StepBatches,
    batch_conditions,
    condition_keep,
    diffused,
)
from cxrsynth.tasks.diffusion.distributed import Replica, barrier, check_batch, mean_across, wrap
from cxrsynth.tasks.diffusion.model_io import ModelConfig
from cxrsynth.tasks.diffusion.pipeline import GenerationPipeline, diffusion_memory_formats
from cxrsynth.tasks.diffusion.schedulers import (
    min_snr_weight,
    predicted_clean,
    training_scheduler,
    training_target,
)
from cxrsynth.tasks.diffusion.tokenizer import Tokenizer
from cxrsynth.tasks.init_from import InitReport
from cxrsynth.tasks.params import DiffusionParams, DiffusionTrainParams

# EMA warm-up: the decay grows as (1 + n) / (10 + n) towards ema_decay, so early random weights
# leave the average quickly (a fixed 0.999 would still hold 22 % of the initial weights after 1500 steps).
EMA_WARMUP = 10
PARTS_WINDOW = 50  # steps over which the final loss parts are averaged
PRECISION_KEY = "diffusion.train.mixed_precision"


@dataclass
class TrainingSetup:
    """What training starts from: the training split, the tokenizer built from its texts, the typed
    model config, a fresh (or ``init_from``-loaded) model, the images set aside as unreadable, and in
    latent space the codec whose latents the dataset holds. ``channels_last`` is ``runtime.channels_last``."""

    dataset: DiffusionDataset
    tokenizer: Tokenizer
    config: ModelConfig
    model: ConditionalDenoiser
    quarantined: list[dict[str, str]] = field(default_factory=list)
    init_report: InitReport | None = None  # what diffusion.init_from loaded and did not
    codec: LatentCodec | None = None
    channels_last: ChannelsLastSetting = False

    def pipeline(self, denoiser: nn.Module | None = None) -> GenerationPipeline:
        """The model (or ``denoiser``, e.g. its EMA copy in training) as a generation pipeline."""
        return GenerationPipeline(self.model if denoiser is None else denoiser, self.tokenizer, self.config,
                                  codec=self.codec)


@dataclass
class TrainHooks:
    """Optional callbacks: after every step, after each checkpoint, at each sample interval."""

    on_step: Callable[[int, dict], None] | None = None
    on_checkpoint: Callable[[int, Path, list[tuple[int, float]]], None] | None = None
    on_sample: Callable[[int, nn.Module], None] | None = None


@dataclass
class TrainOutcome:
    ema_model: nn.Module
    history: list[tuple[int, float]]
    steps: int
    resumed_from: int
    steps_this_run: int
    images_per_s: float
    wall_s: float
    parts: dict[str, float] = field(default_factory=dict)  # loss parts, mean of this run's last PARTS_WINDOW steps


def training_precision(settings: DiffusionTrainParams, device: torch.device | str) -> Precision:
    """The autocast of the training forward passes on ``device`` (``diffusion.train.mixed_precision``)."""
    return choose_precision(settings.mixed_precision, torch.device(device), PRECISION_KEY)


def training_memory_formats(channels_last: ChannelsLastSetting, latent: bool, settings: DiffusionTrainParams,
                            device: torch.device | str) -> dict[str, MemoryFormat]:
    """The memory format (``runtime.channels_last`` = ``channels_last``) of the U-Net and, in ``latent``
    space, of the autoencoder that decodes the SSIM term's estimate, under the training's precision."""
    return diffusion_memory_formats(channels_last, latent, device, training_precision(settings, device).dtype)


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        rate = min(decay, (1 + n) / (EMA_WARMUP + n))
        torch._foreach_lerp_(averaged, current, 1.0 - rate)

    # Buffers are constants (index tables), so only parameters are averaged.
    return AveragedModel(model, multi_avg_fn=update, use_buffers=False)


def dropout_rates(diffusion: DiffusionParams) -> dict[str, float]:
    return {"label": diffusion.dropout.label, "mask": diffusion.dropout.mask, "text": diffusion.dropout.text}


@dataclass
class StepDraws:
    """One step's randomness for the whole (global) batch: condition dropout, timesteps and noise."""

    keep: dict[str, torch.Tensor]
    timesteps: torch.Tensor
    noise: torch.Tensor

    def rows(self, replica: Replica) -> StepDraws:
        """The rows of this process's share of the batch (see ``StepBatches``)."""
        pick = slice(replica.rank, None, replica.world_size)
        return StepDraws({name: flags[pick] for name, flags in self.keep.items()}, self.timesteps[pick],
                         self.noise[pick])


def draw_step(size: int, image_shape: torch.Size, diffusion: DiffusionParams, num_timesteps: int,
              generator: torch.Generator) -> StepDraws:
    keep = condition_keep(size, dropout_rates(diffusion), generator)
    timesteps = torch.randint(0, num_timesteps, (size,), generator=generator)
    return StepDraws(keep, timesteps, torch.randn((size, *image_shape), generator=generator))


def diffusion_loss(model: nn.Module, scheduler, batch: dict[str, torch.Tensor], diffusion: DiffusionParams,
                   draws: StepDraws, device: torch.device, precision: torch.dtype | None = None,
                   codec: LatentCodec | None = None,
                   layouts: Mapping[str, MemoryFormat] = CONTIGUOUS) -> dict[str, torch.Tensor]:
    """One batch's lesion-preserving loss under the drawn condition dropout, timesteps and noise. The
    forward pass runs under autocast to ``precision`` (None: float32); the loss is float32 either way.
    In latent space (``codec``) the model diffuses the batch's latents: the lesion term weighs the
    latent cells the lesion touches, and the SSIM term compares the decoded clean estimate with the
    real image in pixels. ``layouts`` are the networks' memory formats (see ``training_memory_formats``),
    which their inputs take: a conv runs channels_last when its input is, whatever its weights."""
    clean = diffused(batch).to(device, non_blocking=True)
    cond = batch_conditions(batch).with_keep(**draws.keep).to(device)
    timesteps, noise = draws.timesteps.to(device), draws.noise.to(device)
    noisy = scheduler.add_noise(clean, noise, timesteps)
    with autocast(device, precision):
        output = model(layouts["unet"].tensor(noisy), timesteps, cond)
    # Outside autocast and in float32: the x0 estimate, the masked MSE and the SSIM term lose digits in bf16.
    # Contiguous like the targets it meets: elementwise ops over mixed memory formats run slower.
    output = output.to(torch.float32, memory_format=torch.contiguous_format)
    weights = diffusion.loss
    # The lesion terms use every known lesion pixel, whether or not the mask condition was dropped.
    lesion = cond.masks.amax(dim=1, keepdim=True)
    x0_predicted = predicted_clean(scheduler, noisy, output, timesteps) if weights.ssim_weight > 0 else None
    estimate = None if x0_predicted is None else CleanEstimate(
        x0_predicted, clean, min_snr_weight(scheduler, timesteps, weights.snr_gamma))
    if codec is not None:
        estimate = None if estimate is None else decoded_estimate(codec, estimate, batch, lesion, device, precision,
                                                                  layouts["autoencoder"])
        lesion = mask_grid(lesion, codec_factor(clean, lesion)).expand_as(clean)  # every latent channel
    return lesion_preserving_loss(output, training_target(scheduler, clean, noise, timesteps), lesion,
                                  weights.lesion_weight, weights.ssim_weight, estimate)


def codec_factor(latents: torch.Tensor, pixels: torch.Tensor) -> int:
    """Pixels per latent cell along a side."""
    return pixels.shape[-1] // latents.shape[-1]


def decoded_estimate(codec: LatentCodec, estimate: CleanEstimate, batch: dict[str, torch.Tensor],
                     lesion: torch.Tensor, device: torch.device, precision: torch.dtype | None,
                     layout: MemoryFormat = CONTIGUOUS["autoencoder"]) -> CleanEstimate:
    """The latent clean estimate decoded to pixels, beside the real images, for the images that have a
    lesion (the SSIM term is zero for the others, so only those pay for a pass through the decoder)."""
    rows = lesion.flatten(1).amax(dim=1) > 0
    images = batch["image"].to(device, non_blocking=True)[rows]
    if not bool(rows.any()):
        return CleanEstimate(images, images, lesion=lesion[rows])
    with autocast(device, precision):
        decoded = codec.decode(layout.tensor(estimate.predicted[rows]))
    weight = None if estimate.weight is None else estimate.weight[rows]
    return CleanEstimate(decoded.to(torch.float32, memory_format=torch.contiguous_format), images, weight, lesion[rows])


@dataclass
class _Run:
    """Everything a checkpoint saves and a resume restores."""

    model: nn.Module
    ema: AveragedModel
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    generator: torch.Generator
    step: int = 0
    history: list[tuple[int, float]] = field(default_factory=list)

    def snapshot(self, digest: str, config: dict) -> dict:
        rng = {"generator": self.generator.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(), "rng": rng,
                "history": self.history, "digest": digest, "config": config}

    def restore(self, saved: dict) -> None:
        self.model.load_state_dict(saved["model"])
        self.ema.load_state_dict(saved["ema"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scaler.load_state_dict(saved["scaler"])
        self.generator.set_state(saved["rng"]["generator"])
        torch.set_rng_state(saved["rng"]["torch"])
        if "cuda" in saved["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
        self.step, self.history = saved["step"], [tuple(pair) for pair in saved["history"]]


def _optimise(run: _Run, loss: torch.Tensor, trainable: list[nn.Parameter], grad_clip: float) -> None:
    """Backward (scaled under fp16), clip, step, and fold the new weights into the EMA."""
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(trainable, grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.ema.update_parameters(run.model)


def _mean_parts(recent: deque[dict[str, float]]) -> dict[str, float]:
    return {name: sum(p[name] for p in recent) / len(recent) for name in recent[0]} if recent else {}


def _start_run(setup: TrainingSetup, settings: DiffusionTrainParams, checkpoint_dir: str | Path, seed: int,
               device: torch.device, precision: torch.dtype | None, layout: MemoryFormat) -> _Run:
    """Model on ``device`` in memory format ``layout`` (its EMA and optimizer state follow), EMA,
    optimizer, grad scaler and generator, restored from the newest checkpoint in ``checkpoint_dir``
    when there is one (refused if it belongs to another config; a checkpoint saved in either memory
    format loads into either)."""
    model = setup.model
    trainable = [p for p in layout.module(model.to(device)).parameters() if p.requires_grad]
    run = _Run(model, make_ema(model, settings.ema_decay), torch.optim.AdamW(trainable, lr=settings.learning_rate),
               torch.amp.GradScaler(device.type, enabled=precision == torch.float16),
               torch.Generator().manual_seed(seed))
    latest = latest_checkpoint(checkpoint_dir)
    if latest is not None:
        run.restore(load_checkpoint(latest, setup.config.digest, setup.config.as_dict()))
    return run


def _checkpoint_and_sample(run: _Run, settings: DiffusionTrainParams, hooks: TrainHooks, checkpoint_dir: str | Path,
                           config: ModelConfig, replica: Replica) -> None:
    """At the intervals (and the last step): the checkpoint on rank 0, then the sample hook."""
    last = run.step == settings.steps
    if run.step % settings.checkpoint_every == 0 or last:
        if replica.is_main:
            path = save_checkpoint(checkpoint_dir, run.step, run.snapshot(config.digest, config.as_dict()))
            if hooks.on_checkpoint:
                hooks.on_checkpoint(run.step, path, run.history)
        barrier(replica)  # no process runs ahead of a checkpoint it could be resumed from
    if replica.is_main and hooks.on_sample and (run.step % settings.sample_every == 0 or last):
        hooks.on_sample(run.step, run.ema.module)


def train_diffusion(
    setup: TrainingSetup,
    diffusion: DiffusionParams,
    checkpoint_dir: str | Path,
    seed: int,
    device: torch.device | str = "cpu",
    hooks: TrainHooks | None = None,
    replica: Replica = Replica(),
) -> TrainOutcome:
    """Train ``setup.model`` for ``diffusion.train.steps`` steps, resuming from the newest checkpoint in
    ``checkpoint_dir`` (refused if it belongs to a different model config). ``images_per_s``
    counts training only, over all processes; checkpoint writes and hooks (sample grids) are in
    ``wall_s``. Under data parallelism (``replica``, see ``tasks.diffusion.distributed``) only rank 0
    writes checkpoints and runs hooks."""
    device, hooks, settings = torch.device(device), hooks or TrainHooks(), diffusion.train
    check_batch(settings.batch_size, replica)
    scheduler = training_scheduler(setup.config.process)
    precision = training_precision(settings, device).dtype
    layouts = training_memory_formats(setup.channels_last, setup.codec is not None, settings, device)
    run = _start_run(setup, settings, checkpoint_dir, seed, device, precision, layouts["unet"])
    codec = None if setup.codec is None else layouts["autoencoder"].module(setup.codec.to(device))
    resumed_from, trainable = run.step, [p for p in run.model.parameters() if p.requires_grad]
    forward = wrap(run.model, replica, device)
    loader = DataLoader(setup.dataset, batch_sampler=StepBatches(len(setup.dataset), settings.batch_size, seed,
                                                                 run.step, settings.steps, replica.rank,
                                                                 replica.world_size),
                        num_workers=settings.num_workers, pin_memory=device.type == "cuda")
    bar = tqdm(total=settings.steps, initial=run.step, desc="train_diffusion", unit="step", dynamic_ncols=True,
               disable=not replica.is_main)
    started, images, side_s = time.perf_counter(), 0, 0.0
    recent_parts: deque[dict[str, float]] = deque(maxlen=PARTS_WINDOW)
    for batch in loader:
        run.model.train()
        draws = draw_step(settings.batch_size, diffused(batch).shape[1:], diffusion,
                          scheduler.config.num_train_timesteps, run.generator).rows(replica)
        losses = diffusion_loss(forward, scheduler, batch, diffusion, draws, device, precision, codec, layouts)
        _optimise(run, losses["loss"], trainable, settings.grad_clip)
        threads.tick()  # fewer torch threads while other processes keep CPUs busy
        run.step += 1
        images += settings.batch_size
        losses = {name: mean_across(value.detach(), replica) for name, value in losses.items()}
        run.history.append((run.step, float(losses["loss"])))
        recent_parts.append({name: float(value) for name, value in losses.items()})
        bar.update(1)
        bar.set_postfix(loss=f"{run.history[-1][1]:.4f}",
                        img_s=f"{images / (time.perf_counter() - started - side_s):.1f}")
        side_started = time.perf_counter()
        if hooks.on_step:
            hooks.on_step(run.step, recent_parts[-1])
        _checkpoint_and_sample(run, settings, hooks, checkpoint_dir, setup.config, replica)
        side_s += time.perf_counter() - side_started
    bar.close()
    wall = time.perf_counter() - started
    return TrainOutcome(
        ema_model=run.ema.module.eval(), history=run.history, steps=run.step, resumed_from=resumed_from,
        steps_this_run=run.step - resumed_from, images_per_s=images / (wall - side_s) if images else 0.0,
        wall_s=wall, parts=_mean_parts(recent_parts),
    )
