"""tasks/metrics/figures.py: each figure draws what its data say (lines, markers, panels, labels)."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrsynth.tasks.metrics import figures


@pytest.fixture
def roc() -> pd.DataFrame:
    rows = []
    for variant in ("real_only", "ratio_1"):
        for finding in ("nodule", "pneumothorax"):
            rows += [{"variant": variant, "finding": finding, "fpr": x, "tpr": min(1.0, 2 * x)} for x in (0, 0.3, 1)]
    return pd.DataFrame(rows)


def test_save_writes_a_png_atomically_and_closes_the_figure(tmp_path):
    figure, axes = plt.subplots(figsize=(2, 1))
    axes.plot([0, 1], [0, 1])
    path = figures.save(figure, tmp_path / "out" / "line.png")
    assert path == tmp_path / "out" / "line.png"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > image.height
    assert [p.name for p in path.parent.iterdir()] == ["line.png"]  # no temporary file left
    assert figure.number not in plt.get_fignums()


def test_finding_roc_has_one_curve_per_variant_with_its_auroc(roc):
    figure = figures.finding_roc_figure(roc, "nodule", {"real_only": 0.8125, "ratio_1": None}, n_positive=7)
    axes = figure.axes[0]
    labels = [line.get_label() for line in axes.get_lines()]
    assert "real_only (0.812)" in labels and "ratio_1" in labels  # no AUROC: the name alone
    curves = [line for line in axes.get_lines() if line.get_label() in ("real_only (0.812)", "ratio_1")]
    assert all(list(line.get_xdata()) == [0, 0.3, 1] for line in curves)
    assert axes.get_title() == "nodule: 7 test positives"
    assert axes.get_xlim() == (0, 1)
    plt.close(figure)


def test_variant_roc_has_one_curve_per_finding(roc):
    figure = figures.variant_roc_figure(roc, "ratio_1")
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert {"nodule", "pneumothorax"} <= set(labels) and len(labels) == 3  # two curves and the chance diagonal
    assert figure.axes[0].get_title() == "ratio_1"
    plt.close(figure)


def test_variant_roc_without_curves_draws_the_diagonal_and_no_legend(roc, recwarn):
    figure = figures.variant_roc_figure(roc.iloc[0:0], "ratio_1")  # every finding had too few test cases
    assert len(figure.axes[0].get_lines()) == 1 and figure.axes[0].get_legend() is None
    assert not [w for w in recwarn if "No artists with labels" in str(w.message)]
    plt.close(figure)


def test_embedding_colours_sources_and_marks_findings():
    coordinates = np.arange(12, dtype=float).reshape(6, 2)
    source = ["real", "real", "real", "synthetic", "synthetic", "synthetic"]
    finding = ["nodule", "pleural_effusion", "nodule", "nodule", "nodule", "pleural_effusion"]
    figure = figures.embedding_figure(coordinates, source, finding, "tsne")
    axes = figure.axes[0]
    groups = {c.get_label(): c for c in axes.collections}
    assert set(groups) == {"real: nodule", "real: pleural effusion", "synthetic: nodule", "synthetic: pleural effusion"}
    assert groups["real: nodule"].get_offsets().tolist() == [[0, 1], [4, 5]]
    assert groups["synthetic: nodule"].get_offsets().tolist() == [[6, 7], [8, 9]]
    real_colour = groups["real: nodule"].get_facecolor()[0][:3]
    assert np.allclose(real_colour, plt.matplotlib.colors.to_rgb("tab:blue"))
    assert axes.get_title() == "Feature embedding (TSNE)"
    plt.close(figure)


def test_pairs_put_each_pair_on_a_row_with_its_caption():
    left, right = np.zeros((3, 8, 8)), np.ones((3, 8, 8))
    figure = figures.pairs_figure(left, right, ["r = 0.99", "r = 0.50", "r = 0.10"], ("synthetic", "nearest"))
    assert len(figure.axes) == 6
    titles = [axis.get_title() for axis in figure.axes]
    assert titles[0] == "synthetic\nr = 0.99" and titles[1] == "nearest" and titles[4] == "synthetic\nr = 0.10"
    assert np.all(figure.axes[1].get_images()[0].get_array() == 1)
    plt.close(figure)
    empty = figures.pairs_figure(np.zeros((0, 8, 8)), np.zeros((0, 8, 8)), [], ("a", "b"))
    assert len(empty.axes) == 2 and not any(axis.get_images() for axis in empty.axes)
    plt.close(empty)


def test_samples_have_a_real_and_a_synthetic_row_per_finding():
    groups = {"nodule": (np.zeros((2, 8, 8)), np.ones((4, 8, 8))), "pneumothorax": (np.zeros((0, 8, 8)), np.ones((1, 8, 8)))}
    figure = figures.samples_figure(groups, per_row=4)
    assert len(figure.axes) == 16
    assert [figure.axes[i].get_title(loc="left") for i in (0, 4, 8, 12)] == [
        "real: nodule", "synthetic: nodule", "real: pneumothorax", "synthetic: pneumothorax"]
    shown = [len(axis.get_images()) for axis in figure.axes]
    assert shown == [1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0]
    plt.close(figure)
