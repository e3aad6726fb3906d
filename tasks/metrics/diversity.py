"""Diversity of the synthetic set: precision, recall, density and coverage (Naeem et al. 2020,
"Reliable Fidelity and Diversity Metrics for Generative Models", ICML), and a 2-D embedding.

Each real sample gets a ball reaching its k-th nearest real neighbour. Precision: share of fakes in
some real ball. Recall: share of reals inside some fake's own k-NN ball. Density: how many real
balls hold each fake, over k (about 1 when the sets match; above 1 when fakes crowd the modes).
Coverage: share of real balls that hold at least one fake.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.metrics import pairwise_distances
from sklearn.neighbors import NearestNeighbors


def kth_neighbour_distance(features: np.ndarray, k: int) -> np.ndarray:
    """Distance from each sample to its k-th nearest other sample of the same set."""
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(features).kneighbors(features)
    return distances[:, k]  # column 0 is the sample itself


def prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float | int | None]:
    """Precision, recall, density and coverage of ``fake`` against ``real`` (feature rows)."""
    result: dict[str, float | int | None] = {"n_real": len(real), "n_fake": len(fake), "k": k}
    if len(real) <= k or len(fake) <= k:
        return {**result, **dict.fromkeys(("precision", "recall", "density", "coverage"))}
    real_radius = kth_neighbour_distance(real, k)
    fake_radius = kth_neighbour_distance(fake, k)
    distance = pairwise_distances(real, fake)  # (n_real, n_fake)
    inside_real = distance < real_radius[:, None]
    return {
        **result,
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((distance < fake_radius[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum(axis=0).mean() / k),
        "coverage": float((distance.min(axis=1) < real_radius).mean()),
    }


def embed_2d(features: np.ndarray, method: str, seed: int) -> np.ndarray:
    """Project feature rows to 2-D with PCA or t-SNE (seeded) for the embedding figure."""
    if len(features) < 3:
        return np.zeros((len(features), 2))
    if method == "tsne":
        perplexity = float(min(30, len(features) - 1) / 2)
        return TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(features)
    if method != "pca":
        raise ValueError(f"evaluate.embedding: unknown method {method!r} (pca or tsne)")
    return PCA(n_components=2, random_state=seed).fit_transform(features)
