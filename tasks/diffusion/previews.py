"""The sample grid logged while training: a few real training images (row 1), then the same
images' conditions sampled under every condition type the model has, one row per type, and a last
row with every condition dropped. Mask rows show the conditioning mask outlined in red."""

from __future__ import annotations

from typing import get_args

import numpy as np
import torch
from torch.utils.data import default_collate

from cxrsynth.models.conditioning import Conditions, concatenate
from cxrsynth.tasks.diffusion.data import DiffusionDataset, batch_conditions
from cxrsynth.tasks.diffusion.grids import outlined, tile
from cxrsynth.tasks.diffusion.pipeline import GenerationPipeline
from cxrsynth.tasks.params import ConditionType

UNCONDITIONAL = "none"


def condition_types(conditions: list[str] | tuple[str, ...]) -> list[str]:
    """Every condition type (label, mask, text and their hybrids) the configured conditions allow."""
    return [t for t in get_args(ConditionType) if set(t.split("+")) <= set(conditions)]


def preview_indices(dataset: DiffusionDataset, count: int) -> list[int]:
    """Up to ``count`` images, first those whose complete masks show findings not yet shown."""
    chosen: list[int] = []
    shown: set[int] = set()
    for index in range(len(dataset)):
        item = dataset[index]
        findings = set(torch.nonzero(item["masks"].flatten(1).amax(dim=1)).flatten().tolist())
        if item["mask_known"] and findings - shown:
            chosen.append(index)
            shown |= findings
        if len(chosen) == count or len(shown) == item["masks"].shape[0]:
            break
    return chosen + [i for i in range(len(dataset)) if i not in chosen][: count - len(chosen)]


def preview_grid(pipeline: GenerationPipeline, dataset: DiffusionDataset, indices: list[int], steps: int,
                 guidance_scale: float, seed: int = 0) -> np.ndarray:
    """RGB grid: real images, then one row per condition type, then unconditional samples, sampled
    with the DPM-Solver sampler on the pipeline's device."""
    batch = default_collate([dataset[i] for i in indices])
    full = batch_conditions(batch)
    rows = [*condition_types(pipeline.config.conditions), UNCONDITIONAL]
    cond: Conditions = concatenate([full.keeping(() if r == UNCONDITIONAL else tuple(r.split("+"))) for r in rows])
    seeds = [seed + i for i in range(len(indices))] * len(rows)
    images = pipeline.with_sampler("dpm_solver")(cond, seeds, steps, guidance_scale)[:, 0].numpy()
    lesions = batch["masks"].amax(dim=1).numpy()
    tiles = [outlined((batch["image"][i, 0].numpy() + 1) / 2, lesions[i]) for i in range(len(indices))]
    for r, row in enumerate(rows):
        for i in range(len(indices)):
            shown = lesions[i] if "mask" in row.split("+") and bool(full.keep_mask[i]) else None
            tiles.append(outlined(images[r * len(indices) + i], shown))
    return tile(tiles, columns=len(indices), row_labels=["real", *rows])
