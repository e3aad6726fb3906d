"""A small stand-in for ``data/prepare_masks``: toy radiographs, label maps and a manifest, made in code.

The diffusion tests (and benchmarks) build their data with ``make_project`` so they do not depend
on the earlier stages: two dark lung fields in a bright thorax, a heart, and lesions with masks:
bright round nodules, dark apical pneumothoraces and bright basal effusions, with laterality and
severity in the manifest columns and a prompt worded like the generator's prompts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from cxrsynth.tasks import manifest
from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.io import write_mask, write_png16
from cxrsynth.tasks.masks import labelmap
from cxrsynth.tasks.masks.attributes import lesion_attributes
from cxrsynth.tasks.masks.geometry import Geometry
from cxrsynth.tasks.masks.prepare import LESION_COLUMNS, LESION_VALUE
from cxrsynth.tasks.params import DiffusionParams
from cxrsynth.tasks.reports.prompts import canonical_prompt
from cxrsynth.tasks.reports.records import FindingState

LESION_FINDINGS = ("nodule", "pneumothorax", "pleural_effusion")

# The test machine's cores are shared: one torch thread runs these tiny models several times faster
# than two threads that wait on each other.
torch.set_num_threads(1)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:size, 0:size].astype(np.float32) / size


def lungs(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The image-left (patient right) and image-right (patient left) lung fields."""
    y, x = _grid(size)
    right = ((y - 0.5) / 0.3) ** 2 + ((x - 0.31) / 0.14) ** 2 < 1
    left = ((y - 0.5) / 0.3) ** 2 + ((x - 0.69) / 0.14) ** 2 < 1
    return right, left


def _lesion(finding: str, lung: np.ndarray, rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    y, x = _grid(size)
    rows, cols = np.nonzero(lung)
    top, bottom = rows.min() / size, rows.max() / size
    if finding == "nodule":
        k = rng.integers(len(rows))
        radius = rng.uniform(0.03, 0.08)
        mask = ((y - rows[k] / size) ** 2 + (x - cols[k] / size) ** 2 < radius**2) & lung
        severity = "mild" if radius < 0.05 else "moderate" if radius < 0.065 else "severe"
    elif finding == "pneumothorax":
        depth = rng.uniform(0.1, 0.3)
        mask = lung & (y < top + depth * (bottom - top))
        severity = "mild" if depth < 0.17 else "moderate" if depth < 0.24 else "severe"
    else:  # pleural_effusion
        height = rng.uniform(0.15, 0.4)
        mask = lung & (y > bottom - height * (bottom - top))
        severity = "mild" if height < 0.23 else "moderate" if height < 0.32 else "severe"
    return mask, severity


def toy_image(size: int, rng: np.random.Generator, findings: dict[str, str],
              cardiomegaly: bool) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, str]]:
    """One radiograph, the masks of its lesions and their severities; ``findings`` maps a lesion
    finding to its laterality (patient side: "right" is the image's left half)."""
    y, x = _grid(size)
    right, left = lungs(size)
    image = np.full((size, size), 0.75, np.float32)
    image[right | left] = 0.25
    heart = 0.16 if cardiomegaly else 0.11
    image[((y - 0.62) / heart) ** 2 + ((x - 0.53) / (heart * 1.1)) ** 2 < 1] = 0.7
    masks, severities = {}, {}
    for finding, side in findings.items():
        mask, severity = _lesion(finding, right if side == "right" else left, rng, size)
        masks[finding], severities[finding] = mask, severity
        image[mask] = {"nodule": 0.85, "pneumothorax": 0.05, "pleural_effusion": 0.8}[finding]
    texture = ndimage.gaussian_filter(rng.normal(0, 0.08, (size, size)), 1.0)
    return np.clip(image + texture.astype(np.float32), 0, 1), masks, severities


def _lesion_rows(root: Path, image_id: str, masks: dict[str, np.ndarray], size: int) -> list[dict]:
    """prepare_masks' per-lesion PNGs and lesion-table rows for one image's masks."""
    geometry = Geometry(size, size, 1.0, 0, 0, size, size)
    rows = []
    for lesion, (finding, mask) in enumerate(masks.items()):
        mask_path = f"data/prepare_masks/lesions/{image_id}_{lesion}.png"
        write_mask(root / mask_path, mask.astype(np.uint8) * LESION_VALUE)
        rows.append({"image_id": image_id, "lesion": lesion, "finding": finding, "kind": "mask",
                     "mask_path": mask_path, **lesion_attributes(mask, geometry)})
    return rows


def toy_prompt(states: dict[str, int], laterality: dict[str, str], severity: dict[str, str]) -> str:
    return canonical_prompt({f: FindingState(state=states.get(f), laterality=laterality.get(f),
                                             severity=severity.get(f)) for f in FINDINGS})


