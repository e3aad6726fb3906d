"""How much of a radiograph, and of its lesions, survives the autoencoder.

Small lesions are what an autoencoder loses first; if they vanish in reconstruction, the latent
diffusion model cannot draw them. On real held-out images: PSNR and SSIM of the whole image, and
per finding the SSIM of the crop around each lesion and the lesion's contrast against a ring of its
surroundings, before and after encoding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.ndimage import binary_dilation
from torchmetrics.functional.image import structural_similarity_index_measure

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.metrics.fidelity import paired_ssim_psnr
from cxrsynth.tasks.metrics.lesions import SSIM_KERNEL, lesion_crop

RING_PIXELS = 3  # width of the surroundings a lesion's contrast is measured against


@torch.no_grad()
def reconstruct(autoencoder: torch.nn.Module, images: np.ndarray, batch_size: int = 32,
                device: torch.device | str = "cpu") -> np.ndarray:
    """(N, H, W) images in [0, 1] through encoder mean and decoder, back in [0, 1]."""
    autoencoder.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size], np.float32))[:, None]
        latent = autoencoder.encode(batch.to(device) * 2 - 1)[0]  # the posterior mean: no sampling noise
        out.append(((autoencoder.decode(latent).clamp(-1, 1) + 1) / 2)[:, 0].cpu().numpy())
    return np.concatenate(out) if out else np.zeros_like(images, dtype=np.float32)


def lesion_contrast(image: np.ndarray, mask: np.ndarray, ring: int = RING_PIXELS) -> float:
    """Mean intensity inside the lesion minus the mean in the ring of ``ring`` pixels around it."""
    surroundings = binary_dilation(mask, iterations=ring) & ~mask
    if not mask.any() or not surroundings.any():
        raise ValueError("lesion_contrast needs a non-empty mask with room around it")
    return float(image[mask].mean() - image[surroundings].mean())


def _crop_ssim(real: np.ndarray, reconstructed: np.ndarray, mask: np.ndarray) -> float:
    a = torch.from_numpy(lesion_crop(real, mask))[None, None]
    b = torch.from_numpy(lesion_crop(reconstructed, mask))[None, None]
    return float(structural_similarity_index_measure(b, a, data_range=1.0, kernel_size=SSIM_KERNEL))


def lesion_fidelity(real: np.ndarray, reconstructed: np.ndarray, masks: np.ndarray,
                    findings: Sequence[str] = FINDINGS) -> dict[str, dict[str, float | int | None]]:
    """Per finding over the images whose (N, F, H, W) mask has it: lesion-crop SSIM, mean contrast
    before and after, and ``contrast_kept`` = mean(after) / mean(before)."""
    result = {}
    for finding in findings:
        index = FINDINGS.index(finding)
        rows = [row for row in range(len(real)) if masks[row, index].any()]
        if not rows:
            result[finding] = {"n": 0, "crop_ssim": None, "contrast_before": None, "contrast_after": None,
                               "contrast_kept": None}
            continue
        lesion = [masks[row, index].astype(bool) for row in rows]
        before = np.array([lesion_contrast(real[row], mask) for row, mask in zip(rows, lesion)])
        after = np.array([lesion_contrast(reconstructed[row], mask) for row, mask in zip(rows, lesion)])
        result[finding] = {
            "n": len(rows),
            "crop_ssim": float(np.mean([_crop_ssim(real[row], reconstructed[row], mask)
                                        for row, mask in zip(rows, lesion)])),
            "contrast_before": float(before.mean()), "contrast_after": float(after.mean()),
            "contrast_kept": float(after.mean() / before.mean()) if before.mean() != 0 else None,
        }
    return result


def reconstruction_fidelity(real: np.ndarray, reconstructed: np.ndarray, masks: np.ndarray,
                            findings: Sequence[str] = FINDINGS) -> dict:
    """Whole-image SSIM and PSNR, and the per-finding lesion figures (see ``lesion_fidelity``)."""
    return {"image": paired_ssim_psnr(real, reconstructed),
            "lesions": lesion_fidelity(real, reconstructed, masks, findings)}
