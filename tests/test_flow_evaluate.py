"""The evaluate stage end to end on a tiny project (tiny profile, untrained densenet_small classifiers)."""

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from cxrsynth.tasks.params import load_params, variant_name
from tests.conftest import write_tiny_params
from tests.evaluate_project import save_untrained_classifier

# The tiny project's 16 test images hold 5 pneumothoraces (11 without) and 4 nodules: with
# evaluate.min_cases 5, pneumothorax is scored and nodule has too few positives.
MIN_CASES = 5


@pytest.mark.slow
def test_evaluate_flow_on_tiny_project(tmp_path, evaluate_project):
    write_tiny_params(tmp_path, evaluate={"min_cases": MIN_CASES})
    params = load_params("params.yaml")
    variants = [*params.mix.baselines, *(variant_name(r) for r in params.mix.ratios)]
    seeds = params.classifier.seeds
    for index, variant in enumerate(variants):
        save_untrained_classifier(tmp_path / "data/classifiers" / variant, variant, seeds, 10 * index)
    save_untrained_classifier(tmp_path / "data/classifiers/ratio_99", "ratio_99", seeds, 99)  # not in params: ignored

    from cxrsynth.flows.evaluate import evaluate_flow

    evaluate_flow("params.yaml")

    metrics = json.loads(Path("metrics/evaluate.json").read_text())
    assert list(metrics)[0] == "verdict" and list(metrics["verdict"]) == ["pneumothorax", "nodule"]
    assert metrics["seeds"] == seeds == [0, 1]
    pneumothorax_verdict = metrics["verdict"]["pneumothorax"]
    assert pneumothorax_verdict["best_synthetic"] in [variant_name(r) for r in params.mix.ratios]
    assert pneumothorax_verdict["verdict"] in ("helps", "hurts", "no detectable effect at this test size")
    assert metrics["verdict"]["nodule"]["verdict"] == "too few positives (4 < 5)"
    assert set(metrics["downstream"]) == set(variants)
    assert metrics["test_split"]["n_positive"]["pneumothorax"] == 5 and metrics["test_split"]["n_positive"]["nodule"] == 4
    scored = metrics["downstream"]["ratio_1"]["per_finding"]["pneumothorax"]
    for key in ("auroc", "auroc_ci_low", "auroc_ci_high", "auroc_sd", "auroc_min", "auroc_max", "p_vs_real_only",
                "delta_ci_low_vs_real_only", "delta_ci_high_vs_best_baseline", "auprc",
                "sensitivity_at_specificity", "n_positive", "min_detectable_difference_vs_real_only",
                "reading_vs_real_only", "best_baseline", "p_vs_best_baseline",
                "min_detectable_difference_vs_best_baseline"):
        assert scored[key] is not None, key
    assert scored["status"] == "ok" and scored["auroc_ci_low"] <= scored["auroc"] <= scored["auroc_ci_high"]
    assert len(scored["auroc_per_seed"]) == 2 and scored["auroc_min"] <= scored["auroc"] <= scored["auroc_max"]
    assert scored["best_baseline"] in params.mix.baselines and scored["min_detectable_difference_vs_real_only"] > 0
    for variant in variants[1:]:  # every comparison states what the split could detect
        assert metrics["downstream"][variant]["per_finding"]["pneumothorax"]["min_detectable_difference_vs_real_only"] > 0
    assert "p_vs_real_only" not in metrics["downstream"]["real_only"]["per_finding"]["pneumothorax"]
    for variant in variants:  # nodule, 4 < 5 positives: no statistic anywhere in the json
        nodule = metrics["downstream"][variant]["per_finding"]["nodule"]
        assert nodule["status"] == "too few positives (4 < 5)" and nodule["n_positive"] == 4
        assert all(value is None for key, value in nodule.items()
                   if key not in ("n_positive", "n_negative") and not key.endswith("status"))
    assert {"macro", "rare"} <= set(metrics["downstream"]["classical_aug"])
    sites = metrics["sites"]  # the tiny project alternates site-1 and site-2; every site trained
    assert set(sites["test_sites"]) == {"site-1", "site-2"} and sites["train_sites"] is None
    assert sites["variants"]["ratio_1"]["shift"] is None and sum(s["n_images"] for s in sites["test_sites"].values()) == 16
    per_site = sites["variants"]["ratio_1"]["per_site"]
    assert sum(per_site[site]["pneumothorax"]["n_positive"] for site in per_site) == 5
    assert all(per_site[site]["pneumothorax"]["status"].startswith("too few positives") for site in per_site)
    assert metrics["downstream"]["ratio_1"]["rare"]["n_findings"] == 1
    synthetic = metrics["synthetic"]
    assert synthetic["fidelity"]["synthetic_vs_real_test"]["fid"] is not None
    assert synthetic["lesions"]["mask_adherence"]["all"]["n"] == 12  # the text-conditioned copy has no mask
    assert set(synthetic["lesions"]["condition_accuracy_by_type"]) == {"label+mask", "text"}
    # the operating point comes from the test split: none where it holds too few positives
    assert synthetic["lesions"]["condition_accuracy"]["nodule"]["threshold"] is None
    assert synthetic["lesions"]["condition_accuracy"]["pneumothorax"]["detected"] is not None
    assert synthetic["memorisation"]["synthetic"]["near_copies"] >= 1
    assert set(synthetic["diversity"]["per_finding"]) == {"pneumothorax", "nodule"}

    roc = pd.read_csv("plots/evaluate/roc.csv")
    assert list(roc.columns) == ["variant", "finding", "fpr", "tpr"]
    assert set(roc["variant"]) == set(variants) and "pneumothorax" in set(roc["finding"])
    assert "nodule" not in set(roc["finding"])  # no curve where there is no statistic
    by_ratio = pd.read_csv("plots/evaluate/auroc_by_ratio.csv")
    assert len(by_ratio) == 2 * len(variants) and set(by_ratio["finding"]) == {"pneumothorax", "nodule"}
    row = by_ratio[(by_ratio["finding"] == "pneumothorax") & (by_ratio["variant"] == "ratio_1")].iloc[0]
    assert row["kind"] == "ratio" and row["ratio"] == 1.0 and row["auroc"] == pytest.approx(scored["auroc"])
    nodule_rows = by_ratio[by_ratio["finding"] == "nodule"]
    assert nodule_rows[["auroc", "auroc_ci_low", "auroc_ci_high"]].isna().all().all()
    assert set(nodule_rows["status"]) == {"too few positives (4 < 5)"}
    assert set(by_ratio.loc[by_ratio["kind"] == "baseline", "variant"]) == set(params.mix.baselines)
    report = Path("reports/evaluation.md").read_text()
    assert "](figures/auroc_by_ratio.png)" in report and Path("reports/figures/auroc_by_ratio.png").is_file()
    assert "p vs real_only" in report and "## Caveats" in report
    assert report.index("## Verdict") < report.index("## Downstream classification")
    assert "min. detectable difference" in report and "reading vs real_only" in report
    assert "## Site shift" in report and "### pneumothorax by site" in report
    nodule_section = report[report.index("### nodule"):report.index("### ", report.index("### nodule") + 1)]
    assert "too few positives (4 < 5)" in nodule_section and "|" not in nodule_section  # no table, no p
    assert not Path("reports/figures/roc_nodule.png").exists() and Path("reports/figures/roc_pneumothorax.png").is_file()
    html = Path("reports/evaluation.html").read_text()
    assert "data:image/png;base64," in html and "too few positives (4 &lt; 5)" in html
    page = Path("reports/reader_study/index.html").read_text()
    key = json.loads(Path("reports/reader_study_key.json").read_text())
    assert len(key["items"]) == 8 and page.count("data:image/png;base64,") == 8

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=[params.tracking.experiment])
    names = sorted(runs["tags.mlflow.runName"])
    assert names == sorted([f"evaluate:{v}" for v in variants] + ["evaluate:synthetic", "evaluate:verdict"])
    verdict_run = runs[runs["tags.mlflow.runName"] == "evaluate:verdict"].iloc[0]
    assert verdict_run["tags.verdict.pneumothorax.verdict"] == pneumothorax_verdict["verdict"]
    assert verdict_run["metrics.verdict.pneumothorax.auroc"] == pytest.approx(pneumothorax_verdict["auroc"])
    assert verdict_run["tags.mlflow.note.content"].startswith("# cxrsynth verdict")
    ratio_run = runs[runs["tags.mlflow.runName"] == "evaluate:ratio_0.5"].iloc[0]
    assert ratio_run["params.ratio"] == "0.5" and ratio_run["params.variant"] == "ratio_0.5"
    assert "metrics.per_finding.pneumothorax.auroc" in runs.columns
    assert "metrics.per_finding.pneumothorax.min_detectable_difference_vs_real_only" in runs.columns
    assert ratio_run["tags.per_finding.pneumothorax.reading_vs_real_only"]
    nodule_metrics = [column for column in runs.columns if column.startswith("metrics.per_finding.nodule.")]
    assert sorted(nodule_metrics) == ["metrics.per_finding.nodule.n_negative", "metrics.per_finding.nodule.n_positive"]
    assert ratio_run["tags.per_finding.nodule.status"] == "too few positives (4 < 5)"
    assert "metrics.sites.per_site.site-1.pneumothorax.n_positive" in runs.columns
    assert "metrics.synthetic.lesions.condition_accuracy_by_type.label_mask.pneumothorax.detected" in runs.columns
    assert ratio_run["params.runtime.precision"] == "fp32"  # the classifiers' inference precision (tiny: float32)
    synthetic_run = runs[runs["tags.mlflow.runName"] == "evaluate:synthetic"].iloc[0]
    top_level = {a.path for a in mlflow.MlflowClient().list_artifacts(synthetic_run["run_id"])}
    assert {"auroc_by_ratio.png", "auroc_by_ratio.csv"} <= top_level
