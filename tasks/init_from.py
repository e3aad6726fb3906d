"""Starting training from pretrained weights: ``diffusion.init_from`` and ``autoencoder.init_from``.

A source is a local path, one of:

- a model folder of this project (``config.json`` + ``model.pt``), a training checkpoint
  (``step_*.pt``: its EMA weights) or a folder of them (the newest). Its config must equal the one
  being trained, apart from ``mask_control`` (the mask's way in, see ``diffusion_source``); a config
  that differs elsewhere is refused, naming each differing key.
- a MONAI bundle folder in the layout of MONAI's MIMIC-CXR latent diffusion bundle
  (``cxr_image_synthesis_latent_diffusion_model``): ``configs/`` (``inference.json``) and
  ``models/autoencoder.pth`` and ``models/diffusion_model.pth``, plain state dicts of MONAI's
  ``AutoencoderKL`` and ``DiffusionModelUNet``. State dicts in MONAI Generative's older key names (what
  that bundle ships; its ``load_old`` switch) are renamed by the network's own ``load_old_state_dict``,
  on a network built from the bundle config's definition.

Weights whose name and shape match are loaded; every other weight is listed by name with both shapes
(``InitReport``), printed, and returned for the caller to log. The bundle's text encoder is not part of
the bundle (its config loads CLIP from ``stabilityai/stable-diffusion-2-1-base``); a local copy of that
folder serves as ``diffusion.text_encoder.path`` (``tasks.diffusion.tokenizer.pretrained_folders``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
from pydantic import ValidationError
from torch import nn

from cxrsynth.tasks.diffusion.checkpoints import config_differences, latest_checkpoint
from cxrsynth.tasks.diffusion.model_io import CONFIG_FILE, WEIGHTS_FILE, ModelConfig

BUNDLE_CONFIGS = "configs"
BUNDLE_WEIGHTS = {"diffusion": "models/diffusion_model.pth", "autoencoder": "models/autoencoder.pth"}
BUNDLE_NETWORKS = {"diffusion": DiffusionModelUNet, "autoencoder": AutoencoderKL}
DIFFUSION_PREFIX = "unet."  # the U-Net's place inside ConditionalDenoiser
MAY_DIFFER = {"mask_control"}  # config keys a project source may differ in (conv_in is adapted, see below)
REPORT_FILE = "init_from.json"

Shape = tuple[int, ...]
Adapter = Callable[[str, torch.Tensor, torch.Tensor], "torch.Tensor | None"]


@dataclass
class Unmatched:
    """A weight that did not load: ours (None: the source has it, we do not) against the source's."""

    name: str
    ours: Shape | None
    source: Shape | None


@dataclass
class InitReport:
    source: str
    kind: str  # "model folder", "checkpoint" or "MONAI bundle"
    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)  # loaded after an exact reshaping (see adapt_input_conv)
    not_loaded: list[Unmatched] = field(default_factory=list)  # ours, kept as initialised
    unused: list[Unmatched] = field(default_factory=list)  # the source's, with no place in ours

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"init_from {self.source} ({self.kind}): {len(self.loaded)} weights loaded"
                 + (f", {len(self.adapted)} adapted" if self.adapted else "")
                 + f", {len(self.not_loaded)} not loaded, {len(self.unused)} unused"]
        lines += [f"  not loaded {u.name}: ours {u.ours}, source {u.source}" for u in self.not_loaded]
        lines += [f"  unused {u.name}: source {u.source}" for u in self.unused]
        return "\n".join(lines)


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], source: str, kind: str,
                  adapt: Adapter | None = None) -> InitReport:
    """Copy into ``model`` each tensor of ``state`` whose name and shape match (or that ``adapt`` reshapes)."""
    report, ours = InitReport(source, kind), model.state_dict()
    for name, current in ours.items():
        theirs = state.get(name)
        if theirs is not None and theirs.shape == current.shape:
            ours[name] = theirs
            report.loaded.append(name)
        elif theirs is not None and adapt is not None and (fitted := adapt(name, current, theirs)) is not None:
            ours[name] = fitted
            report.adapted.append(name)
        else:
            report.not_loaded.append(Unmatched(name, tuple(current.shape), _shape(theirs)))
    report.unused = [Unmatched(name, None, _shape(value)) for name, value in state.items() if name not in ours]
    model.load_state_dict(ours)
    print(report.summary())
    return report


