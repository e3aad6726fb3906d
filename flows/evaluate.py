"""evaluate: every variant's classifier on the real test split, and the synthetic set against real
images; metrics for DVC, ROC plot data, figures, a report, a reader-study page, MLflow runs."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from cxrsynth.flows.common import setup
from cxrsynth.tasks import reader_study, sites, stages, tracking
from cxrsynth.tasks.classifier import classifier_memory_format, classifier_precision, resolve_device
from cxrsynth.tasks.classifier.outputs import seed_dirs
from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.io import write_csv, write_json
from cxrsynth.tasks.metrics import classifiers, downstream, inputs, json_ready, numeric, ratios, report, report_figures, textual, verdict
from cxrsynth.tasks.metrics import site_shift
from cxrsynth.tasks.metrics import synthetic as synthetic_metrics
from cxrsynth.tasks.metrics.features import FeatureNetwork, classifier_features, extract_features, load_feature_network
from cxrsynth.tasks.metrics.lesions import SegmenterTraining
from cxrsynth.tasks.params import Params
from cxrsynth.tasks.stages import Dag

REPORTS = Path("reports")  # dvc.yaml's evaluate out; tests/test_stages.py keeps the two equal
FIGURES = REPORTS / "figures"
READER_PAGE = REPORTS / "reader_study" / "index.html"
READER_KEY = REPORTS / "reader_study_key.json"  # outside the folder handed to readers


@task(name="load image sets", cache_policy=NO_CACHE)  # arrays and models: nothing worth hashing
def load_image_sets(params: Params, dag: Dag) -> dict[str, inputs.ImageSet]:
    # evaluate.train_sites: the real training images are those the variants and the generator learnt from
    real = sites.training_sites_only(inputs.read_real(dag.input("evaluate", "prepare_masks", "manifest.parquet")),
                                     params.evaluate.train_sites)
    size = params.ingest.image_size
    sets = {split: inputs.load_set(real[real["split"] == split], ".", size, split) for split in ("test", "train")}
    synthetic = inputs.read_synthetic(dag.input("evaluate", "generate", "manifest.parquet"))
    sets["synthetic"] = inputs.load_set(synthetic, ".", size, "synthetic")
    return sets


@task(name="predict variant", cache_policy=NO_CACHE)
def predict_variant(directory: Path, test: inputs.ImageSet, params: Params, device: torch.device):
    """The variant's classifier of every seed (classifier.seeds order) and their test probabilities
    (seeds, images, findings)."""
    precision = classifier_precision(params.classifier, device).dtype
    layout = classifier_memory_format(params.classifier, params.runtime.channels_last, device)
    models = [classifiers.load(folder, device, layout) for folder in seed_dirs(directory, params.classifier.seeds).values()]
    return models, np.stack([classifiers.predict(model, test.images, batch_size=params.evaluate.batch_size,
                                                 precision=precision) for model in models])


def scoring(params: Params) -> downstream.Scoring:
    config = params.evaluate
    return downstream.Scoring(config.specificity, config.bootstrap, config.seed, config.min_cases)


@task(name="downstream metrics", cache_policy=NO_CACHE)
def downstream_metrics(params: Params, test: inputs.ImageSet, labels: np.ndarray, probabilities: dict[str, np.ndarray],
                       variants: list[tuple[str, float]]) -> dict:
    """Every variant against real-only, every synthetic ratio against the best non-generative baseline
    and as a share of the ceiling's gain: seed-averaged, test patients resampled together."""
    return downstream.score_variants(labels, probabilities, test.frame["patient_id"].astype(str).to_numpy(), variants,
                                     params.generate.rare_findings, scoring(params))


@task(name="site-shift metrics", cache_policy=NO_CACHE)
def site_shift_metrics(params: Params, test_frame: pd.DataFrame, labels: np.ndarray,
                       probabilities: dict[str, np.ndarray]) -> dict:
    """Every variant per test site, and the drop from evaluate.train_sites to the other sites."""
    return site_shift.site_metrics(labels, probabilities, test_frame["site"], params.evaluate.train_sites,
                                   params.evaluate.min_cases)


def _feature_network(params: Params, reference_model) -> FeatureNetwork:
    if params.evaluate.feature_network:
        return load_feature_network(params.evaluate.feature_network, params.ingest.image_size)
    return classifier_features(reference_model)


