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
from tqdm import tqdm

from cxrsynth.flows.common import setup, task_runner
from cxrsynth.tasks import manifest, stages, tracking
from cxrsynth.tasks.io import atomic_path, write_json
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

IMAGES_PER_TASK = 32  # enough work per task that Prefect's overhead stays small

prepare_images_task = task(prepare_images, name="prepare_masks_images", cache_policy=NO_CACHE)


def prepare_all(frame: pd.DataFrame, localisations: pd.DataFrame, params: Params, out: Path) -> list[ImageMasks]:
    """Every image that has a localisation, in parallel chunks, with a progress bar."""
    rows = frame[frame["image_id"].isin(set(localisations["image_id"]))].sort_values("image_id").to_dict("records")
    chunks = [rows[start : start + IMAGES_PER_TASK] for start in range(0, len(rows), IMAGES_PER_TASK)]
    results: list[ImageMasks] = []
    with task_runner(params, params.prepare_masks.workers) as runner:
        futures = []
        for chunk in chunks:
            ids = {row["image_id"] for row in chunk}
            futures.append(runner.submit(prepare_images_task, parameters={
                "rows": chunk,
                "localisations": localisations[localisations["image_id"].isin(ids)],
                "root": str(Path.cwd()),  # absolute: Dask workers need not share our working directory
                "out_dir": out,
                "min_area_px": params.prepare_masks.min_area_px,
            }))
        with tqdm(total=len(rows), desc="prepare_masks", unit="image") as progress:
            for future in futures:
                part = future.result()
                results += part
                progress.update(len(part))
    return results


def write_tables(lesions: pd.DataFrame, rejected: pd.DataFrame, out: Path) -> None:
    with atomic_path(out / "lesions.parquet") as temp:
        lesions.to_parquet(temp, index=False)
    with atomic_path(out / "rejected.csv") as temp:
        rejected.to_csv(temp, index=False)


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
        write_tables(lesions, rejected, out)
        metrics = summarise(written, lesions, rejected, effective_attributes(written, lesions))
        log_counts(metrics)
        write_json(metrics_path, metrics)
        tracking.log_metrics(tracking.flatten(metrics))
        if params.prepare_masks.overlay_images and metrics["images_with_mask"]:
            overlay_figure(written, out / "overlays.png", count=params.prepare_masks.overlay_images)
            mlflow.log_artifact(str(out / "overlays.png"))
        mlflow.log_artifact(str(out / "rejected.csv"))
    return metrics