def _shape(tensor: torch.Tensor | None) -> Shape | None:
    return None if tensor is None else tuple(tensor.shape)


def adapt_input_conv(name: str, ours: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor | None:
    """The U-Net's first convolution across a change of ``mask_control``: the image channels come first,
    and the mask channels of a concat model are all zero when its mask is dropped. So keeping the image
    channels (concat -> controlnet) gives the concat model's mask-free predictions, and zero weights for
    new mask channels (controlnet -> concat) give the loaded model's. Anything else is not adapted."""
    if name != f"{DIFFUSION_PREFIX}conv_in.conv.weight" or ours.shape[:1] + ours.shape[2:] != theirs.shape[:1] + theirs.shape[2:]:
        return None
    fitted = torch.zeros_like(ours)
    channels = min(ours.shape[1], theirs.shape[1])
    fitted[:, :channels] = theirs[:, :channels]
    return fitted


# --- this project's model folders and checkpoints -------------------------------------------------

def _checkpoint_file(path: Path) -> Path | None:
    """``path`` itself if a checkpoint file, the newest checkpoint in it if a folder of them, else None."""
    if path.is_file():
        return path
    return latest_checkpoint(path) if path.is_dir() else None


def project_weights(path: Path) -> tuple[dict, dict[str, torch.Tensor], str]:
    """(config, state dict, kind) of a model folder or checkpoint of this project; a checkpoint gives its
    EMA weights (what a model folder would hold)."""
    if (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file():
        config = json.loads((path / CONFIG_FILE).read_text())
        config.pop("digest", None)
        return config, torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)["state_dict"], "model folder"
    checkpoint = _checkpoint_file(path)
    if checkpoint is None:
        raise ValueError(f"{path}: neither a model folder ({CONFIG_FILE} + {WEIGHTS_FILE}), a checkpoint, nor a "
                         f"MONAI bundle ({BUNDLE_CONFIGS}/ + models/)")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    ema = {name.removeprefix("module."): value for name, value in saved["ema"].items() if name != "n_averaged"}
    return saved["config"], ema, "checkpoint"


def refuse_other_config(source: dict, ours: dict, path: Path, key: str, may_differ: set[str] = frozenset()) -> None:
    """Refuse a source written for another config, naming every differing key."""
    differences = [line for line in config_differences(source, ours)
                   if line.split(":")[0].split(".")[0] not in may_differ]
    if differences:
        raise ValueError(f"{key}: {path} belongs to another config ({'; '.join(differences)}). "
                         "Set those params to the source's values, or start from scratch (init_from: null).")


# --- MONAI bundles -------------------------------------------------------------------------------

def is_bundle(path: Path) -> bool:
    return (path / BUNDLE_CONFIGS).is_dir() and (path / "models").is_dir()


def bundle_config(path: Path) -> dict:
    """The bundle's configs (inference first), merged: where its network definitions are."""
    files = sorted((path / BUNDLE_CONFIGS).glob("*"), key=lambda f: (f.stem != "inference", f.name))
    merged: dict = {}
    for file in files:
        if file.suffix == ".json":
            merged = {**json.loads(file.read_text()), **merged}
        elif file.suffix in (".yaml", ".yml"):
            merged = {**(yaml.safe_load(file.read_text()) or {}), **merged}
    return merged


def network_definition(config: dict, network: type[nn.Module]) -> dict | None:
    """The first component of a bundle config whose ``_target_`` is ``network`` (e.g. ``diffusion_def``)."""
    for value in config.values():
        if isinstance(value, dict) and str(value.get("_target_", "")).split(".")[-1] == network.__name__:
            return value
    return None


def _old_names(state: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict shows MONAI Generative's attention names (``proj_attn``, ``to_out.0``, or ``to_q``
    straight under the block rather than under its ``attn``)."""
    return any(".proj_attn." in name or ".to_out.0." in name
               or (name.endswith(".to_q.weight") and not name.split(".")[-3].startswith("attn")) for name in state)


def network_arguments(definition: dict, config: dict, where: Path) -> dict:
    """The keyword arguments of a bundle's network definition, ``@name`` references read from the config;
    ``$`` expressions are code and are not run."""
    arguments = {}
    for key, value in definition.items():
        if key.startswith("_"):
            continue
        if isinstance(value, str) and value.startswith("@") and value[1:] in config:
            value = config[value[1:]]
        if isinstance(value, str) and value.startswith("$"):
            raise ValueError(f"{where}: the network definition computes {key!r} ({value}); write it as a value")
        arguments[key] = value
    return arguments


def in_todays_names(state: dict[str, torch.Tensor], network: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` loaded into ``network`` (built as the bundle defines it) through MONAI's
    ``load_old_state_dict``, which renames older keys and takes today's as they are; read back out."""
    network.load_old_state_dict(dict(state))
    return network.state_dict()


def bundle_weights(path: Path, part: str) -> dict[str, torch.Tensor]:
    """The state dict of the bundle's ``part`` ("diffusion" or "autoencoder") in today's MONAI names."""
    weights = path / BUNDLE_WEIGHTS[part]
    if not weights.is_file():
        raise ValueError(f"{path}: a MONAI bundle without {BUNDLE_WEIGHTS[part]}")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if isinstance(state.get("state_dict"), dict):  # saved with its training metadata around it
        state = state["state_dict"]
    # Built at the bundle's own size (the MIMIC-CXR U-Net is large): renaming needs the network's structure.
    network, config = BUNDLE_NETWORKS[part], bundle_config(path)
    definition = network_definition(config, network)
    if definition is not None:
        built = network(**network_arguments(definition, config, path / BUNDLE_CONFIGS))
        try:
            return in_todays_names(state, built)
        except (KeyError, RuntimeError) as error:
            raise ValueError(f"{weights}: does not fit the bundle's own {network.__name__} definition "
                             f"({str(error).splitlines()[0]})") from None
    if _old_names(state):
        raise ValueError(f"{weights}: weights in MONAI Generative's older names, and no {network.__name__} "
                         f"definition in {path / BUNDLE_CONFIGS} to rename them with")
    return state


# --- the two entry points ------------------------------------------------------------------------

def _existing(path: str | Path, key: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{key}: {path} does not exist")
    return path


def init_diffusion(model: nn.Module, config: ModelConfig, path: str | Path) -> InitReport:
    """``diffusion.init_from``: load what matches into the denoiser ``model`` of ``config``."""
    path, key = _existing(path, "diffusion.init_from"), "diffusion.init_from"
    if is_bundle(path):
        state = {DIFFUSION_PREFIX + name: value for name, value in bundle_weights(path, "diffusion").items()}
        return load_matching(model, state, str(path), "MONAI bundle")
    source, state, kind = project_weights(path)
    try:
        source_config = ModelConfig.model_validate(source)
    except ValidationError as error:
        keys = sorted({".".join(map(str, e["loc"])) for e in error.errors()})
        raise ValueError(f"{key}: {path} is not a diffusion model of this project (its config: {keys})") from None
    refuse_other_config(source_config.model_dump(mode="json"), config.model_dump(mode="json"), path, key, MAY_DIFFER)
    return load_matching(model, state, str(path), kind, adapt_input_conv)


def init_autoencoder(autoencoder: nn.Module, config: dict, path: str | Path) -> InitReport:
    """``autoencoder.init_from``: load what matches into ``autoencoder`` (shape ``config``, the
    ``AutoencoderConfig`` as a dict)."""
    path, key = _existing(path, "autoencoder.init_from"), "autoencoder.init_from"
    if is_bundle(path):
        return load_matching(autoencoder, bundle_weights(path, "autoencoder"), str(path), "MONAI bundle")
    source, state, kind = project_weights(path)
    refuse_other_config({name: source.get(name) for name in config}, config, path, key)
    return load_matching(autoencoder, state, str(path), kind)
