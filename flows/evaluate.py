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
from cxrsynth.tasks import reader_study, tracking
from cxrsynth.tasks.classifier import resolve_device
from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.io import atomic_path, write_json
from cxrsynth.tasks.metrics import classifiers, diversity, downstream, figures, inputs, json_ready, numeric, report
from cxrsynth.tasks.metrics import synthetic as synthetic_metrics
from cxrsynth.tasks.metrics.features import FeatureNetwork, classifier_features, extract_features, load_feature_network
from cxrsynth.tasks.params import Params

REPORTS = Path("reports")
FIGURES = REPORTS / "figures"
METRICS = Path("metrics/evaluate.json")
ROC_PLOT = Path("plots/evaluate/roc.csv")
READER_PAGE = REPORTS / "reader_study" / "index.html"
READER_KEY = REPORTS / "reader_study_key.json"  # outside the folder handed to readers
MAX_EMBEDDED = 400  # images per source in the embedding figure


@task(name="load image sets", cache_policy=NO_CACHE)  # arrays and models: nothing worth hashing
def load_image_sets(params: Params) -> dict[str, inputs.ImageSet]:
    real = inputs.read_real()
    size = params.ingest.image_size
    sets = {split: inputs.load_set(real[real["split"] == split], ".", size, split) for split in ("test", "train")}
    sets["synthetic"] = inputs.load_set(inputs.read_synthetic(), ".", size, "synthetic")
    return sets


@task(name="predict variant", cache_policy=NO_CACHE)
def predict_variant(variant: str, test_frame: pd.DataFrame, batch_size: int, device: torch.device):
    model = classifiers.load(classifiers.variant_dir(variant), device)
    return model, classifiers.predict(model, test_frame, batch_size=batch_size)


@task(name="downstream metrics", cache_policy=NO_CACHE)
def downstream_metrics(params: Params, labels: np.ndarray, probabilities: dict[str, np.ndarray]) -> dict:
    config, reference = params.evaluate, probabilities[classifiers.REFERENCE]
    return {variant: downstream.variant_metrics(
                labels, scores, None if variant == classifiers.REFERENCE else reference,
                params.generate.rare_findings, config.specificity, config.bootstrap, config.seed)
            for variant, scores in probabilities.items()}


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
    synthetic_probabilities = classifiers.predict(reference_model, synthetic.frame, batch_size=config.batch_size)
    memorisation, nearest = synthetic_metrics.memorisation_metrics(
        features, synthetic, train, test, config.memorisation_threshold)
    metrics = {
        "n_images": len(synthetic),
        "fidelity": synthetic_metrics.fidelity_metrics(network, test, train, synthetic, config.seed, device),
        "lesions": synthetic_metrics.lesion_metrics(synthetic, train, test, synthetic_probabilities, thresholds, rare,
                                                   config.segmenter_epochs, config.seed, device),
        "diversity": synthetic_metrics.diversity_metrics(features, train, synthetic, config.prdc_k, rare),
        "memorisation": memorisation,
    }
    return metrics, features, nearest


def _write_roc(roc: pd.DataFrame) -> None:
    with atomic_path(ROC_PLOT) as temp:
        roc.to_csv(temp, index=False)


def _downstream_figures(roc: pd.DataFrame, downstream_by_variant: dict, rare: list[str]) -> dict[str, str]:
    paths = {}
    for finding in rare:
        aurocs = {v: m["per_finding"][finding]["auroc"] for v, m in downstream_by_variant.items()}
        n_positive = downstream_by_variant[classifiers.REFERENCE]["per_finding"][finding]["n_positive"]
        path = figures.save(figures.finding_roc_figure(roc, finding, aurocs, n_positive), FIGURES / f"roc_{finding}.png")
        paths[f"roc_{finding}"] = path.relative_to(REPORTS).as_posix()
    for variant in downstream_by_variant:
        figures.save(figures.variant_roc_figure(roc, variant), FIGURES / f"roc_variant_{variant}.png")
    return paths


def _embedding_figure(params: Params, sets: dict, features: synthetic_metrics.Features) -> Path:
    rare, seed = params.generate.rare_findings, params.evaluate.seed
    rng = np.random.default_rng(seed)
    coordinates, sources, names = [], [], []
    for source, image_set, rows in (("real", sets["train"], features.train),
                                    ("synthetic", sets["synthetic"], features.synthetic)):
        picked = np.sort(rng.permutation(len(image_set))[:MAX_EMBEDDED])
        coordinates.append(rows[picked])
        sources += [source] * len(picked)
        finding = synthetic_metrics.finding_of(image_set.frame, rare)
        names += [finding[i] for i in picked]
    embedded = diversity.embed_2d(np.concatenate(coordinates), params.evaluate.embedding, seed)
    return figures.save(figures.embedding_figure(embedded, sources, names, params.evaluate.embedding),
                        FIGURES / "embedding.png")


def _memorisation_figure(params: Params, sets: dict, nearest: pd.DataFrame) -> Path:
    """The six synthetic images closest to a training image, beside it."""
    train, synthetic = sets["train"], sets["synthetic"]
    closest = nearest.sort_values("correlation", ascending=False).head(6)
    synthetic_position = {image_id: i for i, image_id in enumerate(synthetic.ids)}
    train_position = {image_id: i for i, image_id in enumerate(train.ids)}
    threshold = params.evaluate.memorisation_threshold
    captions = [f"r = {r:.3f}" + (" NEAR-COPY" if r >= threshold else "") for r in closest["correlation"]]
    return figures.save(figures.pairs_figure(
        synthetic.images[[synthetic_position[i] for i in closest["image_id"]]],
        train.images[[train_position[i] for i in closest["nearest_by_pixels"]]],
        captions, ("synthetic", "nearest training image")), FIGURES / "memorisation.png")


