"""The downstream multi-label finding classifier and its masked loss (torch only, no file I/O).

Every architecture is a MONAI DenseNet with one input channel and one logit per finding:
``densenet_small`` is sized for 64 px images on a CPU, ``densenet121`` is the GPU profile's.
``densenet_small_stride2`` is ``densenet_small`` without the stem's max-pool: its first dense block
sees the image at half resolution instead of a quarter, so a 2-5 px nodule at 64 px still covers
a few cells of the maps the dense blocks learn from.

With ``lesion_head`` a classifier also maps its final feature map to one lesion logit per finding
and cell (a 1x1 convolution): trained against the lesion masks (``lesion_loss``) it is told *where*
a finding is, which a 2-5 px nodule's image label alone does not teach a small network (issue 14).
The class logits are unchanged by the head, so evaluation and inference never use it.
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
    """A MONAI DenseNet producing ``len(FINDINGS)`` logits, with access to its penultimate features
    and, when built with ``lesion_head``, per-finding lesion logits on its final feature map."""

    def __init__(self, network: DenseNet, architecture: str, lesion_head: bool = False) -> None:
        super().__init__()
        self.network = network
        self.architecture = architecture
        self.feature_dim: int = network.class_layers.out.in_features
        # Absent (not merely unused) when off: the state dict, checkpoints and their digests of a
        # classifier without it stay what they were.
        self.lesion_head = nn.Conv2d(self.feature_dim, len(FINDINGS), kernel_size=1) if lesion_head else None

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The final feature map after the last norm and ReLU, before pooling: (B, feature_dim, h, w)."""
        return self.network.class_layers.relu(self.network.features(x))

    def _pooled(self, maps: torch.Tensor) -> torch.Tensor:
        layers = self.network.class_layers
        return layers.flatten(layers.pool(maps))

    def _class_logits(self, features: torch.Tensor) -> torch.Tensor:
        # The last layer in float32 even under autocast: bf16 logits would round probabilities into
        # ties that change an AUROC; the layer is a few thousand weights, so it costs nothing.
        with torch.autocast(features.device.type, enabled=False):
            return self.network.class_layers.out(features.float())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled activations before the last linear layer: (B, feature_dim)."""
        return self._pooled(self.feature_maps(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._class_logits(self.features(x))

    def logits_and_lesion_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (B, F) and lesion logits (B, F, h, w) on the final feature map's grid, from one
        forward pass (training with ``lesion_loss``)."""
        if self.lesion_head is None:
            raise ValueError("this classifier has no lesion head (build it with lesion_head=True: classifier.lesion_weight > 0)")
        maps = self.feature_maps(x)
        return self._class_logits(self._pooled(maps)), self.lesion_head(maps)


def build_classifier(architecture: str, lesion_head: bool = False) -> FindingClassifier:
    """A freshly initialised classifier (seed torch first for reproducible weights); ``lesion_head``
    adds the per-finding lesion map head (its weights drawn after the network's, so the network's
    initial weights are the same with and without it)."""
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
    return FindingClassifier(network, architecture, lesion_head)


def known_labels(labels: torch.Tensor) -> torch.Tensor:
    """Where a label is usable: 0 or 1. NaN (not mentioned, or uncertain ignored) and -1 are not."""
    return (labels == 0) | (labels == 1)


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy over the known labels only; 0 (with a gradient) when none is known."""
    known = known_labels(labels)
    targets = torch.where(known, labels, torch.zeros_like(labels))
    losses = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction="none")
    return (losses * known).sum() / known.sum().clamp(min=1)


def lesion_loss(maps: torch.Tensor, masks: torch.Tensor, known: torch.Tensor,
                pos_weight: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Mean binary cross-entropy of lesion logits ``maps`` (B, F, h, w) against lesion masks ``masks``
    (B, F, H, W), over the (row, finding) pairs where ``known`` (B, F) holds; 0 (with a gradient) when
    none does. A cell's target is 1 where any of its pixels is lesion (masks max-pooled to the maps'
    grid: a 3 px nodule still marks its cell); ``pos_weight`` weighs those cells, which are few."""
    targets = F.adaptive_max_pool2d(masks.float(), maps.shape[-2:])
    weight = torch.as_tensor(pos_weight, dtype=torch.float32, device=maps.device)
    cells = F.binary_cross_entropy_with_logits(maps.float(), targets, pos_weight=weight, reduction="none")
    known = known.to(cells.dtype)
    return (cells.mean(dim=(2, 3)) * known).sum() / known.sum().clamp(min=1)
