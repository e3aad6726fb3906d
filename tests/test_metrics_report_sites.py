"""The report's site-shift section, from a ``sites`` block that site_shift.site_metrics computes."""

import numpy as np

from cxrsynth.tasks.findings import FINDINGS, finding_index
from cxrsynth.tasks.metrics import json_ready
from cxrsynth.tasks.metrics.report import build_markdown
from cxrsynth.tasks.metrics.site_shift import site_metrics
from tests.test_metrics_report import VARIANTS, metrics_without_synthetic, section


def _sites_block(train_sites):
    """60 test images at two sites: 15 nodules at each; pneumothorax 12 at site-1, 3 at site-2."""
    rng = np.random.default_rng(0)
    labels = np.zeros((60, len(FINDINGS)))
    labels[np.r_[0:15, 30:45], finding_index("nodule")] = 1
    labels[np.r_[15:27, 45:48], finding_index("pneumothorax")] = 1
    sites = ["site-1"] * 30 + ["site-2"] * 30
    scores = {"real_only": rng.random(labels.shape), "ratio_1": np.clip(rng.random(labels.shape) + 0.4 * labels, 0, 1)}
    seeded = {variant: np.stack([s, np.clip(s + rng.normal(0, 0.1, s.shape), 0, 1)]) for variant, s in scores.items()}
    return json_ready(site_metrics(labels, seeded, sites, train_sites, min_cases=10))


def _report(block):
    return build_markdown(metrics_without_synthetic() | {"sites": block}, VARIANTS, ["nodule", "pneumothorax"], 0.9,
                          {}, None)


def test_site_table_with_the_drop_from_the_training_site():
    text = _report(_sites_block(["site-1"]))
    assert "## Site shift" in text and "Test images per site: site-1 30, site-2 30." in text
    assert "trained on site-1 only (`evaluate.train_sites`)" in text
    nodule = section(text, "nodule by site")
    assert "| variant | site-1 (training) | site-2 | drop, training to other sites [95%] | p |" in nodule
    ratio_row = next(line for line in nodule.splitlines() if line.startswith("| ratio_1 |"))
    assert ratio_row.count("[") == 3 and " sd " in ratio_row  # two sites and the drop; two seeds: a spread
    pneumothorax = section(text, "pneumothorax by site")
    assert "too few positives (3 < 10)" in pneumothorax and "other sites: too few positives (3 < 10)" in pneumothorax


def test_site_table_without_train_sites_has_no_drop_column():
    text = _report(_sites_block(None))
    nodule = section(text, "nodule by site")
    assert "| variant | site-1 | site-2 |" in nodule and "drop" not in nodule and "trained on every site" in text


def test_a_source_without_sites_says_so():
    metrics = metrics_without_synthetic()
    text = build_markdown(metrics, VARIANTS, ["nodule"], 0.9, {}, None)
    assert "The data source records no acquisition site" in text and "by site" not in text
