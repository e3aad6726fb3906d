"""Memorisation: for each synthetic image, its nearest real training image in feature space
(cosine similarity of features centred on the training mean) and in pixels (Pearson correlation).
A synthetic image whose pixel correlation with some training image reaches the threshold is a
near-copy; the same search from real test images (other patients) shows how close unrelated real
radiographs already are."""

from __future__ import annotations

import numpy as np
import pandas as pd

BLOCK = 2048  # reference rows compared at once, so the similarity matrix stays small


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def _standardised(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1).astype(np.float64)
    return _unit_rows(flat - flat.mean(axis=1, keepdims=True))


def _best_match(queries: np.ndarray, references: np.ndarray, prepare) -> tuple[np.ndarray, np.ndarray]:
    """Index and value of each query's largest dot product with the prepared references, block by block."""
    queries = prepare(queries)
    best_index = np.zeros(len(queries), dtype=np.int64)
    best_value = np.full(len(queries), -np.inf)
    for start in range(0, len(references), BLOCK):
        similarity = queries @ prepare(references[start:start + BLOCK]).T
        index = similarity.argmax(axis=1)
        value = similarity[np.arange(len(queries)), index]
        better = value > best_value
        best_index[better], best_value[better] = index[better] + start, value[better]
    return best_index, best_value


def nearest_by_cosine(queries: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index, cosine similarity) of each query row's most similar reference row."""
    return _best_match(queries, references, _unit_rows)


def nearest_by_correlation(queries: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index, Pearson correlation of pixels) of each query image's most correlated reference image."""
    return _best_match(queries, references, _standardised)


def nearest_real(
    query_ids: list[str], query_features: np.ndarray, query_images: np.ndarray,
    train_ids: list[str], train_features: np.ndarray, train_images: np.ndarray,
) -> pd.DataFrame:
    """One row per query image: its nearest training image by features and by pixels, and both scores."""
    if len(query_ids) == 0 or len(train_ids) == 0:
        return pd.DataFrame(columns=["image_id", "nearest_by_features", "cosine", "nearest_by_pixels", "correlation"])
    # Centred on the training mean: post-ReLU features are all positive, so raw cosines crowd near 1.
    centre = train_features.mean(axis=0, keepdims=True)
    feature_index, cosine = nearest_by_cosine(query_features - centre, train_features - centre)
    pixel_index, correlation = nearest_by_correlation(query_images, train_images)
    train_ids = np.asarray(train_ids, dtype=object)
    return pd.DataFrame({
        "image_id": query_ids,
        "nearest_by_features": train_ids[feature_index], "cosine": cosine,
        "nearest_by_pixels": train_ids[pixel_index], "correlation": correlation,
    })


def summarise(nearest: pd.DataFrame, threshold: float) -> dict[str, float | int | None]:
    """Counts of near-copies (pixel correlation >= threshold) and of feature matches, and the medians."""
    if nearest.empty:
        return {"n": 0, "near_copies": 0, "feature_matches": 0, "median_correlation": None,
                "max_correlation": None, "median_cosine": None}
    return {
        "n": len(nearest),
        "near_copies": int((nearest["correlation"] >= threshold).sum()),
        "feature_matches": int((nearest["cosine"] >= threshold).sum()),
        "median_correlation": float(nearest["correlation"].median()),
        "max_correlation": float(nearest["correlation"].max()),
        "median_cosine": float(nearest["cosine"].median()),
    }
