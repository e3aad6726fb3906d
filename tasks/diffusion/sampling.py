"""Classifier-free guidance batched as one cond + uncond forward pass, with the batch's conditions
encoded once; the sampling loop that calls it is ``GenerationPipeline.__call__`` (``tasks.diffusion.pipeline``)."""

from __future__ import annotations

import torch
from torch import nn

from cxrsynth.models.conditioning import Conditions, concatenate


class GuidedDenoiser:
    """``guided(noisy, timestep)`` = uncond + s * (cond - uncond) for one batch of conditions; s = 1 is
    plain conditional.

    The label and text encoders and the mask channels do not depend on the noisy image or the
    timestep, so they run once here (on the doubled cond + uncond batch when guiding) instead of at
    every sampler step; build it inside the autocast context the steps run under.
    """

    def __init__(self, model: nn.Module, cond: Conditions, uncond: Conditions, guidance_scale: float) -> None:
        self.model, self.guidance_scale = model, guidance_scale
        self.guided = guidance_scale != 1.0
        self.encoded = model.encode(concatenate([cond, uncond]) if self.guided else cond)

    def __call__(self, noisy: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        batch = torch.cat([noisy, noisy]) if self.guided else noisy
        timesteps = timestep.to(noisy.device).expand(batch.shape[0])
        output = self.model(batch, timesteps, self.encoded)
        if not self.guided:
            return output
        conditional, unconditional = output.float().chunk(2)
        return unconditional + self.guidance_scale * (conditional - unconditional)
