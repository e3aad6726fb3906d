"""The autoencoder's model folder: ``config.json`` (its shape) and ``model.pt`` (EMA weights stamped
with the config's digest). ``train_autoencoder`` writes it; latent diffusion and generate read it."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

import torch
from monai.networks.nets import AutoencoderKL

from cxrsynth.models.autoencoder import AutoencoderConfig, build_autoencoder
from cxrsynth.tasks import torch_files
from cxrsynth.tasks.diffusion.model_io import CONFIG_FILE, WEIGHTS_FILE, mapping_digest
from cxrsynth.tasks.io import write_json


def save_autoencoder(folder: str | Path, autoencoder: torch.nn.Module, config: AutoencoderConfig) -> None:
    """Write ``autoencoder``'s weights and ``config`` into ``folder`` (atomically, file by file)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shape = asdict(config)
    write_json(folder / CONFIG_FILE, shape)
    torch_files.save({"state_dict": autoencoder.state_dict(), "digest": mapping_digest(shape)}, folder / WEIGHTS_FILE)


def load_autoencoder_config(folder: str | Path) -> AutoencoderConfig:
    """The ``AutoencoderConfig`` of a model folder, naming the file and key on a bad one."""
    path = Path(folder) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found (has train_autoencoder run?)")
    data = json.loads(path.read_text())
    known = {field.name for field in fields(AutoencoderConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}")
    return AutoencoderConfig(**data)


def load_autoencoder(folder: str | Path, device: torch.device | str = "cpu") -> tuple[AutoencoderKL, AutoencoderConfig]:
    """The frozen, eval-mode autoencoder of a model folder, refusing weights written for another config."""
    config = load_autoencoder_config(folder)
    path = Path(folder) / WEIGHTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found (has train_autoencoder run?)")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved["digest"] != mapping_digest(asdict(config)):
        raise ValueError(f"{path}: weights do not match {CONFIG_FILE} (digest differs)")
    autoencoder = build_autoencoder(config)
    autoencoder.load_state_dict(saved["state_dict"])
    return autoencoder.to(device).eval().requires_grad_(False), config
