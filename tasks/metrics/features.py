"""The radiograph feature space FID, KID, PRDC, the embedding and memorisation are measured in.

By default the real-only classifier's penultimate layer (a network that has seen only real
radiographs of this collection); or a pretrained radiograph network from a local file: a
TorchScript module mapping (B, 1, H, W) images in [0, 1] to (B, D) features, or a state dict of
MONAI's DenseNet121 (2-D, 1 or 3 input channels), whose pooled penultimate activations are used.
Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm


class FeatureNetwork(nn.Module):
    """(B, 1, H, W) images in [0, 1] -> (B, num_features), frozen; the ``num_features`` attribute is
    what torchmetrics' FID and KID read from a custom ``feature`` module."""

    def __init__(self, extractor: nn.Module, num_features: int, name: str) -> None:
        super().__init__()
        self.extractor = extractor.eval()
        self.num_features = int(num_features)
        self.name = name
        for parameter in self.extractor.parameters():
            parameter.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.extractor(images.float())
        return features.reshape(len(images), -1).float()


class _ClassifierPenultimate(nn.Module):
    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images)


class _DenseNetPenultimate(nn.Module):
    def __init__(self, densenet: nn.Module, in_channels: int) -> None:
        super().__init__()
        self.densenet = densenet
        self.in_channels = in_channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.in_channels != images.shape[1]:
            images = images.expand(-1, self.in_channels, -1, -1)
        pooled = self.densenet.features(images)
        head = self.densenet.class_layers
        return head.flatten(head.pool(head.relu(pooled)))


def classifier_features(classifier: nn.Module) -> FeatureNetwork:
    """The penultimate features of a project classifier (``features(x)``, ``feature_dim``)."""
    return FeatureNetwork(_ClassifierPenultimate(classifier), classifier.feature_dim, "real_only classifier")


def load_feature_network(path: str | Path, image_size: int) -> FeatureNetwork:
    """A pretrained radiograph network from a local TorchScript file or DenseNet121 state dict."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"evaluate.feature_network: {path} is not a file")
    try:
        scripted = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError:
        return _densenet_from_state_dict(path)
    with torch.no_grad():
        probe = scripted.eval()(torch.zeros(1, 1, image_size, image_size))
    return FeatureNetwork(scripted, probe.reshape(1, -1).shape[1], f"TorchScript {path.name}")


def _densenet_from_state_dict(path: Path) -> FeatureNetwork:
    from monai.networks.nets import DenseNet121

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"evaluate.feature_network: {path} is neither TorchScript nor a state dict ({exc})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or "features.conv0.weight" not in state or "class_layers.out.weight" not in state:
        raise ValueError(f"evaluate.feature_network: {path} is not a MONAI DenseNet121 state dict "
                         "(features.conv0.weight / class_layers.out.weight missing)")
    in_channels = state["features.conv0.weight"].shape[1]
    densenet = DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=state["class_layers.out.weight"].shape[0])
    densenet.load_state_dict(state)
    return FeatureNetwork(_DenseNetPenultimate(densenet, in_channels), densenet.class_layers.out.in_features,
                          f"DenseNet121 {path.name}")


def extract_features(
    network: FeatureNetwork, images: np.ndarray, batch_size: int = 64, device: torch.device | str = "cpu", label: str = "features"
) -> np.ndarray:
    """Features (N, D) of (N, H, W) images in [0, 1], in batches, with a progress bar."""
    network = network.to(device)
    chunks = []
    for start in tqdm(range(0, len(images), batch_size), desc=label, leave=False):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size], dtype=np.float32))[:, None]
        chunks.append(network(batch.to(device)).cpu().numpy())
    if not chunks:
        return np.zeros((0, network.num_features), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32)