@task(name="synthetic-set metrics", cache_policy=NO_CACHE)
def synthetic_set_metrics(params: Params, sets: dict, network: FeatureNetwork, reference_model,
                          thresholds: dict, device: torch.device) -> tuple[dict, synthetic_metrics.Features, pd.DataFrame]:
    config, rare = params.evaluate, params.generate.rare_findings
    test, train, synthetic = sets["test"], sets["train"], sets["synthetic"]
    features = synthetic_metrics.Features(*(extract_features(network, s.images, config.batch_size, device, name)
                                            for name, s in (("test", test), ("train", train), ("synthetic", synthetic))))
    synthetic_probabilities = classifiers.predict(reference_model, synthetic.frame, batch_size=config.batch_size,
                                                  precision=classifier_precision(params.classifier, device).dtype)
    memorisation, nearest = synthetic_metrics.memorisation_metrics(
        features, synthetic, train, test, config.memorisation_threshold)
    metrics = {
        "n_images": len(synthetic),
        "fidelity": synthetic_metrics.fidelity_metrics(network, test, train, synthetic, config.seed, device),
        "lesions": synthetic_metrics.lesion_metrics(
            synthetic, train, test, synthetic_metrics.ClassifierCalls(synthetic_probabilities, thresholds), rare,
            SegmenterTraining(config.segmenter_epochs, config.seed), device),
        "diversity": synthetic_metrics.diversity_metrics(features, train, synthetic, config.prdc_k, rare),
        "memorisation": memorisation,
    }
    return metrics, features, nearest


def _report_paths(paths: dict[str, Path]) -> dict[str, str]:
    return {name: path.relative_to(REPORTS).as_posix() for name, path in paths.items()}


def _reader_study(params: Params, sets: dict) -> dict:
    rare, per_source = params.generate.rare_findings, params.evaluate.reader_study_images
    real, synthetic = (reader_study.candidates(s.images, s.frame, synthetic_metrics.finding_of(s.frame, rare), source)
                       for s, source in ((sets["test"], "real"), (sets["synthetic"], "synthetic")))
    items, key = reader_study.build_study(reader_study.pick_real(real, rare, per_source), synthetic, per_source,
                                          params.evaluate.seed)
    reader_study.write_study(items, key, READER_PAGE, READER_KEY)
    return {"n_items": len(items), "study": key["study"]}


def _precision_params(params: Params) -> dict[str, str]:
    """The classifiers' inference precision and memory format (FID's feature network, by default the reference
    classifier, runs in float32 in the classifiers' memory format; the segmenter in float32, contiguous)."""
    device = resolve_device(params.runtime.device)
    return {**classifier_precision(params.classifier, device).params(),
            **classifier_memory_format(params.classifier, params.runtime.channels_last, device).params()}


def _log_variant_runs(params: Params, dag: Dag, variants: list[tuple[str, float]], downstream_by_variant: dict,
                      sites_by_variant: dict) -> None:
    for variant, ratio in variants:
        with tracking.stage_run(dag.stage_for("evaluate"), params, run_name=f"evaluate:{variant}",
                                inputs=(classifiers.variant_dir(dag, variant),),
                                extra_params={"variant": variant, "ratio": ratio, **_precision_params(params)}):
            flat = tracking.flatten(json_ready({**downstream_by_variant[variant], "sites": sites_by_variant[variant]}))
            tracking.log_metrics(numeric(flat))  # a finding with too few cases has None: nothing logged
            mlflow.set_tags(textual(flat))  # its status, each comparison's reading, the best baseline's name
            mlflow.log_artifact(str(FIGURES / f"roc_variant_{variant}.png"), "figures")


def _log_verdict(params: Params, dag: Dag, rows: dict) -> None:
    """The verdict in a run of its own and, under the ``pipeline`` flow, on its parent run: flat
    ``verdict.<finding>.<field>`` metrics, the words as tags, the table as the run's description."""
    flat = tracking.flatten({"verdict": rows})
    table = "# cxrsynth verdict\n\n" + verdict.verdict_markdown(rows) + "\n"
    with tracking.stage_run(dag.stage_for("evaluate"), params, run_name="evaluate:verdict",
                            extra_params=_precision_params(params)):
        tracking.log_metrics(numeric(flat))
        mlflow.set_tags({**textual(flat), "mlflow.note.content": table})
        mlflow.log_text(table, "verdict.md")
    tracking.log_to_pipeline_run(numeric(flat), textual(flat), note=table, texts={"verdict.md": table})