def _samples_figure(params: Params, sets: dict) -> Path:
    rare = params.generate.rare_findings
    train, synthetic = sets["train"], sets["synthetic"]
    train_names, synthetic_names = (np.asarray(synthetic_metrics.finding_of(s.frame, rare)) for s in (train, synthetic))
    groups = {f: (train.images[train_names == f][:4], synthetic.images[synthetic_names == f][:4]) for f in rare}
    return figures.save(figures.samples_figure(groups), FIGURES / "samples.png")


def _synthetic_figures(params: Params, sets: dict, features: synthetic_metrics.Features, nearest: pd.DataFrame) -> dict[str, str]:
    paths = {"embedding": _embedding_figure(params, sets, features),
             "memorisation": _memorisation_figure(params, sets, nearest),
             "samples": _samples_figure(params, sets)}
    return {name: path.relative_to(REPORTS).as_posix() for name, path in paths.items()}


def _reader_study(params: Params, sets: dict) -> dict:
    rare, per_source = params.generate.rare_findings, params.evaluate.reader_study_images
    real, synthetic = (reader_study.candidates(s.images, s.frame, synthetic_metrics.finding_of(s.frame, rare), source)
                       for s, source in ((sets["test"], "real"), (sets["synthetic"], "synthetic")))
    items, key = reader_study.build_study(reader_study.pick_real(real, rare, per_source), synthetic, per_source,
                                          params.evaluate.seed)
    reader_study.write_study(items, key, READER_PAGE, READER_KEY)
    return {"n_items": len(items), "study": key["study"]}


def _log_variant_runs(params: Params, variants: list[tuple[str, float]], downstream_by_variant: dict) -> None:
    for variant, ratio in variants:
        with tracking.stage_run("evaluate", params, sections=("evaluate",), run_name=f"evaluate:{variant}",
                                inputs=(classifiers.variant_dir(variant),),
                                extra_params={"variant": variant, "ratio": ratio}):
            tracking.log_metrics(numeric(tracking.flatten(json_ready(downstream_by_variant[variant]))))
            mlflow.log_artifact(str(FIGURES / f"roc_variant_{variant}.png"), "figures")


def _log_synthetic_run(params: Params, metrics: dict) -> None:
    with tracking.stage_run("evaluate", params, sections=("evaluate", "mix", "generate"), run_name="evaluate:synthetic",
                            inputs=(inputs.REAL_MANIFEST, inputs.SYNTHETIC_MANIFEST)):
        flat = tracking.flatten({key: metrics[key] for key in ("synthetic", "test_split", "quarantined")})
        tracking.log_metrics(numeric(flat))
        for name in ("evaluation.md", "evaluation.html"):
            mlflow.log_artifact(str(REPORTS / name), "report")
        mlflow.log_artifacts(str(FIGURES), "report/figures")
        if READER_PAGE.exists():
            mlflow.log_artifact(str(READER_PAGE), "report/reader_study")


@flow(name="evaluate", log_prints=True)
def evaluate_flow(params_path: str = "params.yaml") -> dict:
    params = setup(params_path)
    config, rare, device = params.evaluate, list(params.generate.rare_findings), resolve_device(params.runtime.device)
    variants = classifiers.variants(params)
    sets = load_image_sets(params)
    test = sets["test"]
    labels = inputs.evaluation_labels(test.frame)

    predictions = {variant: predict_variant(variant, test.frame, config.batch_size, device) for variant, _ in variants}
    models = {variant: model for variant, (model, _) in predictions.items()}
    probabilities = {variant: scores for variant, (_, scores) in predictions.items()}
    downstream_by_variant = downstream_metrics(params, labels, probabilities)
    roc = pd.concat([downstream.roc_points(v, labels, probabilities[v]) for v, _ in variants], ignore_index=True)

    reference_model = models[classifiers.REFERENCE]
    synthetic_section, figure_paths, study = None, _downstream_figures(roc, downstream_by_variant, rare), None
    if len(sets["synthetic"]):
        thresholds = {f: downstream_by_variant[classifiers.REFERENCE]["per_finding"][f]["threshold_at_specificity"]
                      for f in FINDINGS}
        synthetic_section, features, nearest = synthetic_set_metrics(
            params, sets, _feature_network(params, reference_model), reference_model, thresholds, device)
        figure_paths |= _synthetic_figures(params, sets, features, nearest)
        study = _reader_study(params, sets)
        with atomic_path(REPORTS / "memorisation.csv") as temp:
            nearest.to_csv(temp, index=False)

    quarantined = [entry for s in sets.values() for entry in s.quarantined]
    if quarantined:
        with atomic_path(REPORTS / "quarantine.csv") as temp:
            pd.DataFrame(quarantined).to_csv(temp, index=False)
    metrics = json_ready({
        "variants": {variant: ratio for variant, ratio in variants},
        "test_split": {"n_images": len(test),
                       "n_positive": {f: int(np.nansum(labels[:, i] == 1)) for i, f in enumerate(FINDINGS)}},
        "downstream": downstream_by_variant,
        "synthetic": synthetic_section,
        "reader_study": study,
        "quarantined": len(quarantined),
    })
    write_json(METRICS, metrics)
    _write_roc(roc)
    text = report.build_markdown(metrics, variants, rare, config.specificity, figure_paths,
                                 READER_PAGE.relative_to(REPORTS).as_posix() if study else None)
    report.write_report(text, REPORTS / "evaluation.md", REPORTS / "evaluation.html")

    _log_variant_runs(params, variants, downstream_by_variant)
    _log_synthetic_run(params, metrics)
    print(f"evaluated {len(variants)} variants on {len(test)} test images; report: {REPORTS / 'evaluation.html'}")
    return metrics
