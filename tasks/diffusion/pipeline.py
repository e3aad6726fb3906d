"""The generation pipeline: a trained denoiser with its condition encoders, tokenizer, scheduler and
typed config, in the shape of diffusers' ``DiffusionPipeline``.

``save_pretrained`` writes a model folder (``config.json``, the weights ``model.pt``, the tokenizer's
``vocab.json`` and, for a pretrained text encoder, its config and tokenizer under ``text_encoder/``);
``from_pretrained`` reads one back; calling the pipeline samples images for a batch of conditions.

In latent space the pipeline also holds the latent codec (the frozen autoencoder and the latents'
scale): it samples latents and decodes them to images of the working resolution, so callers see
images either way. The model folder records the space, the scale and the autoencoder's digest, not
the autoencoder itself, which ``from_pretrained`` reads from its own folder and checks.

Each image has its own seed: its starting noise (and the DDPM sampler's per-step noise) come from
its own generator, so an image does not depend on which batch it was generated in. The denoiser
knows no scheduler and the scheduler no model; this object is where they meet.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import nn
from tqdm.auto import tqdm

from cxrsynth.models.conditioning import Conditions
from cxrsynth.models.latent import LatentCodec
from cxrsynth.tasks.device import (
    CONTIGUOUS,
    ChannelsLastSetting,
    MemoryFormat,
    autocast,
    autocast_dtype,
    choose_memory_format,
)
from cxrsynth.tasks.diffusion.model_io import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ModelConfig,
    build_model,
    load_weights,
    save_weights,
    text_backbone_skeleton,
)
from cxrsynth.tasks.diffusion.latent import load_codec
from cxrsynth.tasks.diffusion.sampling import GuidedDenoiser
from cxrsynth.tasks.diffusion.schedulers import sampling_scheduler
from cxrsynth.tasks.diffusion.tokenizer import PRETRAINED_FOLDER, PretrainedTokenizer, Tokenizer, load_tokenizer
from cxrsynth.tasks.io import write_json

DEFAULT_SAMPLER = "dpm_solver"


def _step_options(scheduler, generators: list[torch.Generator]) -> dict:
    """The images' own generators for a stochastic step (DDPM, SDE-DPM-Solver++); UniPC's step takes none."""
    return {"generator": generators} if "generator" in inspect.signature(scheduler.step).parameters else {}


def diffusion_memory_formats(channels_last: ChannelsLastSetting, latent: bool, device: torch.device | str,
                             precision: torch.dtype | None) -> dict[str, MemoryFormat]:
    """The memory format (``runtime.channels_last`` = ``channels_last``) of the U-Net and, in ``latent``
    space, of the autoencoder that decodes its latents, under autocast to ``precision``."""
    networks = ("unet", "autoencoder") if latent else ("unet",)
    return {network: choose_memory_format(channels_last, network, device, precision) for network in networks}


class GenerationPipeline:
    """``pipeline(conditions, seeds, steps, guidance_scale)`` -> images (B, 1, H, W) in [0, 1].

    ``scheduler`` is a diffusers scheduler of the model's diffusion process (``sampler`` names it, one
    of ``SAMPLERS``; ``with_sampler`` swaps it). ``autocast`` is the mixed-precision dtype
    of the denoiser's forward passes (None: full precision). ``codec`` decodes a latent-space model's
    latents (None in pixel space). ``layouts`` are the memory formats of the U-Net and the autoencoder
    (``to`` chooses them), which their inputs are put in.
    """

    def __init__(self, denoiser: nn.Module, tokenizer: Tokenizer, config: ModelConfig,
                 sampler: str = DEFAULT_SAMPLER, autocast: torch.dtype | None = None,
                 codec: LatentCodec | None = None) -> None:
        if (config.latent is None) != (codec is None):
            raise ValueError(f"a {config.space}-space model {'takes no' if codec is not None else 'needs its'} "
                             f"latent codec")
        self.denoiser, self.tokenizer, self.config = denoiser, tokenizer, config
        self.sampler, self.autocast, self.codec = sampler, autocast, codec
        self.layouts: dict[str, MemoryFormat] = dict(CONTIGUOUS)
        self.scheduler = sampling_scheduler(config.process, sampler, config.clip)

    @property
    def label_encoder(self) -> nn.Module | None:
        """The finding-label encoder; trained with the denoiser, so it lives inside it."""
        return getattr(self.denoiser, "label_encoder", None)

    @property
    def text_encoder(self) -> nn.Module | None:
        return getattr(self.denoiser, "text_encoder", None)

    @property
    def components(self) -> dict[str, object]:
        return {"denoiser": self.denoiser, "label_encoder": self.label_encoder, "text_encoder": self.text_encoder,
                "tokenizer": self.tokenizer, "scheduler": self.scheduler}

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def to(self, device: torch.device | str, mixed_precision: str = "no",
           channels_last: ChannelsLastSetting = False) -> "GenerationPipeline":
        """Move the denoiser; its forward passes run under ``mixed_precision`` (auto, no, fp16, bf16; see
        ``tasks.device.choose_precision``: auto is bf16 on a CPU with AMX or AVX-512 BF16), the U-Net and
        the autoencoder in the memory format ``runtime.channels_last`` = ``channels_last`` gives them."""
        device = torch.device(device)
        self.autocast = autocast_dtype(mixed_precision, device, "sampling mixed_precision")
        self.layouts = diffusion_memory_formats(channels_last, self.codec is not None, device, self.autocast)
        self.layouts["unet"].module(self.denoiser.to(device))
        if self.codec is not None:
            self.layouts["autoencoder"].module(self.codec.to(device))
        return self

    def with_sampler(self, sampler: str) -> "GenerationPipeline":
        """The same model, tokenizer and config under another sampler (nothing copied)."""
        other = GenerationPipeline(self.denoiser, self.tokenizer, self.config, sampler, self.autocast, self.codec)
        other.layouts = dict(self.layouts)
        return other

    def save_pretrained(self, folder: str | Path) -> None:
        """Write config, weights and tokenizer to ``folder`` (what ``from_pretrained`` reads)."""
        folder = Path(folder)
        save_weights(folder, self.denoiser, self.config)
        write_json(folder / CONFIG_FILE, {**self.config.as_dict(), "digest": self.config.digest})
        self.tokenizer.save(folder)
        if self.config.pretrained_text:
            self.text_encoder.backbone.config.save_pretrained(str(folder / PRETRAINED_FOLDER))

    @staticmethod
    def load_config(folder: str | Path) -> ModelConfig:
        """A model folder's config alone (the weights must be there too), without building the model."""
        folder = Path(folder)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (folder / name).exists():
                raise ValueError(f"{folder / name}: not found (has train_diffusion run?)")
        return ModelConfig.read(folder / CONFIG_FILE)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: torch.device | str = "cpu", sampler: str = DEFAULT_SAMPLER,
                        mixed_precision: str = "no", autoencoder: str | Path | None = None,
                        channels_last: ChannelsLastSetting = False) -> "GenerationPipeline":
        """The pipeline saved in ``folder``, its denoiser in eval mode on ``device``. A latent-space model
        needs the ``autoencoder`` folder of the autoencoder it was trained with (its digest is checked);
        a pixel-space one reads none. ``channels_last``: see ``to``."""
        folder = Path(folder)
        config = cls.load_config(folder)
        codec = load_codec(config, autoencoder, folder)
        backbone = text_backbone_skeleton(folder / PRETRAINED_FOLDER) if config.pretrained_text else None
        denoiser = build_model(config, backbone)
        load_weights(folder, denoiser, config)
        tokenizer = load_tokenizer(folder)
        if config.pretrained_text != isinstance(tokenizer, PretrainedTokenizer):
            raise ValueError(f"{folder}: the saved tokenizer does not fit the {config.text_encoder.kind} text encoder")
        return cls(denoiser.eval(), tokenizer, config, sampler, codec=codec).to(device, mixed_precision, channels_last)

    @torch.no_grad()
    def __call__(self, conditions: Conditions, seeds: Sequence[int], steps: int, guidance_scale: float,
                 progress: bool = False) -> torch.Tensor:
        """Images (B, 1, H, W) in [0, 1] on the CPU for ``conditions`` (kept flags say which conditions
        apply), one seed per image, ``steps`` sampler steps, classifier-free guidance ``guidance_scale``;
        in latent space the sampled latents decoded to the working resolution."""
        if len(seeds) != len(conditions):
            raise ValueError(f"{len(seeds)} seeds for {len(conditions)} images")
        device, scheduler = self.device, self.scheduler
        scheduler.set_timesteps(steps, device=device)
        generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
        shape = (len(seeds), *self.config.sample_shape)
        noisy = self.layouts["unet"].tensor(randn_tensor(shape, generator=generators, device=device)
                                            * scheduler.init_noise_sigma)
        cond = conditions.to(device)
        was_training = self.denoiser.training
        self.denoiser.eval()
        step_options = _step_options(scheduler, generators)
        with autocast(device, self.autocast):
            guided = GuidedDenoiser(self.denoiser, cond, cond.dropped(), guidance_scale)
        for timestep in tqdm(scheduler.timesteps, desc=f"{self.sampler} x{len(seeds)}", disable=not progress,
                             leave=False):
            model_input = scheduler.scale_model_input(noisy, timestep)
            with autocast(device, self.autocast):
                output = guided(model_input, timestep)
            # The scheduler's update stays float32: its coefficients lose digits in bf16 over the steps.
            noisy = scheduler.step(output.float(), timestep, noisy, **step_options).prev_sample
        self.denoiser.train(was_training)
        if self.codec is not None:
            with autocast(device, self.autocast):
                noisy = self.codec.decode(self.layouts["autoencoder"].tensor(noisy)).float()
        return ((noisy.clamp(-1, 1) + 1) / 2).cpu().contiguous()

