"""Building the denoiser from its config, the digest that identifies that config, and the model folder.

The config holds everything that shapes the weights or gives them meaning (network widths, the
conditions, the text encoder and its vocabulary size, the image size, the diffusion process); its
digest is stored in every checkpoint so a run never resumes from weights of a different model.
The model folder (``data/train_diffusion/model``) holds the EMA weights, the config and the
tokenizer: everything ``generate`` needs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from cxrsynth.models.condition_encoders import LearnedTextEncoder, PretrainedTextEncoder
from cxrsynth.models.denoiser import ConditionalDenoiser
from cxrsynth.tasks.diffusion.schedulers import Process
from cxrsynth.tasks.diffusion.tokenizer import PRETRAINED_FOLDER, Tokenizer, load_tokenizer
from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks import torch_files
from cxrsynth.tasks.io import write_json
from cxrsynth.tasks.params import DiffusionParams

WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "config.json"


def model_config(diffusion: DiffusionParams, image_size: int, tokenizer: Tokenizer, maskable: list[str]) -> dict:
    """The params that shape the model, plus what the data fixed: image size, vocabulary size, and the
    findings that have masks (the meaning of a "complete" conditioning mask)."""
    text = diffusion.text_encoder
    return {
        "image_size": image_size,
        "findings": list(FINDINGS),
        "maskable": list(maskable),
        "conditions": list(diffusion.conditions),
        "label_dim": diffusion.label_dim,
        "unet": diffusion.unet.model_dump(mode="json"),
        "text_encoder": {
            "kind": text.kind,
            "path": text.path if text.kind == "pretrained" else None,
            "source": text.source,
            "max_tokens": text.max_tokens,
            "dim": text.dim,
            "layers": text.layers,
            "vocab_size": tokenizer.vocab_size,
        },
        "process": Process(diffusion.timesteps, diffusion.schedule, diffusion.prediction).as_dict(),
    }


def config_digest(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def process_of(config: dict) -> Process:
    return Process(**config["process"])


def load_text_backbone(path: str | Path) -> nn.Module:
    """A pretrained transformers encoder from a local folder; never downloads."""
    from transformers import AutoModel

    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"diffusion.text_encoder.path: {path} is not a folder holding a pretrained encoder")
    return AutoModel.from_pretrained(str(path), local_files_only=True)


def text_backbone_skeleton(folder: str | Path) -> nn.Module:
    """The pretrained encoder's architecture from the config saved in a model folder (weights come later)."""
    from transformers import AutoConfig, AutoModel

    return AutoModel.from_config(AutoConfig.from_pretrained(str(folder), local_files_only=True))


def build_model(config: dict, text_backbone: nn.Module | None = None) -> ConditionalDenoiser:
    """A fresh denoiser for ``config``; a pretrained text encoder needs its ``text_backbone``."""
    text = config["text_encoder"]
    encoder = None
    if "text" in config["conditions"]:
        if text["kind"] == "learned":
            encoder = LearnedTextEncoder(text["vocab_size"], text["max_tokens"], text["dim"], text["layers"],
                                         config["label_dim"])
        elif text_backbone is None:
            raise ValueError("a pretrained text encoder needs its backbone")
        else:
            encoder = PretrainedTextEncoder(text_backbone, text_backbone.config.hidden_size, text["max_tokens"],
                                            config["label_dim"])
    unet = config["unet"]
    return ConditionalDenoiser(
        n_findings=len(config["findings"]), context_dim=config["label_dim"], channels=tuple(unet["channels"]),
        attention_levels=tuple(unet["attention_levels"]), num_res_blocks=unet["num_res_blocks"],
        num_head_channels=unet["num_head_channels"], norm_num_groups=unet["norm_num_groups"],
        conditions=tuple(config["conditions"]), text_encoder=encoder,
    )


def save_model(folder: str | Path, model: ConditionalDenoiser, config: dict, tokenizer: Tokenizer) -> None:
    """Write the weights, config and tokenizer that ``load_model`` reads back."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch_files.save({"state_dict": model.state_dict(), "digest": config_digest(config)}, folder / WEIGHTS_FILE)
    write_json(folder / CONFIG_FILE, {**config, "digest": config_digest(config)})
    tokenizer.save(folder)
    encoder = model.text_encoder
    if isinstance(encoder, PretrainedTextEncoder):
        encoder.backbone.config.save_pretrained(str(folder / PRETRAINED_FOLDER))


def read_config(folder: str | Path) -> dict:
    """A model folder's config (without its digest), checking the weights are there too."""
    folder = Path(folder)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (folder / name).exists():
            raise ValueError(f"{folder / name}: not found (has train_diffusion run?)")
    config = json.loads((folder / CONFIG_FILE).read_text())
    config.pop("digest", None)
    return config


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> tuple[ConditionalDenoiser, dict, Tokenizer]:
    """The trained denoiser (eval mode), its config and tokenizer from a model folder."""
    folder = Path(folder)
    config = read_config(folder)
    backbone = None
    if "text" in config["conditions"] and config["text_encoder"]["kind"] == "pretrained":
        backbone = text_backbone_skeleton(folder / PRETRAINED_FOLDER)
    model = build_model(config, backbone)
    saved = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    if saved["digest"] != config_digest(config):
        raise ValueError(f"{folder / WEIGHTS_FILE}: weights do not match {CONFIG_FILE} (digest differs)")
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval(), config, load_tokenizer(folder)