def make_project(root: str | Path, n_images: int = 24, size: int = 32, seed: int = 0,
                 lesion_rate: float = 0.35, masked_rate: float = 0.85) -> pd.DataFrame:
    """Write images, label maps, lesion masks, ``data/prepare_masks/lesions.parquet`` and
    ``data/prepare_masks/manifest.parquet`` under ``root``; return the manifest. The manifest's
    laterality is left out for a third of the masked lesions, so the masks must fill it in."""
    root, rng = Path(root), np.random.default_rng(seed)
    rows, lesion_rows = [], []
    for i in range(n_images):
        image_id = f"img{i:05d}"
        present = {f: str(rng.choice(["left", "right"])) for f in LESION_FINDINGS if rng.random() < lesion_rate}
        cardiomegaly = bool(rng.random() < 0.15)
        image, masks, severities = toy_image(size, rng, present, cardiomegaly)
        path = f"data/ingest/images/{image_id}.png"
        write_png16(root / path, image)
        mask_path = None
        reported_side = dict(present)
        if masks and rng.random() < masked_rate:
            mask_path = f"data/prepare_masks/masks/{image_id}.png"
            write_mask(root / mask_path, labelmap.encode(masks, (size, size)))
            lesion_rows += _lesion_rows(root, image_id, masks, size)
            if rng.random() < 1 / 3:
                reported_side = {}
        states = {f: 1 if f in present else 0 for f in LESION_FINDINGS}
        states["cardiomegaly"] = 1 if cardiomegaly else 0
        row = {
            "image_id": image_id, "patient_id": f"p{i // 2:05d}", "study_id": f"s{i:05d}",
            "split": ("train", "train", "train", "train", "train", "train", "train", "val", "test", "test")[(i // 2) % 10],
            "source": "real", "dataset": "toy", "site": "SITE-A", "path": path, "view": "PA",
            "orig_height": size, "orig_width": size, "scale": 1.0, "pad_top": 0, "pad_left": 0,
            "pixel_spacing_mm": 1.4 * 256 / size, "prompt": toy_prompt(states, reported_side, severities),
            "mask_path": mask_path, "n_lesions": len(masks) if mask_path else 0,
        }
        for finding in FINDINGS:
            row[finding] = states.get(finding)
            row[f"{finding}_laterality"] = reported_side.get(finding)
            row[f"{finding}_severity"] = severities.get(finding)
        rows.append(row)
    lesions = pd.DataFrame(lesion_rows, columns=list(LESION_COLUMNS))
    lesions.to_parquet(root / "data/prepare_masks/lesions.parquet", index=False)
    return manifest.write(pd.DataFrame(rows), root / "data/prepare_masks/manifest.parquet", "prepare_masks")


def tiny_diffusion(conditions=("label", "mask", "text"), **train) -> DiffusionParams:
    """Diffusion params small enough for a unit test step in well under a second; float32 unless
    ``mixed_precision`` says otherwise, so a test computes the same numbers on every CPU."""
    return DiffusionParams.model_validate({
        "timesteps": 50,
        "unet": {"channels": [8, 16], "attention_levels": [False, True], "num_res_blocks": 1,
                 "num_head_channels": 8, "norm_num_groups": 4},
        "conditions": list(conditions),
        "label_dim": 16,
        "text_encoder": {"max_tokens": 12, "dim": 16, "layers": 1, "min_word_count": 1},
        "train": {"steps": 2, "batch_size": 4, "checkpoint_every": 1, "sample_every": 100, "mixed_precision": "no",
                  **train},
    })


def tiny_setup(root: str | Path, diffusion=None, n_images: int = 16, size: int = 16, seed: int = 0):
    """A toy project under ``root`` and a TrainingSetup (dataset, tokenizer, config, fresh model) on it."""
    from cxrsynth.tasks.diffusion.train_stage import training_setup
    from cxrsynth.tasks.params import Params

    frame = make_project(root, n_images=n_images, size=size, seed=seed)
    params = Params(diffusion=diffusion or tiny_diffusion())
    return frame, training_setup(params, frame, root)


TINY_BERT_WORDS = ["no", "mild", "moderate", "severe", "left", "right", "nodule", "pneumothorax", "pleural",
                   "effusion", "cardiomegaly", "acute", "findings", "."]


def save_tiny_bert(folder: str | Path) -> Path:
    """A tiny randomly initialised BERT and its tokenizer, saved as a pretrained encoder folder."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_BERT_WORDS]) + "\n")
    BertTokenizer(str(vocab)).save_pretrained(str(folder))
    config = BertConfig(vocab_size=5 + len(TINY_BERT_WORDS), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
    BertModel(config).save_pretrained(str(folder))
    return folder
