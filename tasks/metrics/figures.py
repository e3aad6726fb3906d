"""Evaluation figures (matplotlib, Agg): ROC curves, the embedding, memorisation pairs, samples.
No figure prints an image identifier."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cxrsynth.tasks.io import atomic_path  # noqa: E402


def save(figure: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def _roc_axes(axes: plt.Axes, title: str) -> None:
    axes.plot([0, 1], [0, 1], color="0.7", linestyle=":", linewidth=1)
    axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity", ylabel="sensitivity", title=title)
    axes.set_aspect("equal")
    if axes.get_legend_handles_labels()[0]:  # no curve where every finding had too few test cases
        axes.legend(loc="lower right", fontsize=7)


def finding_roc_figure(roc: pd.DataFrame, finding: str, aurocs: dict[str, float | None], n_positive: int) -> plt.Figure:
    """Every variant's ROC curve for one finding, AUROC in the legend."""
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    for variant, curve in roc[roc["finding"] == finding].groupby("variant", sort=False):
        auc = aurocs.get(variant)
        axes.plot(curve["fpr"], curve["tpr"], label=f"{variant} ({auc:.3f})" if auc is not None else variant)
    _roc_axes(axes, f"{finding.replace('_', ' ')}: {n_positive} test positives")
    return figure


def variant_roc_figure(roc: pd.DataFrame, variant: str) -> plt.Figure:
    """One variant's ROC curve for every finding (the figure of its MLflow run)."""
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    for finding, curve in roc[roc["variant"] == variant].groupby("finding", sort=False):
        axes.plot(curve["fpr"], curve["tpr"], label=finding.replace("_", " "))
    _roc_axes(axes, variant)
    return figure


def embedding_figure(coordinates: np.ndarray, source: Sequence[str], finding: Sequence[str], method: str) -> plt.Figure:
    """2-D embedding of real and synthetic images: colour by source, marker by finding."""
    figure, axes = plt.subplots(figsize=(6, 5))
    source, finding = np.asarray(source), np.asarray(finding)
    markers = dict(zip(sorted(set(finding)), "o^sDvP*Xh<>"))
    colours = {"real": "tab:blue", "synthetic": "tab:orange"}
    for (name, group), marker in ((key, markers[key[1]]) for key in sorted(set(zip(source, finding)))):
        rows = (source == name) & (finding == group)
        axes.scatter(coordinates[rows, 0], coordinates[rows, 1], s=14, alpha=0.6, marker=marker,
                     color=colours.get(name, "tab:gray"), label=f"{name}: {group.replace('_', ' ')}")
    axes.set(title=f"Feature embedding ({method.upper()})", xticks=[], yticks=[])
    axes.legend(fontsize=7, loc="best", markerscale=1.2)
    return figure


def pairs_figure(left: np.ndarray, right: np.ndarray, captions: Sequence[str], titles: tuple[str, str]) -> plt.Figure:
    """Image pairs side by side, one pair per row (e.g. synthetic and its nearest training image)."""
    rows = max(len(left), 1)
    figure, axes = plt.subplots(rows, 2, figsize=(4, 2 * rows), squeeze=False)
    for row in range(rows):
        for column, images in enumerate((left, right)):
            axis = axes[row, column]
            axis.axis("off")
            if row < len(images):
                axis.imshow(images[row], cmap="gray", vmin=0, vmax=1)
                axis.set_title(f"{titles[column]}\n{captions[row]}" if column == 0 else titles[column], fontsize=7)
    return figure


def samples_figure(groups: dict[str, tuple[np.ndarray, np.ndarray]], per_row: int = 4) -> plt.Figure:
    """For each finding, a row of real images then a row of synthetic ones."""
    names = list(groups) or ["(none)"]
    figure, axes = plt.subplots(2 * len(names), per_row, figsize=(1.6 * per_row, 3.4 * len(names)), squeeze=False)
    for index, name in enumerate(names):
        real, synthetic = groups.get(name, (np.zeros((0, 1, 1)), np.zeros((0, 1, 1))))
        for offset, (label, images) in enumerate((("real", real), ("synthetic", synthetic))):
            for column in range(per_row):
                axis = axes[2 * index + offset, column]
                axis.axis("off")
                if column < len(images):
                    axis.imshow(images[column], cmap="gray", vmin=0, vmax=1)
            axes[2 * index + offset, 0].set_title(f"{label}: {name.replace('_', ' ')}", fontsize=8, loc="left")
    return figure
