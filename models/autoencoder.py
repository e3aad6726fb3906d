"""The latent space of latent diffusion: MONAI's ``AutoencoderKL``, its patch discriminator, and the
loss terms that train them (L1 + KL, a patch-adversarial term, a perceptual term from a given
feature network). Torch modules and losses only; reading weights from disk is the caller's job."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.networks.nets import AutoencoderKL, PatchDiscriminator
from torch import nn


@dataclass(frozen=True)
class AutoencoderConfig:
    """Shape of the autoencoder. ``downsampling`` (a power of two) sets the number of levels: each
    level after the first halves the image, so a 128 px image with factor 4 has a 32 x 32 latent."""

    downsampling: int = 4
    latent_channels: int = 3
    base_channels: int = 32
    num_res_blocks: int = 1
    attention_at_bottom: bool = False

    def __post_init__(self) -> None:
        if self.downsampling < 1 or self.downsampling & (self.downsampling - 1):
            raise ValueError(f"autoencoder.downsampling must be a power of two, got {self.downsampling}")

    @property
    def norm_num_groups(self) -> int:
        """Group-norm groups: at most 16, and dividing every level's channel count."""
        return math.gcd(16, self.base_channels)

    @property
    def channels(self) -> tuple[int, ...]:
        levels = int(math.log2(self.downsampling)) + 1
        return tuple(self.base_channels * min(2**level, 4) for level in range(levels))


class LayoutFreeAutoencoderKL(AutoencoderKL):
    """MONAI's ``AutoencoderKL`` whose posterior sample draws its noise in the latents' logical order:
    ``torch.randn_like`` fills memory in storage order, so a channels_last model would put the same
    random numbers at other positions and train on other samples than a contiguous one."""

    def sampling(self, z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
        eps = torch.randn(z_sigma.shape, dtype=z_sigma.dtype, device=z_sigma.device)
        return z_mu + eps * z_sigma


def build_autoencoder(config: AutoencoderConfig) -> AutoencoderKL:
    """A 2-D, one-channel ``AutoencoderKL`` whose latent grid is the image divided by ``downsampling``."""
    levels = len(config.channels)
    attention = tuple(config.attention_at_bottom and level == levels - 1 for level in range(levels))
    return LayoutFreeAutoencoderKL(
        spatial_dims=2, in_channels=1, out_channels=1, channels=config.channels,
        num_res_blocks=(config.num_res_blocks,) * levels, attention_levels=attention,
        latent_channels=config.latent_channels, norm_num_groups=config.norm_num_groups,
        with_encoder_nonlocal_attn=config.attention_at_bottom, with_decoder_nonlocal_attn=config.attention_at_bottom,
    )


def build_discriminator(channels: int = 32, layers: int = 3) -> PatchDiscriminator:
    """MONAI's patch discriminator (one logit per patch) for the optional adversarial term."""
    return PatchDiscriminator(spatial_dims=2, num_layers_d=layers, channels=channels, in_channels=1, out_channels=1)


def kl_divergence(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over latent elements, averaged over the batch."""
    per_element = z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2).clamp_min(1e-12)) - 1
    return 0.5 * per_element.flatten(1).sum(dim=1).mean()


class FeaturePerceptualLoss(nn.Module):
    """LPIPS-style distance in a frozen feature network's space: features normalised over channels,
    squared difference, mean over positions. The network maps (B, 1, H, W) to one feature map or a
    list of them; it is supplied by the caller (e.g. a radiograph network loaded from a local path)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network.eval()
        for parameter in self.network.parameters():  # (a TorchScript module has no requires_grad_)
            parameter.requires_grad = False

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        maps_reconstruction, maps_target = self._maps(reconstruction), self._maps(target)
        distances = [(_unit(a) - _unit(b)).pow(2).sum(dim=1).mean() for a, b in zip(maps_reconstruction, maps_target)]
        return torch.stack(distances).mean()

    def _maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        output = self.network(images)
        return list(output) if isinstance(output, (list, tuple)) else [output]


def _unit(features: torch.Tensor) -> torch.Tensor:
    return F.normalize(features, dim=1, eps=1e-10)
