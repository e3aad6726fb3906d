"""The conditional denoiser: MONAI's DiffusionModelUNet with mask channels and cross-attention context.

Images: pixels, or in latent space the autoencoder's latent channels. Mask channels: one per
finding's lesion mask (max-pooled to the latent grid in latent space), and a "mask given" indicator
(1 where a mask conditions the image, so an empty given mask, "no lesion here", differs from a
dropped one). With ``mask_control="concat"`` they are extra input channels of the U-Net; with
``"controlnet"`` the U-Net sees the noisy image alone and a MONAI ControlNet branch takes the mask
channels as its conditioning and adds its residuals to the U-Net's skip connections, zeroed for
images whose mask is dropped (so the mask-free pass of guidance is the base U-Net itself).
Cross-attention context: one always-present anchor token, one token per finding from the label
encoder, and the text encoder's tokens. What the network predicts (noise or v) is the diffusion
process's business, not the model's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.networks.nets import ControlNet, DiffusionModelUNet
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
        mask_control: str = "concat",
        image_channels: int = 1,
        mask_downsampling: int = 1,
    ) -> None:
        """``image_channels``: 1 for pixels, the autoencoder's latent channels in latent space, where
        ``mask_downsampling`` (its factor) brings the masks down to the latent grid."""
        super().__init__()
        if "text" in conditions and text_encoder is None:
            raise ValueError("the text condition needs a text encoder")
        if mask_control not in MASK_CONTROLS:
            raise ValueError(f"mask_control must be one of {MASK_CONTROLS}, got {mask_control!r}")
        self.n_findings = n_findings
        self.conditions = tuple(conditions)
        self.mask_control = mask_control
        self.mask_downsampling = mask_downsampling
        mask_inputs = n_findings + 1 if mask_control == "concat" else 0
        self.unet = DiffusionModelUNet(
            spatial_dims=2,
            in_channels=image_channels + mask_inputs,
            out_channels=image_channels,
            **_unet_shape(unet, context_dim),
        )
        self.controlnet = (_control_branch(image_channels, n_findings + 1, unet, context_dim)
                           if mask_control == "controlnet" else None)
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
        channels = encoded.channels.to(noisy.dtype)
        if self.controlnet is None:
            return self.unet(torch.cat([noisy, channels], dim=1), timesteps, context=encoded.context)
        given = channels[:, -1, 0, 0]  # the "mask given" indicator, constant over the image
        if not self._control_runs(given):
            return self.unet(noisy, timesteps, context=encoded.context)
        down, middle = self.controlnet(noisy, timesteps, controlnet_cond=channels, context=encoded.context)
        keep = given[:, None, None, None]
        return self.unet(noisy, timesteps, context=encoded.context,
                         down_block_additional_residuals=[residual * keep for residual in down],
                         mid_block_additional_residual=middle * keep)

    def _control_runs(self, given: torch.Tensor) -> bool:
        """Whether the control branch must run: some image has its mask, or the branch is training (its
        parameters then take part in every step, zero gradients included, as data parallelism expects)."""
        training = torch.is_grad_enabled() and any(p.requires_grad for p in self.controlnet.parameters())
        return training or bool(given.any())

    def base_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the control branch's: the denoiser ControlNet training keeps frozen."""
        control = {id(p) for p in self.controlnet.parameters()} if self.controlnet is not None else set()
        return [p for p in self.parameters() if id(p) not in control]


MASK_CONTROLS = ("concat", "controlnet")


def _unet_shape(unet: UNetShape, context_dim: int) -> dict:
    """The keyword arguments the U-Net and its ControlNet branch share."""
    return dict(
        channels=tuple(unet.channels), attention_levels=tuple(unet.attention_levels),
        num_res_blocks=unet.num_res_blocks, num_head_channels=unet.num_head_channels,
        norm_num_groups=unet.norm_num_groups, with_conditioning=True, cross_attention_dim=context_dim,
        use_flash_attention=True,
    )


def _control_branch(image_channels: int, mask_channels: int, unet: UNetShape, context_dim: int) -> ControlNet:
    """MONAI's ControlNet: a copy of the U-Net's encoder whose zero-initialised outputs add to the U-Net's
    skip connections. Its conditioning embedding keeps the mask at the image's grid (one level, no
    striding), since the mask channels already come at the resolution the U-Net works at."""
    return ControlNet(spatial_dims=2, in_channels=image_channels, conditioning_embedding_in_channels=mask_channels,
                      conditioning_embedding_num_channels=(unet.channels[0],), **_unet_shape(unet, context_dim))
