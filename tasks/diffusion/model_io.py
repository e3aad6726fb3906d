"""The model's typed config, the digest that identifies it, building the denoiser from it, and its weights file.

The config holds everything that shapes the weights or gives them meaning (network widths, the
conditions, the text encoder and its vocabulary size, the image size, the diffusion process, and in
latent space the autoencoder's digest, latent shape and the latents' scale); its
digest is stored in every checkpoint so a run never resumes from weights of a different model.
The model folder that holds config, weights and tokenizer together is written and read by
``tasks.diffusion.pipeline.GenerationPipeline``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from torch import nn

from cxrsynth.models.condition_encoders import LearnedTextEncoder, PretrainedTextEncoder
from cxrsynth.models.denoiser import ConditionalDenoiser, UNetShape
from cxrsynth.tasks.diffusion.schedulers import Process
from cxrsynth.tasks.diffusion.tokenizer import Tokenizer, pretrained_folders
from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks import torch_files
from cxrsynth.tasks.params import DiffusionParams, UNetParams

WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "config.json"
_UNSET = object()
# Config keys added since models were first saved -> the value older model folders meant (pixel
# space, masks as input channels): left out of the digest while they hold it, so those folders load.
ADDED_KEYS = {"mask_control": "concat", "space": "pixel", "latent": None}


class TextEncoderConfig(BaseModel):
    """The text condition's encoder as trained: its kind and sizes, and the tokenizer's vocabulary size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["learned", "pretrained"]
    path: str | None
    source: Literal["prompt", "report"]
    max_tokens: int
    dim: int
    layers: int
    vocab_size: int


class LatentSpace(BaseModel):
    """The latent space a latent-diffusion model was trained in: which autoencoder (the digest of its
    weights), the latent's shape, and the scale and range measured on the scaled training latents."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    autoencoder_digest: str
    downsampling: int  # image side / latent side
    channels: int
    scale_factor: float  # latents are multiplied by it: 1 / std of the training latents
    clip: float  # the samplers clip their x0 estimate to +-clip (pixels: +-1), the scaled training latents' range




class ModelConfig(BaseModel):
    """What shapes the denoiser's weights or gives them meaning; ``config.json`` of a model folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_size: int  # the working resolution of the images, in either space
    findings: list[str]
    maskable: list[str]  # findings with masks: what a "complete" conditioning mask means
    conditions: list[Literal["label", "mask", "text"]]
    label_dim: int
    unet: UNetParams
    text_encoder: TextEncoderConfig
    process: Process
    mask_control: Literal["concat", "controlnet"] = "concat"
    space: Literal["pixel", "latent"] = "pixel"
    latent: LatentSpace | None = None

    @model_validator(mode="after")
    def _latent_iff_latent_space(self) -> "ModelConfig":
        if (self.space == "latent") != (self.latent is not None):
            raise ValueError("latent: a latent-space model needs its latent space, a pixel-space model has none")
        if self.latent is not None and self.image_size % self.latent.downsampling:
            raise ValueError(f"image_size: {self.image_size} px is not a multiple of the autoencoder's downsampling "
                             f"{self.latent.downsampling}")
        return self

    def as_dict(self) -> dict:
        """Plain JSON types: what config.json and checkpoints hold, and (see ``config_digest``) what the digest hashes."""
        return self.model_dump(mode="json")

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """What the denoiser diffuses: (1, H, W) pixels, or (C, H / f, W / f) latents."""
        if self.latent is None:
            return (1, self.image_size, self.image_size)
        side = self.image_size // self.latent.downsampling
        return (self.latent.channels, side, side)

    @property
    def clip(self) -> float:
        """The bound of the samplers' x0 estimate: the data range, pixels in [-1, 1] or the latents' range."""
        return 1.0 if self.latent is None else self.latent.clip

    @property
    def digest(self) -> str:
        return config_digest(self)

    @property
    def pretrained_text(self) -> bool:
        """Whether the text condition runs through a pretrained transformers encoder."""
        return "text" in self.conditions and self.text_encoder.kind == "pretrained"

    @classmethod
    def read(cls, path: str | Path) -> "ModelConfig":
        """A config.json (its stored digest aside), with the bad key named on error."""
        data = json.loads(Path(path).read_text())
        data.pop("digest", None)
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise ValueError(f"{path}: not a model config ({problems})") from None


