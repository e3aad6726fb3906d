import numpy as np

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.metrics import json_ready
from cxrsynth.tasks.metrics.downstream import Scoring, score_variants
from cxrsynth.tasks.metrics.report import EXPLANATIONS, build_markdown, write_report
from cxrsynth.tasks.metrics.verdict import verdict_table

VARIANTS = [("real_only", 0.0), ("ratio_1", 1.0)]
SCORING = Scoring(specificity=0.9, n_boot=200, seed=0, min_cases=10)
SEEDS = (0, 1)


def metrics_without_synthetic(variants=VARIANTS, ratio_gain: float = 0.5) -> dict:
    """30 test images (one patient each): 12 nodules, one pneumothorax (too few), 5 consolidations;
    two seeds per variant; ratio_1 scores nodule ``ratio_gain`` higher on positives than real-only,
    class_weighting (if named) nearly as real-only."""
    rng = np.random.default_rng(0)
    labels = np.zeros((30, len(FINDINGS)))
    labels[:12, FINDINGS.index("nodule")] = 1
    labels[12, FINDINGS.index("pneumothorax")] = 1
    labels[13:18, FINDINGS.index("consolidation")] = 1
    reference = rng.random((len(SEEDS), *labels.shape))
    reference[:, 12, FINDINGS.index("pneumothorax")] = 1.0  # ranked first: DeLong alone would say 1.000 [1.000, 1.000]
    scores = {"real_only": reference, "ratio_1": np.clip(reference + labels * ratio_gain, 0, 1),
              "class_weighting": np.clip(reference + rng.normal(0, 0.05, reference.shape), 0, 1)}
    rare = ["nodule", "pneumothorax"]
    downstream = score_variants(labels, {v: scores[v] for v, _ in variants}, np.arange(30), variants, rare, SCORING)
    return json_ready({
        "verdict": verdict_table(downstream, variants, rare),
        "seeds": list(SEEDS),
        "test_split": {"n_images": 30},
        "downstream": downstream,
        "synthetic": None, "quarantined": 2,
    })


def section(text: str, finding: str) -> str:
    start = text.index(f"### {finding}")
    end = text.find("\n### ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_markdown_tables_notes_and_caveats():
    text = build_markdown(metrics_without_synthetic(), VARIANTS, ["nodule", "pneumothorax"], 0.9,
                          {"roc_nodule": "figures/roc_nodule.png"}, reader_study=None)
    nodule = section(text, "nodule")
    assert "12 positive, 18 negative" in nodule and "fewer than 20 test positives" in nodule
    assert "| ratio_1 | 1 |" in nodule and "| real_only | baseline |" in nodule
    assert "![ROC curves, nodule](figures/roc_nodule.png)" in nodule
    assert "| min. detectable difference | reading vs real_only |" in nodule
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


def test_too_few_positives_prints_no_statistic():
    """The tiny profile's pneumothorax: one test positive, ranked first. No AUROC, interval or p-value."""
    text = build_markdown(metrics_without_synthetic(), VARIANTS, ["nodule", "pneumothorax"], 0.9, {}, None)
    pneumothorax = section(text, "pneumothorax")
    assert "1 positive, 29 negative" in pneumothorax
    assert "No AUROC, interval or p-value: too few positives (1 < 10)" in pneumothorax
    assert "1.000" not in pneumothorax and "<0.001" not in pneumothorax and "|" not in pneumothorax
    consolidation = section(text, "consolidation")
    assert "too few positives (5 < 10)" in consolidation and "|" not in consolidation
    caveats = text[text.index("## Caveats"):]
    assert "pneumothorax: too few positives (1 < 10)" in caveats and "`evaluate.min_cases`" in caveats


def test_every_difference_has_its_detectable_size_and_a_reading():
    metrics = metrics_without_synthetic(ratio_gain=0.5)
    nodule = metrics["downstream"]["ratio_1"]["per_finding"]["nodule"]
    text = build_markdown(metrics, VARIANTS, ["nodule"], 0.9, {}, None)
    row = next(line for line in section(text, "nodule").splitlines() if line.startswith("| ratio_1 |"))
    assert f"| {nodule['min_detectable_difference_vs_real_only']:.3f} | helps |" in row


def test_a_small_non_significant_difference_is_no_detectable_effect_never_no_effect():
    variants = [("real_only", 0.0), ("class_weighting", 0.0), ("ratio_1", 1.0)]
    metrics = metrics_without_synthetic(variants, ratio_gain=0.0)
    cell = metrics["downstream"]["class_weighting"]["per_finding"]["nodule"]
    assert cell["p_vs_real_only"] >= 0.05
    assert abs(cell["delta_auroc_vs_real_only"]) <= cell["min_detectable_difference_vs_real_only"]
    text = build_markdown(metrics, variants, ["nodule"], 0.9, {}, None)
    row = next(line for line in section(text, "nodule").splitlines() if line.startswith("| class_weighting |"))
    assert "no detectable effect at this test size" in row
    assert "no effect" not in text.replace("no detectable effect", "").replace("evidence of no effect", "")
    best = metrics["downstream"]["ratio_1"]["per_finding"]["nodule"]["best_baseline"]
    assert f"Against the best non-generative baseline on this finding, {best}" in section(text, "nodule")


def test_the_report_opens_with_the_verdict():
    text = build_markdown(metrics_without_synthetic(), VARIANTS, ["nodule", "pneumothorax"], 0.9, {}, None)
    verdict = text[text.index("## Verdict"):text.index("## Downstream classification")]
    assert text.index("## Verdict") < text.index("## Downstream classification") < text.index("### nodule")
    rows = [line for line in verdict.splitlines() if line.startswith("| nodule") or line.startswith("| pneumothorax")]
    assert len(rows) == 2 and "ratio_1" in rows[0] and "**helps**" in rows[0] and "no ceiling variant" in rows[0]
    assert "**too few positives (1 < 10)**" in rows[1]
    assert "mean over 2 training seed(s) (0, 1)" in verdict
    nodule = section(text, "nodule")
    assert "| sd over seeds | min–max |" in nodule
