"""Sampling: any diffusers sampler, classifier-free guidance batched as one cond + uncond forward.

Each image has its own seed: its starting noise (and the DDPM sampler's per-step noise) come from
its own generator, so an image does not depend on which batch it was generated in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import nn
from tqdm.auto import tqdm

from cxrsynth.models.conditioning import Conditions, concatenate
from cxrsynth.tasks.diffusion.schedulers import Process, sampling_scheduler


def guided_output(model: nn.Module, noisy: torch.Tensor, timestep: torch.Tensor, cond: Conditions,
                  uncond: Conditions, guidance_scale: float) -> torch.Tensor:
    """uncond + s * (cond - uncond), with both halves in one forward pass; s = 1 is plain conditional."""
    timesteps = timestep.expand(noisy.shape[0]).to(noisy.device)
    if guidance_scale == 1.0:
        return model(noisy, timesteps, cond)
    both = model(torch.cat([noisy, noisy]), torch.cat([timesteps, timesteps]), concatenate([cond, uncond]))
    conditional, unconditional = both.float().chunk(2)
    return unconditional + guidance_scale * (conditional - unconditional)


@torch.no_grad()
def sample(
    model: nn.Module,
    process: Process,
    conditions: Conditions,
    seeds: Sequence[int],
    sampler: str,
    steps: int,
    guidance_scale: float,
    image_size: int,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Images (B, 1, H, W) in [0, 1] for ``conditions`` (kept flags say which conditions apply)."""
    if len(seeds) != len(conditions):
        raise ValueError(f"{len(seeds)} seeds for {len(conditions)} images")
    device = torch.device(device)
    scheduler = sampling_scheduler(process, sampler)
    scheduler.set_timesteps(steps, device=device)
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    shape = (len(seeds), 1, image_size, image_size)
    noisy = randn_tensor(shape, generator=generators, device=device) * scheduler.init_noise_sigma
    cond = conditions.to(device)
    uncond = cond.dropped()
    was_training = model.training
    model.eval()
    for timestep in tqdm(scheduler.timesteps, desc=f"{sampler} x{len(seeds)}", disable=not progress, leave=False):
        model_input = scheduler.scale_model_input(noisy, timestep)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            output = guided_output(model, model_input, timestep, cond, uncond, guidance_scale)
        noisy = scheduler.step(output.float(), timestep, noisy, generator=generators).prev_sample
    model.train(was_training)
    return ((noisy.clamp(-1, 1) + 1) / 2).cpu()
