"""Stage train_classifier: one downstream classifier per variant, early-stopped on real validation images."""

from __future__ import annotations

import mlflow
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from cxrsynth.flows.common import setup
from cxrsynth.tasks import mixing, stages, tracking
from cxrsynth.tasks.classifier import classifier_precision, resolve_device, train_classifier
from cxrsynth.tasks.classifier.training import VariantImages
from cxrsynth.tasks.classifier.data import check_images
from cxrsynth.tasks.classifier.outputs import write_outputs
from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.params import section_dict


def _finite(value: float) -> float | None:
    return float(value) if value == value else None  # NaN (no scorable finding) becomes null in JSON


@flow(name="train_classifier", log_prints=True)
def train_classifier_flow(params_path: str = "params.yaml", variant: str = "real_only") -> dict:
    params = setup(params_path)
    ratio = mixing.ratio_of(variant, params)
    dag = stages.load()
    spec = dag.stage_for("train_classifier", variant)
    device = resolve_device(params.runtime.device)
    extra = {"variant": variant, "ratio": "none" if ratio is None else ratio,
             **classifier_precision(params.classifier, device).params()}
    with tracking.stage_run(spec, params, run_name=f"train_classifier:{variant}", extra_params=extra):
        frame, variant_config = mixing.read_variant(variant, mixing.variant_path(dag, variant, params, spec.name))
        mlflow.log_params({"augmentation": variant_config["augmentation"] is not None,
                           "class_balance": variant_config["class_balance"]})
        frame, quarantine = check_images(frame, ".", params.ingest.image_size)
        for row in quarantine.itertuples():
            print(f"quarantined {row.image_id}: {row.reason}")
        train, val = frame[frame["split"] == "train"], frame[frame["split"] == "val"]
        result = task(train_classifier, cache_policy=NO_CACHE)(
            VariantImages(train, val, params.ingest.image_size, "."), variant_config, params.classifier, device,
            on_epoch=lambda row: tracking.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"]),
        )
        config = {
            "variant": variant,
            "ratio": ratio,
            "architecture": params.classifier.architecture,
            "params": section_dict(params, "classifier"),
            "variant_config": variant_config,
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "stopped_early": result.stopped_early,
            "monitor": result.monitor,
            "best_val_macro_auroc": _finite(result.history.loc[result.best_epoch - 1, "val_macro_auroc"]),
            "scored_findings": result.scored_findings,
            "pos_weight": dict(zip(FINDINGS, result.pos_weight)) if result.pos_weight else None,
            "rows": {"train": len(train), "val": len(val), "quarantined": len(quarantine)},
            "quarantine": quarantine.to_dict(orient="records"),
            "device": str(device),
        }
        paths = write_outputs(result, dag.output(spec.name), config)
        tracking.log_metrics({"best_epoch": result.best_epoch, "best_val_macro_auroc": config["best_val_macro_auroc"],
                              "quarantined": len(quarantine)})
        for path in paths.values():
            mlflow.log_artifact(str(path), artifact_path="classifier")
    return config
