"""The conditional denoiser: MONAI's DiffusionModelUNet with mask channels and cross-attention context.

Input channels: the noisy image (or, in latent space, its latent channels), one channel per
finding's lesion mask (max-pooled to the latent grid in latent space), and a "mask given"
indicator (1 where a mask conditions the image, so an empty given mask, "no lesion here", differs
from a dropped one). Cross-attention context: one always-present anchor token, one token per
finding from the label encoder, and the text encoder's tokens. What the network predicts (noise
or v) is the diffusion process's business, not the model's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.networks.nets import DiffusionModelUNet
from torch import nn

from cxrsynth.models.condition_encoders import LabelEncoder
from cxrsynth.models.conditioning import Conditions
from cxrsynth.models.latent import mask_grid


@dataclass(frozen=True)
class UNetShape:
    """The U-Net's widths and depth, as MONAI's DiffusionModelUNet takes them."""

    channels: tuple[int, ...]
    attention_levels: tuple[bool, ...]
    num_res_blocks: int
    num_head_channels: int
    norm_num_groups: int


@dataclass(frozen=True)
class EncodedConditions:
    """A batch of conditions as the U-Net takes them: cross-attention tokens and the mask input channels.
    Sampling encodes a batch once and reuses it at every step (the encoders do not see the timestep)."""

    context: torch.Tensor  # (B, 1 + F + L, context_dim)
    channels: torch.Tensor  # (B, F + 1, H, W)


class ConditionalDenoiser(nn.Module):
    def __init__(
        self,
        n_findings: int,
        context_dim: int,
        unet: UNetShape,
        conditions: tuple[str, ...] = ("label", "mask", "text"),
        text_encoder: nn.Module | None = None,
        image_channels: int = 1,
        mask_downsampling: int = 1,
    ) -> None:
        """``image_channels``: 1 for pixels, the autoencoder's latent channels in latent space, where
        ``mask_downsampling`` (its factor) brings the masks down to the latent grid."""
        super().__init__()
        if "text" in conditions and text_encoder is None:
            raise ValueError("the text condition needs a text encoder")
        self.n_findings = n_findings
        self.conditions = tuple(conditions)
        self.mask_downsampling = mask_downsampling
        self.unet = DiffusionModelUNet(
            spatial_dims=2,
            in_channels=image_channels + n_findings + 1,
            out_channels=image_channels,
            channels=tuple(unet.channels),
            attention_levels=tuple(unet.attention_levels),
            num_res_blocks=unet.num_res_blocks,
            num_head_channels=unet.num_head_channels,
            norm_num_groups=unet.norm_num_groups,
            with_conditioning=True,
            cross_attention_dim=context_dim,
            use_flash_attention=True,
        )
        # An always-present token: attention has somewhere to go when every condition is dropped.
        self.anchor = nn.Parameter(torch.randn(1, 1, context_dim) * 0.02)
        self.label_encoder = LabelEncoder(n_findings, context_dim) if "label" in conditions else None
        self.text_encoder = text_encoder if "text" in conditions else None

    def context(self, cond: Conditions) -> torch.Tensor:
        """Cross-attention tokens (B, 1 + F + L, context_dim) for the kept conditions."""
        batch = len(cond)
        tokens = [self.anchor.expand(batch, -1, -1)]
        if self.label_encoder is not None:
            tokens.append(self.label_encoder(cond.states, cond.laterality, cond.severity, cond.keep_label))
        if self.text_encoder is not None:
            tokens.append(self.text_encoder(cond.text_ids, cond.text_attention, cond.keep_text))
        return torch.cat([t.to(tokens[0].dtype) for t in tokens], dim=1)

    def mask_channels(self, cond: Conditions, like: torch.Tensor) -> torch.Tensor:
        """Per-finding masks (on the latent grid in latent space) and the "mask given" indicator, zero
        where the mask is dropped."""
        given = (cond.keep_mask if "mask" in self.conditions else torch.zeros_like(cond.keep_mask))
        given = given.to(like.dtype)[:, None, None, None]
        masks = mask_grid(cond.masks.to(like.dtype), self.mask_downsampling) * given
        return torch.cat([masks, given.expand(-1, 1, *masks.shape[2:])], dim=1)

    def encode(self, cond: Conditions) -> EncodedConditions:
        """The context tokens and mask channels of ``cond`` (float32 channels, like the training images)."""
        return EncodedConditions(self.context(cond), self.mask_channels(cond, cond.masks.float()))

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor,
                cond: Conditions | EncodedConditions) -> torch.Tensor:
        encoded = cond if isinstance(cond, EncodedConditions) else self.encode(cond)
        inputs = torch.cat([noisy, encoded.channels.to(noisy.dtype)], dim=1)
        return self.unet(inputs, timesteps, context=encoded.context)
