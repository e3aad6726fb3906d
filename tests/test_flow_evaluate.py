"""The evaluate stage end to end on a tiny project (tiny profile, untrained densenet_small classifiers)."""

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from cxrsynth.tasks.params import load_params, variant_name
from tests.evaluate_project import save_untrained_classifier


@pytest.mark.slow
def test_evaluate_flow_on_tiny_project(tmp_path, evaluate_project):
    params = load_params("params.yaml")
    variants = [*params.mix.baselines, *(variant_name(r) for r in params.mix.ratios)]
    for seed, variant in enumerate(variants):
        save_untrained_classifier(tmp_path / "data/classifiers" / variant, variant, seed)
    save_untrained_classifier(tmp_path / "data/classifiers/ratio_99", "ratio_99", 99)  # not in params: ignored

    from cxrsynth.flows.evaluate import evaluate_flow

    evaluate_flow("params.yaml")

    metrics = json.loads(Path("metrics/evaluate.json").read_text())
    assert set(metrics["downstream"]) == set(variants)
    nodule = metrics["downstream"]["ratio_1"]["per_finding"]["nodule"]
    for key in ("auroc", "auroc_ci_low", "auroc_ci_high", "auroc_boot_low", "p_vs_real_only", "auprc",
                "sensitivity_at_specificity", "n_positive"):
        assert key in nodule
    assert nodule["auroc_ci_low"] <= nodule["auroc"] <= nodule["auroc_ci_high"]
    assert "p_vs_real_only" not in metrics["downstream"]["real_only"]["per_finding"]["nodule"]
    assert {"macro", "rare"} <= set(metrics["downstream"]["classical_aug"])
    synthetic = metrics["synthetic"]
    assert synthetic["fidelity"]["synthetic_vs_real_test"]["fid"] is not None
    assert synthetic["lesions"]["mask_adherence"]["all"]["n"] == 12  # the text-conditioned copy has no mask
    assert set(synthetic["lesions"]["condition_accuracy_by_type"]) == {"label+mask", "text"}
    assert synthetic["memorisation"]["synthetic"]["near_copies"] >= 1
    assert set(synthetic["diversity"]["per_finding"]) == {"pneumothorax", "nodule"}

    roc = pd.read_csv("plots/evaluate/roc.csv")
    assert list(roc.columns) == ["variant", "finding", "fpr", "tpr"]
    assert set(roc["variant"]) == set(variants)
    by_ratio = pd.read_csv("plots/evaluate/auroc_by_ratio.csv")
    assert len(by_ratio) == 2 * len(variants) and set(by_ratio["finding"]) == {"pneumothorax", "nodule"}
    row = by_ratio[(by_ratio["finding"] == "nodule") & (by_ratio["variant"] == "ratio_1")].iloc[0]
    assert row["kind"] == "ratio" and row["ratio"] == 1.0 and row["auroc"] == pytest.approx(nodule["auroc"])
    assert set(by_ratio.loc[by_ratio["kind"] == "baseline", "variant"]) == set(params.mix.baselines)
    report = Path("reports/evaluation.md").read_text()
    assert "](figures/auroc_by_ratio.png)" in report and Path("reports/figures/auroc_by_ratio.png").is_file()
    assert "p vs real_only" in report and "## Caveats" in report
    assert "data:image/png;base64," in Path("reports/evaluation.html").read_text()
    page = Path("reports/reader_study/index.html").read_text()
    key = json.loads(Path("reports/reader_study_key.json").read_text())
    assert len(key["items"]) == 8 and page.count("data:image/png;base64,") == 8

    mlflow.set_tracking_uri("sqlite:///mlflow.db")
    runs = mlflow.search_runs(experiment_names=[params.tracking.experiment])
    names = sorted(runs["tags.mlflow.runName"])
    assert names == sorted([f"evaluate:{v}" for v in variants] + ["evaluate:synthetic"])
    ratio_run = runs[runs["tags.mlflow.runName"] == "evaluate:ratio_0.5"].iloc[0]
    assert ratio_run["params.ratio"] == "0.5" and ratio_run["params.variant"] == "ratio_0.5"
    assert ratio_run["params.runtime.precision"] == "fp32"  # the classifiers' inference precision (tiny: float32)
    assert "metrics.per_finding.nodule.auroc" in runs.columns
    assert "metrics.synthetic.lesions.condition_accuracy_by_type.label_mask.nodule.detected" in runs.columns
    synthetic_run = runs[runs["tags.mlflow.runName"] == "evaluate:synthetic"].iloc[0]
    top_level = {a.path for a in mlflow.MlflowClient().list_artifacts(synthetic_run["run_id"])}
    assert {"auroc_by_ratio.png", "auroc_by_ratio.csv"} <= top_level
