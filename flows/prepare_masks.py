"""prepare_masks: every source localisation to one binary lesion mask at the working resolution.

Reads the parse_reports manifest and ingest's localisations; writes one PNG per lesion, one
bit-coded label map per image, the lesions table with each lesion's attributes, the rejected
localisations with their reasons, and the manifest with ``mask_path`` and ``n_lesions``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from cxrsynth.flows.common import setup
from cxrsynth.flows.fanout import ChunkRule, Fanout
from cxrsynth.tasks import manifest, stages, tracking
from cxrsynth.tasks.io import write_csv, write_json, write_parquet
from cxrsynth.tasks.masks.attributes import effective_attributes
from cxrsynth.tasks.masks.overlay import overlay_figure
from cxrsynth.tasks.masks.prepare import (
    ImageMasks,
    lesions_table,
    manifest_additions,
    prepare_images,
    read_localisations,
    rejected_table,
    unknown_images,
)
from cxrsynth.tasks.masks.summary import summarise
from cxrsynth.tasks.params import Params

PREPARE = Fanout(task(prepare_images, name="prepare_masks_images", cache_policy=NO_CACHE),
                 "prepare_masks", "image", ChunkRule())


def prepare_all(frame: pd.DataFrame, localisations: pd.DataFrame, params: Params, out: Path) -> list[ImageMasks]:
    """Every image that has a localisation, in parallel chunks, with a progress bar."""
    rows = frame[frame["image_id"].isin(set(localisations["image_id"]))].sort_values("image_id").to_dict("records")
    parts = PREPARE.run(params, params.prepare_masks.workers, rows, lambda chunk: {
        "rows": chunk,
        "localisations": localisations[localisations["image_id"].isin({row["image_id"] for row in chunk})],
        "root": str(Path.cwd()),  # absolute: Dask workers need not share our working directory
        "out_dir": out,
        "min_area_px": params.prepare_masks.min_area_px,
    })
    return [masks for part in parts for masks in part]


def log_counts(metrics: dict) -> None:
    unmasked = ", ".join(f"{f} {c['without_mask']}/{c['total']}" for f, c in metrics["positives"].items())
    print(f"positives without a mask (label and text conditioning only): {unmasked}")
    print(f"{metrics['lesions']} lesion masks on {metrics['images_with_mask']} images; "
          f"{metrics['rejected']} localisations rejected {metrics['rejected_by_reason']}")


@flow(name="prepare_masks", log_prints=True)
def prepare_masks_flow(params_path: str = "params.yaml") -> dict:
    params = setup(params_path)
    dag = stages.load()
    spec = dag.stage_for("prepare_masks")
    out, metrics_path = dag.output(spec.name), spec.metric()
    with tracking.stage_run(spec, params):
        frame = manifest.read(dag.input(spec.name, "parse_reports", "manifest.parquet"))
        localisations = read_localisations(dag.input(spec.name, "ingest", "localisations.parquet"))
        for folder in ("lesions", "masks"):  # a rerun must not keep masks of lesions that are gone
            shutil.rmtree(out / folder, ignore_errors=True)
        results = prepare_all(frame, localisations, params, out)
        lesions = lesions_table(results)
        rejected = rejected_table(results, unknown_images(localisations, frame["image_id"]))
        additions = manifest_additions(frame["image_id"], results)
        written = manifest.write(manifest.extend(frame, additions, "prepare_masks"), out / "manifest.parquet", "prepare_masks")
        write_parquet(out / "lesions.parquet", lesions)
        write_csv(out / "rejected.csv", rejected)
        metrics = summarise(written, lesions, rejected, effective_attributes(written, lesions))
        log_counts(metrics)
        write_json(metrics_path, metrics)
        tracking.log_metrics(tracking.flatten(metrics))
        if params.prepare_masks.overlay_images and metrics["images_with_mask"]:
            overlay_figure(written, out / "overlays.png", count=params.prepare_masks.overlay_images)
            mlflow.log_artifact(str(out / "overlays.png"))
        mlflow.log_artifact(str(out / "rejected.csv"))
    return metrics
