"""Drawing the reader study: a blinded, seeded, shuffled set of real and synthetic radiographs and
the key that says which is which.

Every image is encoded the same way (8-bit greyscale PNG, no metadata) so nothing in the page
tells real from synthetic; items are numbered in a seeded random order. The key is written apart
from the page, outside the folder handed to readers.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxrsynth.tasks.io import write_json, write_text
from cxrsynth.tasks.reader_study.page import SOURCES, render_page


@dataclass(frozen=True)
class Candidate:
    """One image that may enter the study: its pixels (H, W) in [0, 1], source, finding and id, and
    for a synthetic image the condition type it was generated under."""

    image: np.ndarray
    source: str
    finding: str
    image_id: str
    condition_type: str | None = None


def png_base64(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def candidates(images: np.ndarray, frame: pd.DataFrame, findings: Sequence[str], source: str) -> list[Candidate]:
    """One candidate per manifest row, with its image, its finding (one name per row, as the figures
    name it) and, for synthetic rows, the ``condition_type`` column."""
    if source not in SOURCES:
        raise ValueError(f"reader study: source {source!r} is neither of {SOURCES}")
    conditions = (frame["condition_type"].tolist() if source == "synthetic" and "condition_type" in frame
                  else [None] * len(frame))
    return [Candidate(image, source, finding, str(image_id), None if pd.isna(condition) else str(condition))
            for image, finding, image_id, condition in zip(images, findings, frame["image_id"], conditions)]


def pick_real(real: Sequence[Candidate], rare: Sequence[str], per_source: int) -> list[Candidate]:
    """Real images of the rare findings when there are enough of them to fill the study (so readers
    compare like with like), else every real candidate."""
    with_rare = [c for c in real if c.finding in rare]
    return with_rare if len(with_rare) >= per_source else list(real)


def build_study(real: Sequence[Candidate], synthetic: Sequence[Candidate], per_source: int, seed: int) -> tuple[list[dict], dict]:
    """Draw up to ``per_source`` images of each source (seeded), shuffle them together and number
    them; return the page's items (no truth in them) and the key."""
    rng = np.random.default_rng(seed)
    chosen = [pool[i] for pool in (real, synthetic) for i in sorted(rng.permutation(len(pool))[:per_source])]
    order = rng.permutation(len(chosen))
    items, key_items = [], {}
    for number, index in enumerate(order, start=1):
        candidate = chosen[index]
        item = f"item-{number:03d}"
        items.append({"item": item, "finding": candidate.finding, "png": png_base64(candidate.image)})
        key_items[item] = {"truth": candidate.source, "finding": candidate.finding, "image_id": candidate.image_id}
    # the id hashes truth, finding and image id only, so adding fields to the key keeps a study's id
    study = hashlib.sha256(json.dumps(key_items, sort_keys=True).encode()).hexdigest()[:12]
    for item, index in zip(key_items, order):
        key_items[item]["condition_type"] = chosen[index].condition_type
    return items, {"study": study, "items": key_items}


def write_study(items: list[dict], key: dict, page_path: str | Path, key_path: str | Path) -> None:
    """The page for readers and, in another place, the key."""
    if Path(key_path).resolve().parent == Path(page_path).resolve().parent:
        raise ValueError(f"reader study: the key {key_path} must not sit beside the page {page_path} readers get")
    write_text(page_path, render_page(items, key["study"]))
    write_json(key_path, key)
