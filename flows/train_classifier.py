"""Stage train_classifier: one downstream classifier per variant and seed, early-stopped on real
validation images. Every variant trains the same ``classifier.seeds`` (``seed_<s>/`` in its folder),
so evaluate compares variants seed by seed and counts the training noise."""

from __future__ import annotations

import mlflow
import numpy as np
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from cxrsynth.flows.common import setup
from cxrsynth.tasks import mixing, stages, tracking
from cxrsynth.tasks.classifier import (
    classifier_memory_format,
    classifier_precision,
    predict,
    resolve_device,
    train_classifier,
)
from cxrsynth.tasks.classifier.data import check_images
from cxrsynth.tasks.classifier.outputs import seed_dir, write_outputs, write_variant_config
from cxrsynth.tasks.classifier.training import VariantImages, finding_aurocs
from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.manifest import label_matrix
from cxrsynth.tasks.params import Params, section_dict


def _finite(value: float) -> float | None:
    return float(value) if value == value else None  # NaN (no scorable finding) becomes null in JSON


def _val_aurocs(model, images: VariantImages, params: Params, device) -> dict[str, float]:
    """The best epoch's validation AUROC per finding (findings with both classes in validation)."""
    precision = classifier_precision(params.classifier, device).dtype
    probabilities = predict(model, images.val_pixels, batch_size=params.evaluate.batch_size, precision=precision)
    return finding_aurocs(label_matrix(images.val), probabilities)  # the labels training validated on


def _train_seed(seed: int, images: VariantImages, variant_config: dict, params: Params, device, base: dict,
                directory) -> dict:
    """One seed's classifier, in its own MLflow run nested under the variant's; its config."""
    with tracking.child_run(f"train_classifier:{base['variant']}:seed_{seed}",
                            {"seed": seed, "variant": base["variant"], "ratio": base["ratio"]},
                            tags={"cxrsynth.variant": base["variant"], "cxrsynth.classifier_seed": str(seed)}):
        result = task(train_classifier, cache_policy=NO_CACHE, task_run_name=f"seed {seed}")(
            images, variant_config, params.classifier, device, seed=seed, channels_last=params.runtime.channels_last,
            on_epoch=lambda row: tracking.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"]),
        )
        val_auroc = _val_aurocs(result.model, images, params, device)
        config = {
            **base, "seed": seed,
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "stopped_early": result.stopped_early,
            "monitor": result.monitor,
            "best_val_macro_auroc": _finite(result.history.loc[result.best_epoch - 1, "val_macro_auroc"]),
            "val_auroc": val_auroc,
            "scored_findings": result.scored_findings,
            "pos_weight": dict(zip(FINDINGS, result.pos_weight)) if result.pos_weight else None,
        }
        paths = write_outputs(result, seed_dir(directory, seed), config)
        tracking.log_metrics({"best_epoch": result.best_epoch, "best_val_macro_auroc": config["best_val_macro_auroc"],
                              **{f"val_auroc.{finding}": value for finding, value in val_auroc.items()}})
        for path in paths.values():
            mlflow.log_artifact(str(path), artifact_path="classifier")
    return config


def seed_means(per_seed: list[dict]) -> dict[str, float]:
    """The variant run's figures: the mean over seeds of each seed's best validation macro AUROC and
    per-finding AUROC (a finding in the mean only when every seed scored it)."""
    means = {}
    macro = [config["best_val_macro_auroc"] for config in per_seed]
    if all(value is not None for value in macro):
        means["mean_best_val_macro_auroc"] = float(np.mean(macro))
    for finding in FINDINGS:
        values = [config["val_auroc"].get(finding) for config in per_seed]
        if all(value is not None for value in values):
            means[f"mean_val_auroc.{finding}"] = float(np.mean(values))
    return means


@flow(name="train_classifier", log_prints=True)
def train_classifier_flow(params_path: str = "params.yaml", variant: str = "real_only") -> dict:
    params = setup(params_path)
    ratio = mixing.ratio_of(variant, params)
    dag = stages.load()
    spec = dag.stage_for("train_classifier", variant)
    device = resolve_device(params.runtime.device)
    shown_ratio = "none" if ratio is None else ratio
    extra = {"variant": variant, "ratio": shown_ratio, **classifier_precision(params.classifier, device).params(),
             **classifier_memory_format(params.classifier, params.runtime.channels_last, device).params()}
    with tracking.stage_run(spec, params, run_name=f"train_classifier:{variant}", extra_params=extra):
        mlflow.set_tags({"cxrsynth.variant": variant, "cxrsynth.ratio": str(shown_ratio)})
        frame, variant_config = mixing.read_variant(variant, mixing.variant_path(dag, variant, params, spec.name))
        mlflow.log_params({"augmentation": variant_config["augmentation"] is not None,
                           "class_balance": variant_config["class_balance"]})
        frame, quarantine = check_images(frame, ".", params.ingest.image_size)
        for row in quarantine.itertuples():
            print(f"quarantined {row.image_id}: {row.reason}")
        train, val = frame[frame["split"] == "train"], frame[frame["split"] == "val"]
        images = VariantImages(train, val, params.ingest.image_size, ".").decoded(  # once for every seed
            lesion_maps=params.classifier.lesion_weight > 0)
        base = {
            "variant": variant, "ratio": ratio, "architecture": params.classifier.architecture,
            "params": section_dict(params, "classifier"), "variant_config": variant_config,
            "rows": {"train": len(train), "val": len(val), "quarantined": len(quarantine)},
            "quarantine": quarantine.to_dict(orient="records"), "device": str(device),
        }
        directory = dag.output(spec.name)
        per_seed = [_train_seed(seed, images, variant_config, params, device, base, directory)
                    for seed in params.classifier.seeds]
        means = seed_means(per_seed)
        config = {**base, "seeds": list(params.classifier.seeds), **means,
                  "per_seed": {config["seed"]: {key: config[key] for key in ("best_epoch", "best_val_macro_auroc",
                                                                             "val_auroc", "stopped_early")}
                               for config in per_seed}}
        write_variant_config(directory, config)
        tracking.log_metrics({**means, "quarantined": len(quarantine)})
    return config
