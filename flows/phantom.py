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
from tqdm import tqdm

from cxrsynth.flows.common import setup, task_runner
from cxrsynth.tasks import tracking
from cxrsynth.tasks.params import Params
from cxrsynth.tasks.sources.phantom.summary import counts, sample_grid
from cxrsynth.tasks.sources.phantom.writer import Rows, generate_patients, publish, write_tables

OUT = Path("data/phantom")
PATIENTS_PER_TASK = 50  # enough work per task that Prefect's overhead stays small

generate_task = task(generate_patients, name="phantom_patients", cache_policy=NO_CACHE, retries=1)


def generate_all(params: Params, staging: Path) -> Rows:
    """Every patient, in parallel chunks, with a progress bar; rows in patient order."""
    config = params.phantom
    ranges = [(start, min(start + PATIENTS_PER_TASK, config.n_patients))
              for start in range(0, config.n_patients, PATIENTS_PER_TASK)]
    rows = Rows()
    with task_runner(params, config.workers) as runner:
        futures = [runner.submit(generate_task, parameters={"config": config, "start": start, "stop": stop,
                                                            "root": staging})
                   for start, stop in ranges]
        with tqdm(total=config.n_patients, desc="phantom", unit="patient") as progress:
            for (start, stop), future in zip(ranges, futures, strict=True):
                rows.extend(future.result())
                progress.update(stop - start)
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
    # absolute: Dask workers need not share our working directory
    staging = OUT.resolve().with_name(f".{OUT.name}.partial")
    with tracking.stage_run("phantom", params, sections=("phantom",)):
        shutil.rmtree(staging, ignore_errors=True)
        started = time.perf_counter()
        rows = generate_all(params, staging)
        tables = write_tables(rows, staging)
        publish(staging, OUT)
        seconds = time.perf_counter() - started
        summary = counts(tables, rows.sites)
        report(summary, seconds)
        tracking.log_metrics({**tracking.flatten(summary), "seconds": seconds})
        mlflow.log_dict(summary, "phantom_counts.json")
        with tempfile.TemporaryDirectory() as folder:
            mlflow.log_artifact(str(sample_grid(OUT, tables, Path(folder) / "phantom_samples.png")))
    return summary
