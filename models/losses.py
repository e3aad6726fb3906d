"""The lesion-preserving diffusion loss.

total = MSE(prediction, target)                                     the usual noise (or v) loss
      + lesion_weight * MSE inside the lesion masks                  lesions count more than lung
      + ssim_weight * (1 - SSIM) of the predicted clean image inside each lesion's bounding box

The SSIM term compares the clean image the network implies (x0 recovered from its prediction) with
the real one. At high noise that x0 is a blur whatever the network does, so the term is weighted
per image by ``CleanEstimate.weight`` (the caller passes min(SNR, gamma) / gamma, the Min-SNR weighting of
Hang et al. 2023): near-clean timesteps count fully, near-noise ones barely.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

# Images live in [-1, 1] inside the diffusion process.
DATA_RANGE = 2.0
# A 7-pixel window: lesions at 64 px are often under 10 pixels across, an 11-pixel one would mostly see lung.
SSIM_KERNEL = 7


def lesion_mse(prediction: torch.Tensor, target: torch.Tensor, lesion: torch.Tensor) -> torch.Tensor:
    """Mean squared error over lesion pixels only (0 when the batch has none)."""
    squared = (prediction.float() - target.float()).pow(2) * lesion
    return squared.sum() / lesion.sum().clamp(min=1.0)


def bounding_regions(lesion: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) 0/1: the axis-aligned box around each image's lesion pixels (empty if none)."""
    rows = lesion.amax(dim=3, keepdim=True) > 0  # (B, 1, H, 1)
    cols = lesion.amax(dim=2, keepdim=True) > 0  # (B, 1, 1, W)
    height, width = lesion.shape[-2:]
    row_index = torch.arange(height, device=lesion.device).view(1, 1, height, 1)
    col_index = torch.arange(width, device=lesion.device).view(1, 1, 1, width)
    big = max(height, width)
    top = torch.where(rows, row_index, big).amin(dim=2, keepdim=True)
    bottom = torch.where(rows, row_index, -1).amax(dim=2, keepdim=True)
    left = torch.where(cols, col_index, big).amin(dim=3, keepdim=True)
    right = torch.where(cols, col_index, -1).amax(dim=3, keepdim=True)
    inside = (row_index >= top) & (row_index <= bottom) & (col_index >= left) & (col_index <= right)
    return inside.to(lesion.dtype)


def lesion_ssim_loss(x0_predicted: torch.Tensor, x0: torch.Tensor, lesion: torch.Tensor,
                     x0_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean over images with a lesion of 1 - mean SSIM inside the lesion's bounding box."""
    region = bounding_regions(lesion)
    area = region.sum(dim=(1, 2, 3))
    has_lesion = area > 0
    if not bool(has_lesion.any()):
        return x0_predicted.sum() * 0.0
    _, ssim_map = structural_similarity_index_measure(
        x0_predicted.float(), x0.float(), data_range=DATA_RANGE, kernel_size=SSIM_KERNEL,
        reduction="none", return_full_image=True,
    )
    region_ssim = (ssim_map * region).sum(dim=(1, 2, 3)) / area.clamp(min=1.0)
    weight = has_lesion.float() if x0_weight is None else x0_weight.float() * has_lesion
    return ((1.0 - region_ssim) * weight).sum() / has_lesion.sum()


@dataclass
class CleanEstimate:
    """What the SSIM term compares: the clean image the network implies, the true one, an optional
    per-image weight (B,), and the lesion union at their resolution when it is not the loss's (latent
    diffusion compares decoded images in pixels while its noise loss lives on the latent grid)."""

    predicted: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor | None = None
    lesion: torch.Tensor | None = None


def lesion_preserving_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    lesion: torch.Tensor,
    lesion_weight: float,
    ssim_weight: float,
    clean: CleanEstimate | None = None,
) -> dict[str, torch.Tensor]:
    """The loss and its parts. ``lesion`` is (B, 1, H, W) 0/1, the union of the image's lesion masks at
    the prediction's resolution (or (B, C, H, W), one copy per latent channel); a weight of 0 skips its
    term (and its cost)."""
    base = (prediction.float() - target.float()).pow(2).mean()
    zero = base * 0.0
    lesion_term = lesion_mse(prediction, target, lesion) if lesion_weight > 0 else zero
    if ssim_weight > 0:
        if clean is None:
            raise ValueError("ssim_weight > 0 needs the clean-image estimate")
        ssim_term = lesion_ssim_loss(clean.predicted, clean.target, lesion if clean.lesion is None else clean.lesion,
                                     clean.weight)
    else:
        ssim_term = zero
    total = base + lesion_weight * lesion_term + ssim_weight * ssim_term
    return {"loss": total, "noise": base.detach(), "lesion": lesion_term.detach(), "ssim": ssim_term.detach()}
