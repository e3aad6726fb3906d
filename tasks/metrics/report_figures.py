"""The evaluation report's figures, built from evaluate's results and written under one folder:
ROC curves per finding and per variant, the feature embedding (on a seeded sample), the closest
synthetic-training pairs, real and synthetic samples per finding, AUROC against the ratio."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxrsynth.tasks.metrics import diversity, figures, ratios
from cxrsynth.tasks.metrics.classifiers import REFERENCE
from cxrsynth.tasks.metrics.inputs import ImageSet
from cxrsynth.tasks.metrics.synthetic import Features, finding_of
from cxrsynth.tasks.params import Params

MAX_EMBEDDED = 400  # images per source in the embedding figure: t-SNE stays quick, the plot readable
CLOSEST_PAIRS = 6


def downstream_figures(roc: pd.DataFrame, downstream_by_variant: dict, rare: Sequence[str],
                       directory: Path) -> dict[str, Path]:
    """Every variant's ROC per rare finding (``roc_<finding>``, in the report) that has enough test
    cases for one, and every finding's ROC per variant (``roc_variant_<variant>.png``, the figure of
    the variant's MLflow run)."""
    paths = {}
    for finding in rare:
        if downstream_by_variant[REFERENCE]["per_finding"][finding]["auroc"] is None:
            continue  # too few positives or negatives: no curve, the report says why
        aurocs = {v: m["per_finding"][finding]["auroc"] for v, m in downstream_by_variant.items()}
        n_positive = downstream_by_variant[REFERENCE]["per_finding"][finding]["n_positive"]
        paths[f"roc_{finding}"] = figures.save(figures.finding_roc_figure(roc, finding, aurocs, n_positive),
                                               directory / f"roc_{finding}.png")
    for variant in downstream_by_variant:
        figures.save(figures.variant_roc_figure(roc, variant), directory / f"roc_variant_{variant}.png")
    return paths


def ratio_comparison(table: pd.DataFrame, directory: Path) -> Path:
    return figures.save(ratios.ratio_figure(table), directory / "auroc_by_ratio.png")


def embedding_sample(groups: Sequence[tuple[str, ImageSet, np.ndarray]], rare: Sequence[str], per_source: int,
                     seed: int) -> tuple[np.ndarray, list[str], list[str]]:
    """Up to ``per_source`` rows of each (source name, image set, feature rows) group, drawn with one
    seeded generator in group order: their features, source names and findings."""
    rng = np.random.default_rng(seed)
    coordinates, sources, names = [], [], []
    for source, image_set, rows in groups:
        picked = np.sort(rng.permutation(len(image_set))[:per_source])
        coordinates.append(rows[picked])
        sources += [source] * len(picked)
        finding = finding_of(image_set.frame, rare)
        names += [finding[i] for i in picked]
    return np.concatenate(coordinates), sources, names


def embedding(params: Params, sets: dict[str, ImageSet], features: Features, directory: Path) -> Path:
    rare, seed, method = params.generate.rare_findings, params.evaluate.seed, params.evaluate.embedding
    rows, sources, names = embedding_sample((("real", sets["train"], features.train),
                                             ("synthetic", sets["synthetic"], features.synthetic)),
                                            rare, MAX_EMBEDDED, seed)
    embedded = diversity.embed_2d(rows, method, seed)
    return figures.save(figures.embedding_figure(embedded, sources, names, method), directory / "embedding.png")


def memorisation(sets: dict[str, ImageSet], nearest: pd.DataFrame, threshold: float, directory: Path) -> Path:
    """The synthetic images closest to a training image, beside it; near-copies marked."""
    train, synthetic = sets["train"], sets["synthetic"]
    closest = nearest.sort_values("correlation", ascending=False).head(CLOSEST_PAIRS)
    synthetic_position = {image_id: i for i, image_id in enumerate(synthetic.ids)}
    train_position = {image_id: i for i, image_id in enumerate(train.ids)}
    captions = [f"r = {r:.3f}" + (" NEAR-COPY" if r >= threshold else "") for r in closest["correlation"]]
    return figures.save(figures.pairs_figure(
        synthetic.images[[synthetic_position[i] for i in closest["image_id"]]],
        train.images[[train_position[i] for i in closest["nearest_by_pixels"]]],
        captions, ("synthetic", "nearest training image")), directory / "memorisation.png")


def samples(sets: dict[str, ImageSet], rare: Sequence[str], directory: Path) -> Path:
    """Four real training and four synthetic images of each rare finding."""
    train, synthetic = sets["train"], sets["synthetic"]
    train_names, synthetic_names = (np.asarray(finding_of(s.frame, rare)) for s in (train, synthetic))
    groups = {f: (train.images[train_names == f][:4], synthetic.images[synthetic_names == f][:4]) for f in rare}
    return figures.save(figures.samples_figure(groups), directory / "samples.png")


def synthetic_figures(params: Params, sets: dict[str, ImageSet], features: Features, nearest: pd.DataFrame,
                      directory: Path) -> dict[str, Path]:
    return {"embedding": embedding(params, sets, features, directory),
            "memorisation": memorisation(sets, nearest, params.evaluate.memorisation_threshold, directory),
            "samples": samples(sets, params.generate.rare_findings, directory)}
