"""The one seam between evaluate and the train_classifier stage: which variants the params name,
where their classifiers live, loading one and predicting with it (the classifier stage's own
``load_classifier`` and ``predict``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxrsynth.tasks.classifier import load_classifier
from cxrsynth.tasks.classifier import predict as classifier_predict
from cxrsynth.tasks.device import CONTIGUOUS, MemoryFormat
from cxrsynth.tasks.params import Params, variant_name
from cxrsynth.tasks.stages import Dag

REFERENCE = "real_only"
# The more-real-data variant (real rows plus extra real positives of the rare findings): a baseline by
# its ratio of 0, yet not a non-generative alternative a synthetic variant competes with, but the upper
# reference of the ceiling share.
CEILING = "ceiling"
READER = "evaluate"  # the stage whose deps must hold every classifier it loads


def variants(params: Params) -> list[tuple[str, float]]:
    """(variant, ratio) for every variant the current params build: baselines (ratio 0), then ratios."""
    named = [(baseline, 0.0) for baseline in params.mix.baselines]
    named += [(variant_name(ratio), float(ratio)) for ratio in params.mix.ratios]
    if REFERENCE not in dict(named):
        raise ValueError(f"mix.baselines must include {REFERENCE!r}: evaluate tests every variant against it "
                         "and measures the synthetic set in its feature space")
    return named


def variant_dir(dag: Dag, variant: str, root: str | Path = ".") -> Path:
    """The variant's classifier: the out of the train_classifier stage that trains it, a dep of evaluate."""
    directory = Path(root) / dag.input(READER, dag.stage_for("train_classifier", variant).name)
    if not (directory / "config.json").is_file():
        raise ValueError(f"{directory}: no trained classifier for variant {variant!r} (config.json missing); "
                         "run its train_classifier stage first")
    return directory


def load(directory: Path, device: torch.device | str = "cpu", layout: MemoryFormat = CONTIGUOUS["classifier"]):
    return load_classifier(directory, device, layout)


def predict(model, frame: pd.DataFrame, root: str | Path = ".", batch_size: int = 64,
            precision: torch.dtype | None = None) -> np.ndarray:
    """Probabilities (n, len(FINDINGS)) of the manifest rows ``frame`` (network under autocast to ``precision``)."""
    return np.asarray(classifier_predict(model, frame, root=root, batch_size=batch_size, precision=precision),
                      dtype=np.float64)
