"""Training data of the diffusion model: the real training split as conditioned samples.

Each sample: the image in [-1, 1], its per-finding masks, whether those masks are complete (every
present finding that the data set masks at all has a non-empty mask: only then may they condition
the image, and an empty given mask then truthfully says "no lesion"), the label indices, and the
tokenized text; in latent space also the image's cached, scaled latent (``latent``), which is what
the model diffuses there. Findings the training split never masks (e.g. cardiomegaly when no source
outlines hearts) do not count against completeness.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from cxrsynth.models.conditioning import STATE_INDEX, Conditions
from cxrsynth.tasks.datasets import ManifestImages
from cxrsynth.tasks.diffusion.labels import attribute_indices, label_attributes, state_indices
from cxrsynth.tasks.diffusion.tokenizer import Tokenizer
from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.io import read_mask

PRESENT_ROW = STATE_INDEX[1]


def training_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The real images of the training split; nothing else ever trains the generator."""
    rows = frame[(frame["split"] == "train") & (frame["source"] == "real")].reset_index(drop=True)
    if rows.empty:
        raise ValueError("the manifest has no real images in the train split to train the diffusion model on")
    return rows


def readable_rows(frame: pd.DataFrame, root: str | Path) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """The rows whose image (and mask, if any) can be read, and the quarantined rest as
    ``{"image_id", "reason"}`` (no file names: they can embed patient identifiers)."""
    images = ManifestImages(frame.reset_index(drop=True), root)
    good, quarantined = [], []
    for index in range(len(images)):
        try:
            images[index]
        except (OSError, ValueError) as error:
            quarantined.append({"image_id": str(images.frame.at[index, "image_id"]),
                                "reason": f"unreadable image or mask ({type(error).__name__})"})
        else:
            good.append(index)
    return images.frame.iloc[good].reset_index(drop=True), quarantined


def texts_of(frame: pd.DataFrame, source: str) -> list[str | None]:
    """The conditioning text of each row (``prompt`` or ``report`` column), None where missing."""
    if source not in frame.columns:
        raise ValueError(f"diffusion.text_encoder.source: the manifest has no {source!r} column")
    return [None if pd.isna(text) else str(text) for text in frame[source]]


def maskable_findings(frame: pd.DataFrame, root: str | Path) -> list[str]:
    """The findings with lesion pixels in at least one label map of ``frame``."""
    bits = 0
    for path in frame["mask_path"].dropna():
        bits |= int(np.bitwise_or.reduce(read_mask(Path(root) / path), axis=None))
    return [f for i, f in enumerate(FINDINGS) if bits >> i & 1]


def masks_complete(masks: torch.Tensor, states: torch.Tensor, maskable: torch.Tensor) -> bool:
    """Whether every present, maskable finding has lesion pixels in its mask channel."""
    has_pixels = masks.flatten(1).amax(dim=1) > 0
    return bool((has_pixels | (states != PRESENT_ROW) | ~maskable).all())


class DiffusionDataset(Dataset):
    def __init__(self, frame: pd.DataFrame, root: str | Path, tokenizer: Tokenizer, text_source: str = "prompt",
                 cache: bool = True, lesions: pd.DataFrame | None = None) -> None:
        """``lesions``: prepare_masks' lesion table, whose masks fill the attributes reports leave out."""
        self.frame = frame.reset_index(drop=True)
        self.rows = ManifestImages(self.frame, root)
        self.maskable = maskable_findings(self.frame, root)
        self.maskable_flags = torch.tensor([f in self.maskable for f in FINDINGS])
        self.states = torch.from_numpy(state_indices(self.frame))
        lesions = lesions if lesions is not None else pd.DataFrame(columns=["image_id", "finding"])
        attributes = attribute_indices(label_attributes(self.frame, lesions))
        self.laterality = torch.from_numpy(attributes["laterality"])
        self.severity = torch.from_numpy(attributes["severity"])
        self.text = tokenizer.encode(texts_of(self.frame, text_source))
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = {} if cache else None
        # Latent space: every image's scaled latent (N, C, h, w), encoded once before training.
        self.latents: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.frame)

    def pixels(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Image in [-1, 1] (1, H, W) and masks (F, H, W) uint8, from memory once read."""
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        item = self.rows[index]
        pixels = (item["image"] * 2 - 1, item["mask"].to(torch.uint8))
        if self.cache is not None:
            self.cache[index] = pixels
        return pixels

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, masks = self.pixels(index)
        states = self.states[index]
        latent = {} if self.latents is None else {"latent": self.latents[index]}
        return {
            **latent,
            "image": image,
            "masks": masks.float(),
            "mask_known": torch.tensor(masks_complete(masks, states, self.maskable_flags)),
            "states": states,
            "laterality": self.laterality[index],
            "severity": self.severity[index],
            "text_ids": self.text["text_ids"][index],
            "text_attention": self.text["text_attention"][index],
            "text_present": self.text["text_present"][index],
        }


def diffused(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """What the model diffuses: the latents in latent space, else the images."""
    return batch["latent"] if "latent" in batch else batch["image"]


def batch_conditions(batch: dict[str, torch.Tensor]) -> Conditions:
    """The full conditions of a collated batch (before any dropout)."""
    return Conditions(
        states=batch["states"], laterality=batch["laterality"], severity=batch["severity"],
        masks=batch["masks"], text_ids=batch["text_ids"], text_attention=batch["text_attention"],
        keep_label=torch.ones_like(batch["mask_known"]), keep_mask=batch["mask_known"],
        keep_text=batch["text_present"],
    )


def condition_keep(batch_size: int, rates: dict[str, float], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Independent per-image, per-condition dropout: True where the condition is kept."""
    draws = torch.rand(len(rates), batch_size, generator=generator)
    return {name: draws[i] >= rate for i, (name, rate) in enumerate(rates.items())}


class StepBatches(Sampler[list[int]]):
    """Index batches for training steps ``start`` .. ``stop - 1``.

    Step s's batch depends only on (seed, s): each epoch is a permutation seeded by (seed, epoch),
    so a run resumed at step s sees exactly the batches the uninterrupted run would have. Of
    ``world_size`` data-parallel processes, process ``rank`` gets rows rank, rank + world_size, ...
    """

    def __init__(self, n_items: int, batch_size: int, seed: int, start: int, stop: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if n_items < 1:
            raise ValueError("no training images")
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.start, self.stop = start, stop
        self.rank, self.world_size = rank, world_size
        self.per_epoch = max(1, n_items // batch_size)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def order(self, epoch: int) -> np.ndarray:
        permutation = np.random.default_rng([self.seed, epoch]).permutation(self.n_items)
        return np.resize(permutation, max(self.n_items, self.batch_size))  # tiles a set smaller than a batch

    def batch(self, step: int) -> list[int]:
        epoch, position = divmod(step, self.per_epoch)
        order = self.order(epoch)
        return order[position * self.batch_size:(position + 1) * self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield self.batch(step)[self.rank::self.world_size]
