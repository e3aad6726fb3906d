"""The downstream multi-label finding classifier and its masked loss (torch only, no file I/O).

Every architecture is a MONAI DenseNet with one input channel and one logit per finding:
``densenet_small`` is sized for 64 px images on a CPU, ``densenet121`` is the GPU profile's.
``densenet_small_stride2`` is ``densenet_small`` without the stem's max-pool: its first dense block
sees the image at half resolution instead of a quarter, so a 2-5 px nodule at 64 px still covers
a few cells of the maps the dense blocks learn from.
"""

from __future__ import annotations

import torch
from monai.networks.nets import DenseNet, DenseNet121
from torch import nn
from torch.nn import functional as F

from cxrsynth.tasks.findings import FINDINGS

# One dense block fewer and a fraction of DenseNet121's width (0.2 M parameters, 164 features):
# at 64 px the stem leaves 16 x 16 maps and two transitions bring them to 4 x 4; an epoch over
# ~1000 images takes about 2 s on one CPU thread.
SMALL_DENSENET = {"init_features": 32, "growth_rate": 12, "block_config": (4, 8, 8), "bn_size": 4}
ARCHITECTURES = ("densenet_small", "densenet_small_stride2", "densenet121")


class FindingClassifier(nn.Module):
    """A MONAI DenseNet producing ``len(FINDINGS)`` logits, with access to its penultimate features."""

    def __init__(self, network: DenseNet, architecture: str) -> None:
        super().__init__()
        self.network = network
        self.architecture = architecture
        self.feature_dim: int = network.class_layers.out.in_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled activations before the last linear layer: (B, feature_dim)."""
        layers = self.network.class_layers
        return layers.flatten(layers.pool(layers.relu(self.network.features(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        # The last layer in float32 even under autocast: bf16 logits would round probabilities into
        # ties that change an AUROC; the layer is a few thousand weights, so it costs nothing.
        with torch.autocast(x.device.type, enabled=False):
            return self.network.class_layers.out(features.float())


def build_classifier(architecture: str) -> FindingClassifier:
    """A freshly initialised classifier (seed torch first for reproducible weights)."""
    outputs = len(FINDINGS)
    if architecture in ("densenet_small", "densenet_small_stride2"):
        network = DenseNet(spatial_dims=2, in_channels=1, out_channels=outputs, **SMALL_DENSENET)
        if architecture == "densenet_small_stride2":
            # MONAI's stem is conv 7x7/2 then max-pool 3x3/2; without the pool the 7x7 conv, wider than its
            # stride, is the only downsampling before the first dense block and drops no pixel unseen.
            network.features.pool0 = nn.Identity()
    elif architecture == "densenet121":
        network = DenseNet121(spatial_dims=2, in_channels=1, out_channels=outputs, pretrained=False)
    else:
        raise ValueError(f"unknown classifier architecture {architecture!r}; expected one of {', '.join(ARCHITECTURES)}")
    return FindingClassifier(network, architecture)


def known_labels(labels: torch.Tensor) -> torch.Tensor:
    """Where a label is usable: 0 or 1. NaN (not mentioned, or uncertain ignored) and -1 are not."""
    return (labels == 0) | (labels == 1)


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy over the known labels only; 0 (with a gradient) when none is known."""
    known = known_labels(labels)
    targets = torch.where(known, labels, torch.zeros_like(labels))
    losses = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction="none")
    return (losses * known).sum() / known.sum().clamp(min=1)
