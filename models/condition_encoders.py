"""Condition encoders: finding labels and text, each to context tokens of width ``dim``.

Each encoder owns learned null tokens that replace its output for images whose condition is
dropped, so classifier-free guidance can switch every condition off independently.
"""

from __future__ import annotations

import torch
from torch import nn

from cxrsynth.models.conditioning import N_LATERALITIES, N_SEVERITIES, N_STATES


def _heads(width: int) -> int:
    """The most attention heads that divide ``width`` with at least 32 channels each."""
    return next((h for h in (8, 4, 2) if width % h == 0 and width // h >= 32), 1)


class LabelEncoder(nn.Module):
    """One context token per finding: finding identity + its state, laterality and severity.

    The state, laterality and severity tables are per finding (a "severe" cardiomegaly and a
    "severe" pneumothorax are different things), stored as one embedding with a per-finding offset.
    """

    def __init__(self, n_findings: int, dim: int) -> None:
        super().__init__()
        self.n_findings = n_findings
        self.identity = nn.Parameter(torch.randn(n_findings, dim) * 0.02)
        self.state = nn.Embedding(n_findings * N_STATES, dim)
        self.laterality = nn.Embedding(n_findings * N_LATERALITIES, dim)
        self.severity = nn.Embedding(n_findings * N_SEVERITIES, dim)
        self.null = nn.Parameter(torch.randn(n_findings, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.register_buffer("finding_rows", torch.arange(n_findings), persistent=False)

    def forward(self, states: torch.Tensor, laterality: torch.Tensor, severity: torch.Tensor,
                keep: torch.Tensor) -> torch.Tensor:
        rows = self.finding_rows
        tokens = (
            self.identity
            + self.state(rows * N_STATES + states)
            + self.laterality(rows * N_LATERALITIES + laterality)
            + self.severity(rows * N_SEVERITIES + severity)
        )
        tokens = self.norm(tokens)
        return torch.where(keep[:, None, None], tokens, self.null.to(tokens.dtype).expand_as(tokens))


class LearnedTextEncoder(nn.Module):
    """A small transformer over word-token ids, trained with the denoiser from the training reports."""

    def __init__(self, vocab_size: int, max_tokens: int, width: int, layers: int, out_dim: int,
                 pad_id: int = 0) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width, padding_idx=pad_id)
        self.position = nn.Parameter(torch.randn(max_tokens, width) * 0.02)
        block = nn.TransformerEncoderLayer(width, _heads(width), dim_feedforward=4 * width, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.project = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, out_dim))
        self.null = nn.Parameter(torch.randn(max_tokens, out_dim) * 0.02)

    def forward(self, ids: torch.Tensor, attention: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(ids) + self.position[: ids.shape[1]]
        # A row with no real token (no text) would make every key masked and the softmax NaN;
        # those rows are replaced by the null tokens below, so let them attend to everything.
        padding = ~attention & attention.any(dim=1, keepdim=True)
        hidden = self.transformer(hidden, src_key_padding_mask=padding)
        tokens = self.project(hidden) * attention[..., None]
        null = self.null[: ids.shape[1]].to(tokens.dtype).expand_as(tokens)
        return torch.where(keep[:, None, None], tokens, null)


class PretrainedTextEncoder(nn.Module):
    """A pretrained transformers encoder (frozen) with a learned projection to the context width.

    The backbone is passed in already built (loading from a local path is file I/O and lives in
    ``tasks.diffusion``); it stays frozen because a radiology BERT is far larger than what the
    phantom-scale data could fine-tune, and freezing keeps a training step cheap.
    """

    def __init__(self, backbone: nn.Module, hidden_size: int, max_tokens: int, out_dim: int) -> None:
        super().__init__()
        self.backbone = backbone.requires_grad_(False).eval()
        self.project = nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, out_dim))
        self.null = nn.Parameter(torch.randn(max_tokens, out_dim) * 0.02)

    def train(self, mode: bool = True) -> "PretrainedTextEncoder":
        super().train(mode)
        self.backbone.eval()  # frozen: dropout stays off
        return self

    def forward(self, ids: torch.Tensor, attention: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            hidden = self.backbone(input_ids=ids, attention_mask=attention.long()).last_hidden_state
        tokens = self.project(hidden) * attention[..., None]
        null = self.null[: ids.shape[1]].to(tokens.dtype).expand_as(tokens)
        return torch.where(keep[:, None, None], tokens, null)
