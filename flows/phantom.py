"""phantom: the built-in procedural chest radiograph collection, written like a hospital export.

Patients are generated in chunks as Prefect tasks (threads, or Dask when configured) into a
staging folder that replaces ``data/phantom`` only once every file and table is written.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import mlflow
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from cxrsynth.flows.common import setup
from cxrsynth.flows.fanout import ChunkRule, Fanout
from cxrsynth.tasks import stages, tracking
from cxrsynth.tasks.params import Params
from cxrsynth.tasks.sources.phantom.summary import counts, sample_grid
from cxrsynth.tasks.sources.phantom.writer import Rows, generate_patients, publish, write_tables

# A patient (several studies, each rendered and written as DICOM) is heavier than one ingest image.
GENERATE = Fanout(task(generate_patients, name="phantom_patients", cache_policy=NO_CACHE, retries=1),
                  "phantom", "patient", ChunkRule(min_size=8, max_size=50))


def generate_all(params: Params, staging: Path) -> Rows:
    """Every patient, in parallel chunks, with a progress bar; rows in patient order."""
    config = params.phantom
    parts = GENERATE.run(params, config.workers, range(config.n_patients), lambda patients: {
        "config": config, "start": patients.start, "stop": patients.stop, "root": staging})
    rows = Rows()
    for part in parts:
        rows.extend(part)
    return rows


def report(summary: dict, seconds: float) -> None:
    per_finding = ", ".join(f"{name} {c['present']} ({c['masks']} masks, {c['uncertain']} hedged, "
                            f"{c['report_only']} report-only)" for name, c in summary["findings"].items())
    print(f"{summary['images']} images of {summary['patients']} patients in {seconds:.1f} s; "
          f"sites {summary['sites']}; no finding {summary['no_finding']}")
    print(f"findings: {per_finding}")


@flow(name="phantom", log_prints=True)
def phantom_flow(params_path: str = "params.yaml") -> dict:
    params = setup(params_path)
    dag = stages.load()
    spec = dag.stage_for("phantom")
    out = dag.output(spec.name)
    # absolute: Dask workers need not share our working directory
    staging = out.resolve().with_name(f".{out.name}.partial")
    with tracking.stage_run(spec, params):
        shutil.rmtree(staging, ignore_errors=True)
        started = time.perf_counter()
        rows = generate_all(params, staging)
        tables = write_tables(rows, staging)
        publish(staging, out)
        seconds = time.perf_counter() - started
        summary = counts(tables, rows.sites)
        report(summary, seconds)
        tracking.log_metrics({**tracking.flatten(summary), "seconds": seconds})
        mlflow.log_dict(summary, "phantom_counts.json")
        with tempfile.TemporaryDirectory() as folder:
            mlflow.log_artifact(str(sample_grid(out, tables, Path(folder) / "phantom_samples.png")))
    return summary
