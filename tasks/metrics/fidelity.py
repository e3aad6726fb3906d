"""Image fidelity of the synthetic set: FID and KID in a radiograph feature space (torchmetrics
with a custom feature module), and SSIM / PSNR where a synthetic image has a real counterpart."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from cxrsynth.tasks.metrics.features import FeatureNetwork


def _batches(images: np.ndarray, batch_size: int, device: torch.device | str):
    for start in range(0, len(images), batch_size):
        yield torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size], dtype=np.float32))[:, None].to(device)


def fid_kid(
    network: FeatureNetwork, real: np.ndarray, fake: np.ndarray, seed: int,
    batch_size: int = 64, subsets: int = 50, device: torch.device | str = "cpu",
) -> dict[str, float | int | None]:
    """FID and KID (mean, std over ``subsets`` random subsets, seeded) of (N, H, W) image sets.
    KID's subset size is the smaller set's size, capped at 1000 (the usual value)."""
    result: dict[str, float | int | None] = {"n_real": len(real), "n_fake": len(fake),
                                             "fid": None, "kid_mean": None, "kid_std": None}
    if len(real) < 2 or len(fake) < 2:
        return result
    fid = FrechetInceptionDistance(feature=network, reset_real_features=True)
    with warnings.catch_warnings():  # KID keeps every feature vector; a few thousand here, so fine
        warnings.filterwarnings("ignore", message=".*will save all extracted features")
        kid = KernelInceptionDistance(feature=network, subsets=subsets, subset_size=min(1000, len(real), len(fake)))
    fid, kid = fid.to(device), kid.to(device)
    for is_real, images in ((True, real), (False, fake)):
        for batch in _batches(images, batch_size, device):
            fid.update(batch, real=is_real)
            kid.update(batch, real=is_real)
    with torch.random.fork_rng():  # KID draws its subsets from torch's global generator
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    result.update(fid=float(fid.compute()), kid_mean=float(kid_mean), kid_std=float(kid_std))
    return result


def paired_ssim_psnr(first: np.ndarray, second: np.ndarray) -> dict[str, float | int | None]:
    """Mean SSIM and PSNR (data range 1) over aligned pairs of (N, H, W) images."""
    if len(first) == 0:
        return {"n_pairs": 0, "ssim": None, "psnr": None}
    a = torch.from_numpy(np.asarray(first, dtype=np.float32))[:, None]
    b = torch.from_numpy(np.asarray(second, dtype=np.float32))[:, None]
    ssim = structural_similarity_index_measure(a, b, data_range=1.0, reduction="none")
    psnr = peak_signal_noise_ratio(a, b, data_range=1.0, dim=(1, 2, 3), reduction="none")
    return {"n_pairs": len(first), "ssim": float(ssim.mean()), "psnr": float(psnr.mean())}
