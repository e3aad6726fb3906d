"""The lesion segmenter evaluation uses to find lesions in synthetic images (mask adherence):
a small MONAI U-Net with one sigmoid channel per finding, and a Dice + BCE loss that ignores the
(image, finding) channels whose truth is unknown (a present finding that shipped no mask).

Dice is taken over the channels that hold a lesion only: the Dice of an empty target rewards
nothing but an empty prediction, and with most channels empty and lesions a few pixels wide that
pull teaches the network to find no lesion at all. BCE covers every known channel, so empty ones
still teach "nothing here"."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from monai.networks.nets import UNet
from torch import nn

from cxrsynth.tasks.findings import FINDINGS


def build_segmenter(channels: tuple[int, ...] = (16, 32, 64)) -> nn.Module:
    """A 2-D U-Net: (B, 1, H, W) image -> (B, len(FINDINGS), H, W) logits; H, W divisible by 4."""
    return UNet(spatial_dims=2, in_channels=1, out_channels=len(FINDINGS), channels=channels,
                strides=(2,) * (len(channels) - 1), num_res_units=1)


class MaskedDiceBCELoss(nn.Module):
    """Soft Dice over the known channels holding a lesion plus BCE over all known channels."""

    def __init__(self) -> None:
        super().__init__()
        self.dice = DiceLoss(sigmoid=True, reduction="none")

    def forward(self, logits: torch.Tensor, target: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        dice = self.dice(logits, target).reshape(known.shape)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=(2, 3))
        known = known.float()
        lesion = known * (target.flatten(2).amax(dim=2) > 0).float()
        return (bce * known).sum() / known.sum().clamp(min=1.0) + (dice * lesion).sum() / lesion.sum().clamp(min=1.0)
