"""How many synthetic images of each rare finding, under which condition types, with which seeds.

A rare finding with ``n_positive`` of the ``n_train`` real training images gets
``ceil(target_share * n_train) - n_positive`` synthetic images (never fewer than 0, never more than
``max_per_finding``): enough that, against the real training split, it reaches the target share.
The images of a finding cycle through its condition types, so the types' counts differ by at most
one and a longer plan extends a shorter one (image k keeps its id, type and seed).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cxrsynth.tasks.findings import finding_index
from cxrsynth.tasks.params import GenerateParams


def needs_mask(condition_type: str) -> bool:
    return "mask" in condition_type.split("+")


def finding_counts(train: pd.DataFrame, generate: GenerateParams) -> pd.DataFrame:
    """One row per rare finding: n_train, n_positive, target, planned."""
    n_train = len(train)
    rows = []
    for finding in generate.rare_findings:
        positive = int((train[finding] == 1).sum())
        target = math.ceil(generate.target_share * n_train)
        planned = min(max(target - positive, 0), generate.max_per_finding) if positive else 0
        rows.append({"finding": finding, "n_train": n_train, "n_positive": positive, "target": target,
                     "planned": planned})
    return pd.DataFrame(rows)


def image_seed(seed: int, finding: str, k: int) -> int:
    """A well-mixed 31-bit seed that depends only on (generate.seed, finding, k)."""
    return int(np.random.SeedSequence([seed, finding_index(finding), k]).generate_state(1)[0] >> 1)


def generation_plan(counts: pd.DataFrame, condition_types: dict[str, list[str]], seed: int) -> pd.DataFrame:
    """``image_id, finding, condition_type, seed`` for every planned image; ``condition_types`` maps
    a finding to the types it can use (a finding without mask templates cannot use mask types)."""
    rows = []
    for finding, planned in zip(counts["finding"], counts["planned"], strict=True):
        types = condition_types.get(finding, [])
        if not types:
            continue
        for k in range(int(planned)):
            rows.append({"image_id": f"syn_{finding}_{k:05d}", "finding": finding,
                         "condition_type": types[k % len(types)], "seed": image_seed(seed, finding, k)})
    return pd.DataFrame(rows, columns=["image_id", "finding", "condition_type", "seed"])
