"""The ``pipeline`` flow: the one deployed and scheduled from the Prefect UI.

It walks DVC's stage order and runs each stage as one Prefect task through ``dvc repro``, so a
scheduled run is incremental and versioned exactly like a manual ``dvc repro``. Stage flows started
by DVC report to the same Prefect API, carry the pipeline's tag, and their MLflow runs nest under
the pipeline's parent run.
"""

from __future__ import annotations

import os

import cxrsynth.flows.common  # noqa: F401  (sets the telemetry-off environment before prefect loads)
import mlflow
from prefect import flow, get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from cxrsynth.tasks import tracking
from cxrsynth.tasks.dvc_repro import StageFailed, StageResult, repro_stage, stage_order
from cxrsynth.tasks.params import load_params


def _retry_if_transient(task, task_run, state) -> bool:
    try:
        state.result()
    except StageFailed as failure:
        return failure.transient
    except Exception:  # noqa: BLE001 - anything else is not worth a retry
        return False
    return False


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=_retry_if_transient, task_run_name="{stage}")
def run_stage(stage: str, env: dict[str, str]) -> StageResult:
    logger = get_run_logger()
    result = repro_stage(stage, env=env, on_line=logger.info)
    logger.info("stage %s %s in %.1f s", stage, result.status, result.seconds)
    return result


@flow(name="pipeline", log_prints=True)
def pipeline_flow(params_path: str = "params.yaml", stages: list[str] | None = None) -> list[dict]:
    """Reproduce the DAG (or the named stages, in DVC's order) stage by stage through DVC."""
    params = load_params(params_path)
    order = stage_order()
    if stages:
        unknown = sorted(set(stages) - set(order))
        if unknown:
            raise ValueError(f"unknown stages {unknown}; dvc.yaml has {order}")
        order = [name for name in order if name in stages]

    pipeline_id = str(flow_run.id or "local")
    tracking.configure(params)
    results: list[StageResult] = []
    with mlflow.start_run(run_name="pipeline", tags={"cxrsynth.pipeline_run": pipeline_id, "cxrsynth.stage": "pipeline",
                                                     "mlflow.source.git.commit": tracking.git_commit()}) as parent:
        env = {
            tracking.PIPELINE_RUN_ENV: pipeline_id,
            tracking.PARENT_RUN_ENV: parent.info.run_id,
            # api_url is an httpx.URL (used when a profile, not the environment, names the API)
            "PREFECT_API_URL": os.environ.get("PREFECT_API_URL") or str(get_client().api_url).rstrip("/"),
            "TQDM_MININTERVAL": "15",  # progress lines in logs every 15 s, not every frame
        }
        for stage in order:
            result = run_stage(stage, env)
            results.append(result)
            mlflow.log_metric(f"seconds.{stage.replace('@', '_')}", result.seconds)
        mlflow.log_dict({r.stage: r.status for r in results}, "stages.json")
    return [result.__dict__ for result in results]
