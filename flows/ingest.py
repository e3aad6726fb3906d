"""Stage ``ingest``: the configured data source -> working-resolution images, manifest, split.

Thin: the work is in ``tasks/ingest/``; here it is read from params, fanned out over Prefect
tasks (threads, or Dask when configured), written and logged to MLflow. Nothing logged or
written names a source file or a source patient: images are referred to by their pseudonyms.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from cxrsynth.flows.common import setup
from cxrsynth.flows.fanout import ChunkRule, Fanout
from cxrsynth.tasks import deid, manifest, stages, tracking
from cxrsynth.tasks.ingest import duplicates, images, outputs, select
from cxrsynth.tasks.io import write_csv, write_json, write_parquet, write_png16
from cxrsynth.tasks.params import Params
from cxrsynth.tasks.sources.base import SourceError
from cxrsynth.tasks.sources.decode import ReadLimits
from cxrsynth.tasks.sources.registry import read_source

QUARANTINE_SHOWN = 20  # quarantined images named in the log; all of them are in quarantine.csv
DECODE = Fanout(
    task(images.process_chunk, name="decode_resize", cache_policy=NO_CACHE, retries=1), "ingest", "img", ChunkRule()
)


def read_limits(params: Params) -> ReadLimits:
    """What every image and mask file must satisfy before it is decoded."""
    config = params.ingest
    root = None if config.allow_outside_path else Path(config.path).resolve()
    return ReadLimits(max_pixels=config.max_pixels, min_size=config.min_size, root=root)


def decode_all(items: list[images.WorkItem], params: Params, out: Path) -> dict[str, images.ImageResult]:
    """Decode, resize and write every image over the task runner; results keyed by image_id, in item order."""
    out_root = str(out.resolve())  # absolute: Dask workers need not share our working directory
    limits = read_limits(params)
    parts = DECODE.run(params, params.ingest.workers, items, lambda chunk: {
        "items": chunk, "image_size": params.ingest.image_size, "out_root": out_root, "limits": limits})
    return {result.image_id: result for part in parts for result in part}


@flow(name="ingest", log_prints=True)
def ingest_flow(params_path: str = "params.yaml") -> dict:
    params = setup(params_path)
    config = params.ingest
    dag = stages.load()
    spec = dag.stage_for("ingest")
    out, metrics_path = dag.output(spec.name), spec.metric()
    with tracking.stage_run(spec, params):
        listed = read_source(config.source, Path(config.path).resolve())
        if not listed:
            raise SourceError(f"{config.path}: the {config.source} source lists no images")
        selection = select.select_records(listed, config.views, config.max_images)
        pseudonyms = select.pseudonymise(selection.records)
        shutil.rmtree(out, ignore_errors=True)  # the stage owns data/ingest; no stale images survive a rerun
        results = decode_all(images.work_items(selection.records, pseudonyms), params, out)
        # Before the split: one image is one row, and one patient's.
        resolved = duplicates.resolve(selection.records, pseudonyms, results, config.patient_conflict)
        for image_id in resolved.duplicates:
            duplicates.remove_outputs(out, results[image_id])
        pseudonyms, results = resolved.pseudonyms, resolved.results

        quarantine = outputs.quarantine_frame(selection.records, pseudonyms, results)
        write_csv(out / "quarantine.csv", quarantine)
        # Reports scrubbed and sites pseudonymised here, before the manifest (the first file to hold them) is written.
        records = deid.deidentify(selection.records, [results[p.image_id].site for p in pseudonyms])
        frame = outputs.manifest_frame(records, pseudonyms, results, config.source, config.split.model_dump(), params.seed)
        frame = manifest.write(frame, out / "manifest.parquet", "ingest")
        localisations = outputs.localisation_frame(results)
        write_parquet(out / "localisations.parquet", localisations)
        write_png16(out / "sample_grid.png", outputs.sample_grid(frame, ".", config.sample_grid, params.seed))

        metrics = outputs.metrics(frame, quarantine, localisations, selection)
        metrics.update(duplicates=len(resolved.duplicates), merged_patients=resolved.merged_patients)
        write_json(metrics_path, metrics)
        mlflow.set_tag("cxrsynth.input_md5.ingest_source", outputs.input_digest(selection.records, pseudonyms, results))
        tracking.log_metrics(tracking.flatten(metrics))
        for artifact in (out / "quarantine.csv", out / "sample_grid.png", metrics_path):
            mlflow.log_artifact(str(artifact))
        print(
            f"ingest: {metrics['images']} images of {metrics['patients']} patients, "
            f"{metrics['quarantined']} quarantined, splits "
            + ", ".join(f"{s} {v['images']}" for s, v in metrics["split"].items())
        )
        for row in quarantine.head(QUARANTINE_SHOWN).itertuples():
            print(f"quarantined {row.image_id} (source row {row.row}): {row.reason}")
        if len(quarantine) > QUARANTINE_SHOWN:
            print(f"... and {len(quarantine) - QUARANTINE_SHOWN} more in {out / 'quarantine.csv'}")
    return metrics