def _log_synthetic_run(params: Params, dag: Dag, metrics: dict) -> None:
    read = (dag.input("evaluate", "prepare_masks", "manifest.parquet"), dag.input("evaluate", "generate", "manifest.parquet"))
    with tracking.stage_run(dag.stage_for("evaluate"), params, run_name="evaluate:synthetic", inputs=read,
                            extra_params=_precision_params(params)):
        flat = tracking.flatten({key: metrics[key] for key in ("synthetic", "test_split", "quarantined")})
        tracking.log_metrics(numeric(flat))
        for name in ("evaluation.md", "evaluation.html"):
            mlflow.log_artifact(str(REPORTS / name), "report")
        mlflow.log_artifacts(str(FIGURES), "report/figures")
        ratio_plot = dag.stage_for("evaluate").plot("auroc_by_ratio.csv")
        for path in (FIGURES / "auroc_by_ratio.png", ratio_plot):  # the ratio comparison, at the run's top level
            mlflow.log_artifact(str(path))
        if READER_PAGE.exists():
            mlflow.log_artifact(str(READER_PAGE), "report/reader_study")


@flow(name="evaluate", log_prints=True)
def evaluate_flow(params_path: str = "params.yaml") -> dict:
    params = setup(params_path)
    config, rare, device = params.evaluate, list(params.generate.rare_findings), resolve_device(params.runtime.device)
    variants, dag = classifiers.variants(params), stages.load()
    sets = load_image_sets(params, dag)
    test = sets["test"]
    labels = inputs.evaluation_labels(test.frame)

    predictions = {variant: predict_variant(classifiers.variant_dir(dag, variant), test, params, device)
                   for variant, _ in variants}
    probabilities = {variant: scores for variant, (_, scores) in predictions.items()}
    downstream_by_variant = downstream_metrics(params, test, labels, probabilities, variants)
    site_section = site_shift_metrics(params, test.frame, labels, probabilities)
    verdict_rows = verdict.verdict_table(downstream_by_variant, variants, rare, scoring(params).alpha)
    # ROC curves of the seed-averaged scores (one curve per variant; its AUROC is near the seeds' mean)
    roc = pd.concat([downstream.roc_points(v, labels, probabilities[v].mean(axis=0), config.min_cases)
                     for v, _ in variants], ignore_index=True)

    ratio_table = ratios.auroc_by_ratio(downstream_by_variant, variants, rare)
    ratios.write_table(ratio_table, dag.stage_for("evaluate").plot("auroc_by_ratio.csv"))
    figure_paths = report_figures.downstream_figures(roc, downstream_by_variant, rare, FIGURES)
    figure_paths["auroc_by_ratio"] = report_figures.ratio_comparison(ratio_table, FIGURES)

    # the synthetic set is measured with real-only's first-seed classifier, at its own operating points
    reference_model, synthetic_section, study = predictions[classifiers.REFERENCE][0][0], None, None
    if len(sets["synthetic"]):
        thresholds = downstream.operating_thresholds(labels, probabilities[classifiers.REFERENCE][0], scoring(params))
        synthetic_section, features, nearest = synthetic_set_metrics(
            params, sets, _feature_network(params, reference_model), reference_model, thresholds, device)
        figure_paths |= report_figures.synthetic_figures(params, sets, features, nearest, FIGURES)
        study = _reader_study(params, sets)
        write_csv(REPORTS / "memorisation.csv", nearest)

    quarantined = [entry for s in sets.values() for entry in s.quarantined]
    if quarantined:
        write_csv(REPORTS / "quarantine.csv", pd.DataFrame(quarantined))
    metrics = json_ready({
        "verdict": verdict_rows,  # first: the answer the project exists for
        "variants": {variant: ratio for variant, ratio in variants},
        "seeds": list(params.classifier.seeds),
        "test_split": {"n_images": len(test),
                       "n_positive": {f: int(np.nansum(labels[:, i] == 1)) for i, f in enumerate(FINDINGS)}},
        "downstream": downstream_by_variant,
        "sites": site_section,
        "synthetic": synthetic_section,
        "reader_study": study,
        "quarantined": len(quarantined),
    })
    write_json(dag.stage_for("evaluate").metric(), metrics, sort_keys=False)  # the verdict first; order fixed by code
    write_csv(dag.stage_for("evaluate").plot("roc.csv"), roc)
    text = report.build_markdown(metrics, variants, rare, config.specificity, _report_paths(figure_paths),
                                 READER_PAGE.relative_to(REPORTS).as_posix() if study else None)
    report.write_report(text, REPORTS / "evaluation.md", REPORTS / "evaluation.html")

    _log_variant_runs(params, dag, variants, downstream_by_variant, site_section["variants"])
    _log_synthetic_run(params, dag, metrics)
    _log_verdict(params, dag, metrics["verdict"])
    print(f"evaluated {len(variants)} variants on {len(test)} test images; report: {REPORTS / 'evaluation.html'}")
    return metrics
