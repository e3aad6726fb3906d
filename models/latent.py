"""Latent diffusion's view of the autoencoder: images in and out of the scaled latent space, and lesion
masks brought down to the latent grid. Torch modules only; the autoencoder's folder is read elsewhere.

Latents are the encoder's posterior mean (no sampling noise): a training image then has one latent,
which can be cached once, and the KL term the autoencoder trained with keeps its sigma small anyway.
They are multiplied by ``scale_factor`` (1 / their standard deviation on the training split, as in
Stable Diffusion) so the diffusion process sees unit-variance data, the variance its noise schedule
assumes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def latent_scale_factor(latents: torch.Tensor) -> float:
    """1 / the standard deviation of unscaled latents, over every element."""
    spread = float(latents.float().std())
    if not spread > 0:
        raise ValueError("the training latents have no spread: cannot measure a scale factor")
    return 1.0 / spread


def mask_grid(masks: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, F, H, W) masks at the (H / factor, W / factor) latent grid by max pooling: a latent cell is
    lesion if any of its pixels is, so a nodule of two pixels still marks the cell it falls in
    (area pooling would leave it at a quarter of 1 and a threshold would lose it)."""
    if factor == 1:
        return masks
    height, width = masks.shape[-2:]
    if height % factor or width % factor:
        raise ValueError(f"masks of {height} x {width} px do not divide into the latent grid (factor {factor})")
    return F.max_pool2d(masks, kernel_size=factor, stride=factor)


class LatentCodec(nn.Module):
    """A frozen autoencoder with the latents' scale: ``encode`` images in [-1, 1] (B, 1, H, W) to scaled
    latents (B, C, H / f, W / f), ``decode`` them back. ``decode`` passes gradients to its input (the
    SSIM term of training decodes the predicted clean latent) but never to the autoencoder."""

    def __init__(self, autoencoder: nn.Module, scale_factor: float) -> None:
        super().__init__()
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.scale_factor = float(scale_factor)

    def train(self, mode: bool = True) -> "LatentCodec":
        """Always in eval mode: the autoencoder is frozen."""
        return super().train(False)

    @torch.no_grad()
    def encode_unscaled(self, images: torch.Tensor) -> torch.Tensor:
        """The posterior mean of ``images`` (no sampling), before scaling."""
        return self.autoencoder.encode(images)[0].float()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_unscaled(images) * self.scale_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(latents / self.scale_factor)
