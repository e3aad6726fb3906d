"""Classifier-free guidance batched as one cond + uncond forward pass; the sampling loop that calls it
is ``GenerationPipeline.__call__`` (``tasks.diffusion.pipeline``)."""

from __future__ import annotations

import torch
from torch import nn

from cxrsynth.models.conditioning import Conditions, concatenate


def guided_output(model: nn.Module, noisy: torch.Tensor, timestep: torch.Tensor, cond: Conditions,
                  uncond: Conditions, guidance_scale: float) -> torch.Tensor:
    """uncond + s * (cond - uncond), with both halves in one forward pass; s = 1 is plain conditional."""
    timesteps = timestep.expand(noisy.shape[0]).to(noisy.device)
    if guidance_scale == 1.0:
        return model(noisy, timesteps, cond)
    both = model(torch.cat([noisy, noisy]), torch.cat([timesteps, timesteps]), concatenate([cond, uncond]))
    conditional, unconditional = both.float().chunk(2)
    return unconditional + guidance_scale * (conditional - unconditional)
