"""Latent diffusion's side of the autoencoder: its weights' digest, the training latents (encoded once
and cached in the dataset), the latent space measured on them, and the codec a model folder's
config accepts.

A latent-space model records the digest of the autoencoder it was trained with; loading it with
any other autoencoder is refused, naming that autoencoder's folder, since its latents would mean
something else to the denoiser.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from cxrsynth.models.latent import LatentCodec, latent_scale_factor
from cxrsynth.tasks.autoencoder.model_io import load_autoencoder
from cxrsynth.tasks.diffusion.data import DiffusionDataset
from cxrsynth.tasks.diffusion.model_io import LatentSpace, ModelConfig

ENCODE_BATCH = 32
# Significant digits kept of the measured scale and range: they enter the model config's digest, and a
# last-bit difference between two machines' sums must not make a checkpoint "another model".
MEASURED_DIGITS = 6


def autoencoder_digest(autoencoder: nn.Module) -> str:
    """A short digest of the autoencoder's weights (names, shapes, dtypes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(autoencoder.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def _rounded(value: float) -> float:
    return float(f"{value:.{MEASURED_DIGITS}g}")


@torch.no_grad()
def encode_dataset(codec: LatentCodec, dataset: DiffusionDataset, device: torch.device | str = "cpu",
                   batch_size: int = ENCODE_BATCH) -> torch.Tensor:
    """The unscaled latents (N, C, h, w) of every training image, on the CPU."""
    latents = []
    for start in tqdm(range(0, len(dataset), batch_size), desc="encode latents", unit="batch", leave=False):
        images = torch.stack([dataset.pixels(i)[0] for i in range(start, min(start + batch_size, len(dataset)))])
        latents.append(codec.encode_unscaled(images.to(device)).cpu())
    return torch.cat(latents)


def measured_space(latents: torch.Tensor, autoencoder: nn.Module, downsampling: int) -> LatentSpace:
    """The latent space of unscaled training ``latents``: their scale (1 / std) and the range of the
    scaled ones, rounded up, which the samplers clip their x0 estimate to."""
    scale = _rounded(latent_scale_factor(latents))
    reach = float(latents.abs().max()) * scale
    return LatentSpace(autoencoder_digest=autoencoder_digest(autoencoder), downsampling=downsampling,
                       channels=int(latents.shape[1]), scale_factor=scale, clip=_rounded(math.ceil(reach * 10) / 10))


def check_image_size(image_size: int, downsampling: int) -> None:
    if image_size % downsampling:
        raise ValueError(f"ingest.image_size: {image_size} px is not a multiple of the autoencoder's downsampling "
                         f"factor {downsampling} (autoencoder.downsampling)")


def latent_training_data(autoencoder_dir: str | Path, dataset: DiffusionDataset,
                         device: torch.device | str = "cpu") -> tuple[LatentCodec, LatentSpace]:
    """Load the autoencoder, encode every training image once (cached in ``dataset.latents``, scaled),
    and measure the latent space on those latents."""
    autoencoder, shape = load_autoencoder(autoencoder_dir, device)
    check_image_size(int(dataset.pixels(0)[0].shape[-1]), shape.downsampling)
    codec = LatentCodec(autoencoder, 1.0)
    unscaled = encode_dataset(codec, dataset, device)
    space = measured_space(unscaled, autoencoder, shape.downsampling)
    codec.scale_factor = space.scale_factor
    dataset.latents = unscaled * space.scale_factor
    return codec, space


def load_codec(config: ModelConfig, autoencoder_dir: str | Path | None, model_dir: str | Path,
               device: torch.device | str = "cpu") -> LatentCodec | None:
    """The codec of a latent-space model (None in pixel space, where no autoencoder is read), refusing
    an autoencoder other than the one the model was trained with."""
    if config.latent is None:
        return None
    if autoencoder_dir is None:
        raise ValueError(f"{model_dir}: a latent-space model needs the autoencoder it was trained with "
                         f"(data/train_autoencoder/model, digest {config.latent.autoencoder_digest})")
    autoencoder, _ = load_autoencoder(autoencoder_dir, device)
    found = autoencoder_digest(autoencoder)
    if found != config.latent.autoencoder_digest:
        raise ValueError(f"{autoencoder_dir}: this autoencoder (digest {found}) is not the one {model_dir} was "
                         f"trained with (digest {config.latent.autoencoder_digest}); retrain the diffusion model "
                         f"or restore that autoencoder")
    return LatentCodec(autoencoder, config.latent.scale_factor)
