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
from scipy.ndimage import binary_dilation, label
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


def lesions_of(mask: np.ndarray) -> list[np.ndarray]:
    """Each lesion of a finding's binary mask: its 8-connected components, largest first."""
    labelled, count = label(mask, structure=np.ones((3, 3), bool))
    components = [labelled == index for index in range(1, count + 1)]
    return sorted(components, key=lambda component: -int(component.sum()))


def lesion_contrast(image: np.ndarray, mask: np.ndarray, ring: int = RING_PIXELS,
                    exclude: np.ndarray | None = None) -> float:
    """Mean intensity inside the lesion minus the mean in the ring of ``ring`` pixels around it
    (leaving out ``exclude``, e.g. the finding's other lesions)."""
    surroundings = binary_dilation(mask, iterations=ring) & ~mask
    if exclude is not None:
        surroundings &= ~exclude
    if not mask.any() or not surroundings.any():
        raise ValueError("lesion_contrast needs a non-empty mask with room around it")
    return float(image[mask].mean() - image[surroundings].mean())


def _crop_ssim(real: np.ndarray, reconstructed: np.ndarray, mask: np.ndarray) -> float:
    a = torch.from_numpy(lesion_crop(real, mask))[None, None]
    b = torch.from_numpy(lesion_crop(reconstructed, mask))[None, None]
    return float(structural_similarity_index_measure(b, a, data_range=1.0, kernel_size=SSIM_KERNEL))


def _finding_lesions(real: np.ndarray, reconstructed: np.ndarray,
                     finding_masks: np.ndarray) -> list[tuple[float, float, float]]:
    """(crop SSIM, contrast before, contrast after) of every lesion with surroundings to compare it with."""
    figures = []
    for row in np.flatnonzero(finding_masks.reshape(len(finding_masks), -1).any(axis=1)):
        whole = finding_masks[row].astype(bool)
        for lesion in lesions_of(whole):
            try:
                before = lesion_contrast(real[row], lesion, exclude=whole)
            except ValueError:  # a lesion with no free ring around it (it fills its surroundings)
                continue
            figures.append((_crop_ssim(real[row], reconstructed[row], lesion), before,
                            lesion_contrast(reconstructed[row], lesion, exclude=whole)))
    return figures


def lesion_fidelity(real: np.ndarray, reconstructed: np.ndarray, masks: np.ndarray,
                    findings: Sequence[str] = FINDINGS) -> dict[str, dict[str, float | int | None]]:
    """Per finding over every lesion (connected component) of the (N, F, H, W) masks: the SSIM of
    the crop around the lesion's box, its mean contrast against its ring before and after, and
    ``contrast_kept`` = mean(after) / mean(before); None where the finding has no lesion."""
    result = {}
    for finding in findings:
        finding_masks = masks[:, FINDINGS.index(finding)]
        figures = np.array(_finding_lesions(real, reconstructed, finding_masks)).reshape(-1, 3)
        n_images = int(finding_masks.reshape(len(finding_masks), -1).any(axis=1).sum())
        if not len(figures):
            result[finding] = {"n_images": n_images, "n_lesions": 0, "crop_ssim": None, "contrast_before": None,
                               "contrast_after": None, "contrast_kept": None}
            continue
        ssim, before, after = figures.mean(axis=0)
        result[finding] = {
            "n_images": n_images, "n_lesions": len(figures), "crop_ssim": float(ssim),
            "contrast_before": float(before), "contrast_after": float(after),
            "contrast_kept": float(after / before) if before != 0 else None,
        }
    return result


def reconstruction_fidelity(real: np.ndarray, reconstructed: np.ndarray, masks: np.ndarray,
                            findings: Sequence[str] = FINDINGS) -> dict:
    """Whole-image SSIM and PSNR, and the per-finding lesion figures (see ``lesion_fidelity``)."""
    return {"image": paired_ssim_psnr(real, reconstructed),
            "lesions": lesion_fidelity(real, reconstructed, masks, findings)}
