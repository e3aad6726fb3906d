"""Stage ``parse_reports``: report text -> per-finding state, side, zone, size, and a canonical prompt.

Thin: the work is in ``tasks/reports``. Reads the ingest manifest, parses every report with the
configured backend (rules offline by default, or RadGraph from local weights), merges the parsed
states with the source's structured labels (``prefer``, then ``uncertain_policy``), and writes
the manifest with the parse_reports columns, the long findings table, metrics (state counts and
report/structured agreement per finding) and their MLflow run. The findings table keeps each
evidence sentence; it is never logged to MLflow, since report text can hold names.
"""

from __future__ import annotations

import shutil

import mlflow
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from cxrsynth.flows.common import setup
from cxrsynth.tasks import manifest, stages, tracking
from cxrsynth.tasks.io import write_json
from cxrsynth.tasks.reports.backends import parse_texts
from cxrsynth.tasks.reports.evaluation import stage_metrics
from cxrsynth.tasks.reports.merge import manifest_additions
from cxrsynth.tasks.reports.prompts import prompt_counts
from cxrsynth.tasks.reports.records import findings_table, write_findings

parse_task = task(parse_texts, name="parse_report_texts", cache_policy=NO_CACHE)
merge_task = task(manifest_additions, name="merge_structured_labels", cache_policy=NO_CACHE)


@flow(name="parse_reports", log_prints=True)
def parse_reports_flow(params_path: str = "params.yaml") -> dict:
    params = setup(params_path)
    settings = params.parse_reports
    dag = stages.load()
    spec = dag.stage_for("parse_reports")
    out, metrics_path = dag.output(spec.name), spec.metric()
    with tracking.stage_run(spec, params):
        frame = manifest.read(dag.input(spec.name, "ingest", "manifest.parquet"))
        parsed = parse_task(frame["report"].tolist(), settings, params.runtime.device)
        additions = merge_task(frame, parsed, settings.prefer, settings.uncertain_policy)

        shutil.rmtree(out, ignore_errors=True)  # the stage owns data/parse_reports; nothing stale survives
        manifest.write(manifest.extend(frame, additions, "parse_reports"), out / "manifest.parquet", "parse_reports")
        write_findings(findings_table(frame["image_id"].tolist(), parsed), out / "findings.parquet")

        metrics = {"backend": settings.backend, **stage_metrics(frame, additions)}
        write_json(metrics_path, metrics)
        tracking.log_metrics({k: v for k, v in tracking.flatten(metrics).items() if not isinstance(v, str)})
        mlflow.log_artifact(str(metrics_path))
        mlflow.log_text(prompt_counts(additions["prompt"]).to_csv(index=False), "prompt_counts.csv")
        print(f"parse_reports ({settings.backend}): {metrics['n_reports']} reports of {metrics['n_images']} images; "
              + ", ".join(f"{f} {m['final']['present']} present" for f, m in metrics.items() if isinstance(m, dict)
                          and "final" in m))
    return metrics