def model_config(diffusion: DiffusionParams, image_size: int, tokenizer: Tokenizer, maskable: list[str],
                 latent: LatentSpace | None = None) -> ModelConfig:
    """The params that shape the model, plus what the data fixed: image size, vocabulary size, the
    findings that have masks (the meaning of a "complete" conditioning mask) and, in latent space
    (``diffusion.space``), the measured ``latent`` space."""
    if (diffusion.space == "latent") != (latent is not None):
        raise ValueError(f"diffusion.space: {diffusion.space} space, but "
                         f"{'no' if latent is None else 'a'} latent space was measured")
    text = diffusion.text_encoder
    return ModelConfig(
        image_size=image_size, findings=list(FINDINGS), maskable=list(maskable), conditions=list(diffusion.conditions),
        label_dim=diffusion.label_dim, unet=diffusion.unet,
        text_encoder=TextEncoderConfig(
            kind=text.kind, path=text.path if text.kind == "pretrained" else None, source=text.source,
            max_tokens=text.max_tokens, dim=text.dim, layers=text.layers, vocab_size=tokenizer.vocab_size,
        ),
        process=Process(diffusion.timesteps, diffusion.schedule, diffusion.prediction),
        mask_control=diffusion.mask_control, space=diffusion.space, latent=latent,
    )


def mapping_digest(mapping: dict) -> str:
    """A short digest of a JSON-able config: equal configs, equal digests (checkpoints are matched by it)."""
    return hashlib.sha256(json.dumps(mapping, sort_keys=True).encode()).hexdigest()[:16]


def config_digest(config: ModelConfig) -> str:
    """The digest of the config, leaving out keys added since models were first saved while they hold the
    value those models meant, so earlier model folders and checkpoints keep their digest."""
    hashed = {key: value for key, value in config.as_dict().items() if ADDED_KEYS.get(key, _UNSET) != value}
    return mapping_digest(hashed)


def load_text_backbone(path: str | Path) -> nn.Module:
    """A pretrained transformers encoder from a local folder; never downloads."""
    from transformers import AutoModel

    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"diffusion.text_encoder.path: {path} is not a folder holding a pretrained encoder")
    return AutoModel.from_pretrained(str(pretrained_folders(path)[0]), local_files_only=True)


def text_backbone_skeleton(folder: str | Path) -> nn.Module:
    """The pretrained encoder's architecture from the config saved in a model folder (weights come later)."""
    from transformers import AutoConfig, AutoModel

    return AutoModel.from_config(AutoConfig.from_pretrained(str(folder), local_files_only=True))


def build_model(config: ModelConfig, text_backbone: nn.Module | None = None) -> ConditionalDenoiser:
    """A fresh denoiser for ``config``; a pretrained text encoder needs its ``text_backbone``."""
    text = config.text_encoder
    encoder = None
    if "text" in config.conditions:
        if text.kind == "learned":
            encoder = LearnedTextEncoder(text.vocab_size, text.max_tokens, text.dim, text.layers, config.label_dim)
        elif text_backbone is None:
            raise ValueError("a pretrained text encoder needs its backbone")
        else:
            encoder = PretrainedTextEncoder(text_backbone, text_backbone.config.hidden_size, text.max_tokens,
                                            config.label_dim)
    unet = config.unet
    shape = UNetShape(tuple(unet.channels), tuple(unet.attention_levels), unet.num_res_blocks, unet.num_head_channels,
                      unet.norm_num_groups)
    return ConditionalDenoiser(len(config.findings), config.label_dim, shape, tuple(config.conditions), encoder,
                               mask_control=config.mask_control, image_channels=config.sample_shape[0],
                               mask_downsampling=1 if config.latent is None else config.latent.downsampling)


def save_weights(folder: str | Path, model: nn.Module, config: ModelConfig) -> None:
    """The weights file of a model folder, stamped with the config's digest."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch_files.save({"state_dict": model.state_dict(), "digest": config_digest(config)}, folder / WEIGHTS_FILE)


def load_weights(folder: str | Path, model: nn.Module, config: ModelConfig) -> None:
    """Load a model folder's weights into ``model``, refusing weights written for another config."""
    path = Path(folder) / WEIGHTS_FILE
    if not path.exists():
        raise ValueError(f"{path}: not found (has train_diffusion run?)")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved["digest"] != config_digest(config):
        raise ValueError(f"{path}: weights do not match {CONFIG_FILE} (digest differs)")
    model.load_state_dict(saved["state_dict"])
