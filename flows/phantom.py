"""phantom: the built-in procedural chest radiograph collections, written like hospital exports.

The training collection at the root of ``data/phantom``, the test collection in ``test/`` and the
ceiling's reserve in ``reserve/`` (``tasks/sources/phantom/selection.py`` picks their patients).
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
from cxrsynth.tasks.sources.phantom.selection import CollectionPlan, collection_plans
from cxrsynth.tasks.sources.phantom.study import RESERVE_NAME, TEST_NAME, TRAINING_NAME
from cxrsynth.tasks.sources.phantom.summary import counts, sample_grid
from cxrsynth.tasks.sources.phantom.writer import Rows, generate_patients, publish, write_tables

# A patient (several studies, each rendered and written as DICOM) is heavier than one ingest image.
GENERATE = Fanout(task(generate_patients, name="phantom_patients", cache_policy=NO_CACHE, retries=1),
                  "phantom", "patient", ChunkRule(min_size=8, max_size=50))


def generate_collection(params: Params, plan: CollectionPlan, root: Path) -> Rows:
    """Every patient of one collection, in parallel chunks, with a progress bar; rows in patient order."""
    parts = GENERATE.run(params, params.phantom.workers, plan.patients, lambda patients: {
        "config": plan.config, "patients": list(patients), "root": root, "collection": plan.collection})
    rows = Rows()
    for part in parts:
        rows.extend(part)
    return rows


def write_collections(params: Params, staging: Path) -> dict[str, tuple[dict, list[str]]]:
    """Every collection written under ``staging``: per collection name, its tables and the site of each image."""
    written = {}
    for plan in collection_plans(params.phantom, params.generate.rare_findings):
        root = staging / plan.collection.folder
        print(f"{plan.collection.name} collection: {len(plan.patients)} patients")
        rows = generate_collection(params, plan, root)
        written[plan.collection.name] = (write_tables(rows, root), rows.sites)
    return written


def summarise(written: dict[str, tuple[dict, list[str]]]) -> dict:
    """The training collection's counts at the top level (as ever), the other collections' under their names."""
    summary = counts(*written[TRAINING_NAME])
    for name, (tables, sites) in written.items():
        if name != TRAINING_NAME:
            summary[name] = counts(tables, sites)
    return summary


def report_collection(name: str, summary: dict) -> None:
    per_finding = ", ".join(f"{finding} {c['present']} ({c['stated']} stated, {c['masks']} masks, {c['uncertain']} "
                            f"hedged, {c['report_only']} report-only)" for finding, c in summary["findings"].items())
    print(f"{name}: {summary['images']} images of {summary['patients']} patients; "
          f"sites {summary['sites']}; no finding {summary['no_finding']}")
    print(f"{name} findings: {per_finding}")


def report(summary: dict, seconds: float) -> None:
    report_collection(TRAINING_NAME, summary)
    for name in (TEST_NAME, RESERVE_NAME):
        if name in summary:
            report_collection(name, summary[name])
    print(f"phantom: every collection in {seconds:.1f} s")


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
        written = write_collections(params, staging)
        publish(staging, out)
        seconds = time.perf_counter() - started
        summary = summarise(written)
        report(summary, seconds)
        tracking.log_metrics({**tracking.flatten(summary), "seconds": seconds})
        mlflow.log_dict(summary, "phantom_counts.json")
        with tempfile.TemporaryDirectory() as folder:
            grid = sample_grid(out, written[TRAINING_NAME][0], Path(folder) / "phantom_samples.png")
            mlflow.log_artifact(str(grid))
    return summary
