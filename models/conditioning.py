"""What conditions one denoiser call: labels, lesion masks and text, each with a per-image "given" flag.

A flag set to False means the condition is dropped: the denoiser then sees its learned null
embedding (labels, text) or an all-zero mask with the "mask given" channel at 0. Classifier-free
guidance contrasts a batch with some flags on against the same batch with every flag off.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

# Index vocabularies of the label embeddings; index 0 always means "unknown / not mentioned".
STATE_INDEX = {None: 0, 0: 1, 1: 2, -1: 3}  # manifest state -> embedding row
N_STATES = len(STATE_INDEX)
LATERALITY_INDEX = {None: 0, "left": 1, "right": 2, "bilateral": 3}
N_LATERALITIES = len(LATERALITY_INDEX)
SEVERITY_INDEX = {None: 0, "mild": 1, "moderate": 2, "severe": 3}
N_SEVERITIES = len(SEVERITY_INDEX)

CONDITION_NAMES = ("label", "mask", "text")


@dataclass(frozen=True)
class Conditions:
    """A batch of conditions. Shapes: B images, F findings, L text tokens, H x W pixels."""

    states: torch.Tensor  # (B, F) long, STATE_INDEX
    laterality: torch.Tensor  # (B, F) long, LATERALITY_INDEX
    severity: torch.Tensor  # (B, F) long, SEVERITY_INDEX
    masks: torch.Tensor  # (B, F, H, W) float 0/1
    text_ids: torch.Tensor  # (B, L) long
    text_attention: torch.Tensor  # (B, L) bool, True on real tokens
    keep_label: torch.Tensor  # (B,) bool
    keep_mask: torch.Tensor  # (B,) bool
    keep_text: torch.Tensor  # (B,) bool

    def __len__(self) -> int:
        return self.states.shape[0]

    def to(self, device: torch.device | str) -> "Conditions":
        return Conditions(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def keeping(self, names: tuple[str, ...] | list[str] | set[str]) -> "Conditions":
        """The same batch with only ``names`` kept (where they were kept before) and the rest dropped."""
        unknown = set(names) - set(CONDITION_NAMES)
        if unknown:
            raise ValueError(f"unknown condition names {sorted(unknown)}; expected a subset of {CONDITION_NAMES}")
        return replace(
            self,
            **{f"keep_{name}": getattr(self, f"keep_{name}") & (name in names) for name in CONDITION_NAMES},
        )

    def dropped(self) -> "Conditions":
        """Every condition dropped: the unconditional branch of classifier-free guidance."""
        return self.keeping(())

    def with_keep(self, label: torch.Tensor, mask: torch.Tensor, text: torch.Tensor) -> "Conditions":
        """AND the given per-image flags into the current ones (condition dropout in training)."""
        return replace(self, keep_label=self.keep_label & label, keep_mask=self.keep_mask & mask,
                       keep_text=self.keep_text & text)


def concatenate(parts: list[Conditions]) -> Conditions:
    """Stack batches along the batch axis (e.g. the cond and uncond halves of guidance)."""
    return Conditions(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Conditions)})
