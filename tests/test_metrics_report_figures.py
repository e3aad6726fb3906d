"""tasks/metrics/report_figures.py: which data each report figure is drawn from, and where it goes."""

import numpy as np
import pandas as pd
import pytest

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.metrics import report_figures
from cxrsynth.tasks.metrics.inputs import ImageSet
from cxrsynth.tasks.metrics.ratios import auroc_by_ratio
from tests.test_metrics_ratios import VARIANTS, downstream


def image_set(findings: list[str], prefix: str, value: float = 0.0) -> ImageSet:
    frame = pd.DataFrame([{"image_id": f"{prefix}{i}", **{f: int(f == name) for f in FINDINGS}}
                          for i, name in enumerate(findings)])
    images = np.full((len(findings), 8, 8), value, np.float32) + np.arange(len(findings))[:, None, None] / 100
    return ImageSet(frame, images, np.zeros((len(findings), len(FINDINGS), 8, 8), np.float32))


def test_embedding_sample_caps_each_source_and_is_seeded():
    train = image_set(["nodule", "pneumothorax"] * 5, "r")
    synthetic = image_set(["pneumothorax"] * 3, "s")
    groups = (("real", train, np.arange(10.0)[:, None]), ("synthetic", synthetic, 100 + np.arange(3.0)[:, None]))
    rows, sources, names = report_figures.embedding_sample(groups, ["pneumothorax"], per_source=4, seed=0)
    assert sources == ["real"] * 4 + ["synthetic"] * 3 and len(rows) == 7
    real_rows = rows[:4, 0].astype(int)
    assert list(real_rows) == sorted(real_rows)  # kept in set order
    assert names[:4] == ["nodule" if r % 2 == 0 else "pneumothorax" for r in real_rows]  # each row's own finding
    assert list(rows[4:, 0]) == [100, 101, 102] and names[4:] == ["pneumothorax"] * 3
    again = report_figures.embedding_sample(groups, ["pneumothorax"], per_source=4, seed=0)
    assert np.array_equal(again[0], rows)
    other = report_figures.embedding_sample(groups, ["pneumothorax"], per_source=4, seed=1)
    assert not np.array_equal(other[0], rows)


def test_downstream_and_ratio_figures_are_written(tmp_path):
    roc = pd.DataFrame([{"variant": v, "finding": f, "fpr": x, "tpr": x} for v, _ in VARIANTS
                        for f in ("nodule", "pneumothorax") for x in (0, 1)])
    paths = report_figures.downstream_figures(roc, downstream(), ["nodule"], tmp_path)
    assert paths == {"roc_nodule": tmp_path / "roc_nodule.png"}
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["roc_nodule.png", *sorted(f"roc_variant_{v}.png" for v, _ in VARIANTS)]
    path = report_figures.ratio_comparison(auroc_by_ratio(downstream(), VARIANTS, ["nodule"]), tmp_path)
    assert path == tmp_path / "auroc_by_ratio.png" and path.stat().st_size > 1000


def test_no_roc_figure_for_a_finding_with_too_few_cases(tmp_path):
    roc = pd.DataFrame([{"variant": v, "finding": "pneumothorax", "fpr": x, "tpr": x} for v, _ in VARIANTS for x in (0, 1)])
    paths = report_figures.downstream_figures(roc, downstream(nodule_missing_ci=True), ["nodule", "pneumothorax"], tmp_path)
    assert set(paths) == {"roc_pneumothorax"} and not (tmp_path / "roc_nodule.png").exists()


def test_memorisation_pairs_the_closest_images(tmp_path, monkeypatch):
    sets = {"train": image_set(["nodule"] * 3, "r", 0.1), "synthetic": image_set(["nodule"] * 8, "s", 0.9)}
    nearest = pd.DataFrame({"image_id": [f"s{i}" for i in range(8)], "nearest_by_pixels": ["r2", "r0"] * 4,
                            "correlation": np.linspace(0.2, 0.99, 8)})
    drawn = {}

    def pairs(left, right, captions, titles):
        drawn.update(left=left, right=right, captions=captions)
        return report_figures.figures.plt.figure()

    monkeypatch.setattr(report_figures.figures, "pairs_figure", pairs)
    assert report_figures.memorisation(sets, nearest, 0.95, tmp_path) == tmp_path / "memorisation.png"
    assert len(drawn["captions"]) == report_figures.CLOSEST_PAIRS
    assert drawn["captions"][:2] == ["r = 0.990 NEAR-COPY", "r = 0.877"]
    assert np.allclose(drawn["left"][:, 0, 0], 0.9 + np.array([7, 6, 5, 4, 3, 2]) / 100)  # most similar first
    assert np.allclose(drawn["right"][:, 0, 0], 0.1 + np.array([0.00, 0.02] * 3))  # s7 -> r0, s6 -> r2, ...


def test_samples_take_four_of_each_rare_finding(tmp_path, monkeypatch):
    sets = {"train": image_set(["nodule"] * 6 + ["pneumothorax"], "r"), "synthetic": image_set(["nodule"] * 2, "s")}
    drawn = {}
    monkeypatch.setattr(report_figures.figures, "samples_figure",
                        lambda groups: drawn.update(groups) or report_figures.figures.plt.figure())
    report_figures.samples(sets, ["nodule", "pneumothorax"], tmp_path)
    assert [len(drawn["nodule"][0]), len(drawn["nodule"][1])] == [4, 2]
    assert [len(drawn["pneumothorax"][0]), len(drawn["pneumothorax"][1])] == [1, 0]
    assert (tmp_path / "samples.png").is_file()


@pytest.mark.parametrize("per_source", [1, 50])
def test_embedding_sample_with_fewer_rows_than_the_cap(per_source):
    train = image_set(["nodule"] * 2, "r")
    rows, sources, _ = report_figures.embedding_sample((("real", train, np.ones((2, 3))),), [], per_source, 0)
    assert len(rows) == len(sources) == min(2, per_source)
