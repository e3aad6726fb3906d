import numpy as np

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.metrics import json_ready
from cxrsynth.tasks.metrics.downstream import variant_metrics
from cxrsynth.tasks.metrics.report import EXPLANATIONS, build_markdown, write_report

VARIANTS = [("real_only", 0.0), ("ratio_1", 1.0)]


def metrics_without_synthetic() -> dict:
    rng = np.random.default_rng(0)
    labels = np.zeros((30, len(FINDINGS)))
    labels[:8, FINDINGS.index("nodule")] = 1
    reference = rng.random(labels.shape)
    better = np.clip(reference + labels * 0.5, 0, 1)
    rare = ["nodule", "pneumothorax"]
    return json_ready({
        "test_split": {"n_images": 30},
        "downstream": {"real_only": variant_metrics(labels, reference, None, rare, 0.9, 20, 0),
                       "ratio_1": variant_metrics(labels, better, reference, rare, 0.9, 20, 0)},
        "synthetic": None, "quarantined": 2,
    })


def test_markdown_tables_notes_and_caveats():
    text = build_markdown(metrics_without_synthetic(), VARIANTS, ["nodule", "pneumothorax"], 0.9,
                          {"roc_nodule": "figures/roc_nodule.png"}, reader_study=None)
    nodule = text[text.index("### nodule"):text.index("### pneumothorax")]
    assert "8 positive, 22 negative" in nodule and "fewer than 20 test positives" in nodule
    assert "| ratio_1 | 1 |" in nodule and "| real_only | baseline |" in nodule
    assert "![ROC curves, nodule](figures/roc_nodule.png)" in nodule
    assert "only one class" in text[text.index("### pneumothorax"):]
    assert "No synthetic images were generated" in text and "## Reader study" not in text
    assert "2 image(s) could not be read" in text
    assert all(f"**{name}**" in text for name in EXPLANATIONS)


def test_html_embeds_figures(tmp_path):
    from PIL import Image

    (tmp_path / "figures").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "figures" / "roc_nodule.png")
    text = build_markdown(metrics_without_synthetic(), VARIANTS, ["nodule"], 0.9,
                          {"roc_nodule": "figures/roc_nodule.png"}, reader_study="reader_study/index.html")
    write_report(text, tmp_path / "evaluation.md", tmp_path / "evaluation.html")
    html = (tmp_path / "evaluation.html").read_text()
    assert "<table>" in html and "data:image/png;base64," in html and 'src="figures/' not in html
    assert (tmp_path / "evaluation.md").read_text() == text


def test_ratio_comparison_and_reader_study_scoring_in_the_report():
    figures = {"auroc_by_ratio": "figures/auroc_by_ratio.png"}
    text = build_markdown(metrics_without_synthetic(), VARIANTS, ["nodule"], 0.9, figures,
                          reader_study="reader_study/index.html")
    downstream = text[text.index("## Downstream classification"):text.index("### nodule")]
    assert "](figures/auroc_by_ratio.png)" in downstream  # with the averages, before the per-finding detail
    assert "python -m cxrsynth.tasks.reader_study KEY ANSWERS... --html" in text
    assert "auroc_by_ratio" not in build_markdown(metrics_without_synthetic(), VARIANTS, ["nodule"], 0.9, {}, None)
