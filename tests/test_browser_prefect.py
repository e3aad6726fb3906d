"""The Prefect UI as a person scheduling the pipeline sees it, against ``prefect server start``.

The ``nightly`` deployment is created from the repository's ``prefect.yaml`` by ``prefect deploy``,
as the README says; the pipeline flow then runs in this process against the server with DVC's
stage runner replaced by a stand-in (each stage is still one Prefect task run, named after the
stage), so the flow run the UI shows is the real flow's without minutes of stage work.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.browser import ROOT, assert_loopback_only, free_port, screenshot, started_server
from tests.conftest import TINY_PARAMS

pytestmark = pytest.mark.browser
PREFECT = Path(sys.executable).with_name("prefect")
# Task runs reach the UI through the server's task-run recorder, so services run; the others are
# switched off (nothing here needs them, and each costs start-up time).
IDLE_SERVICES = ("cancellation_cleanup", "db_vacuum", "event_persister", "event_logger", "foreman", "late_runs",
                 "scheduler", "pause_expirations", "repossessor", "cleanup_reconciler", "triggers")
STAGES = ["phantom", "ingest", "parse_reports", "prepare_masks", "train_diffusion", "generate", "mix@0.5",
          "train_classifier@0.5", "evaluate"]  # a slice of dvc.yaml's order, enough to read in the UI


def _project(root: Path) -> dict:
    """prefect.yaml, the flow file it points at, and tiny params tracking to a local MLflow folder."""
    shutil.copy(ROOT / "prefect.yaml", root / "prefect.yaml")
    (root / "flows").mkdir()
    shutil.copy(ROOT / "flows" / "pipeline.py", root / "flows" / "pipeline.py")
    params = yaml.safe_load(TINY_PARAMS.read_text())
    params["tracking"]["mlflow_uri"] = f"file:{root / 'mlruns'}"  # no database set-up: the runs are not under test
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"][0]


# The flow runs in a child process: an in-process run leaves Prefect's client and events worker
# pointing at this test's server after it stops, and a later prefect_test_harness hangs draining them.
RUN_PIPELINE = """
import sys
import cxrsynth.flows.pipeline as pipeline
from cxrsynth.tasks.dvc_repro import StageResult

def stand_in(stage, env, on_line):
    on_line(f"Running stage '{stage}' (stand-in for dvc repro)")
    return StageResult(stage, "ran", 0.0)

pipeline.stage_order = lambda: sys.argv[1:]
pipeline.repro_stage = stand_in
state = pipeline.pipeline_flow("params.yaml", return_state=True)
assert state.is_completed(), state.message
print(state.state_details.flow_run_id)
"""


def _prefect(root: Path, api: str, *arguments: str, python: bool = False) -> str:
    command = [sys.executable, "-c", *arguments] if python else [str(PREFECT), "--no-prompt", *arguments]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PREFECT_API_URL": api, "MLFLOW_ALLOW_FILE_STORE": "true"})
    assert done.returncode == 0, f"{command[:4]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


def _deploy(root: Path, api: str, pool: str) -> None:
    _prefect(root, api, "work-pool", "create", pool, "--type", "process")
    _prefect(root, api, "deploy", "--all")


def _run_pipeline(root: Path, api: str) -> str:
    """One run of the pipeline flow over STAGES, DVC's stage runner replaced by a stand-in; its flow-run id."""
    return _prefect(root, api, RUN_PIPELINE, *STAGES, python=True).strip().splitlines()[-1]


def test_prefect_ui_shows_the_nightly_schedule_and_a_pipeline_runs_stage_tasks(tmp_path, monkeypatch, page):
    monkeypatch.chdir(tmp_path)
    declared = _project(tmp_path)
    port = free_port()
    url, api = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/api"
    env = {"PREFECT_HOME": str(tmp_path / "prefect_home"), "PREFECT_SERVER_API_PORT": str(port),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           **{f"PREFECT_SERVER_SERVICES_{name.upper()}_ENABLED": "false" for name in IDLE_SERVICES}}
    monkeypatch.delenv("PREFECT_SERVER_API_HOST", raising=False)  # the default host is what is checked
    with started_server([str(PREFECT), "server", "start"], f"{api}/health", "prefect_server", env=env,
                        cwd=tmp_path) as starting:
        server = starting.ready(timeout=180)
        assert_loopback_only(server, "prefect server start")
        _deploy(tmp_path, api, declared["work_pool"]["name"])
        run_id = _run_pipeline(tmp_path, api)

        assert declared["schedules"][0]["cron"] == "0 2 * * *"  # what the UI words below
        page.goto(f"{url}/deployments")
        row = page.get_by_role("row").filter(has_text=declared["name"])
        row.get_by_text("At 02:00 AM every day").wait_for()
        row.get_by_text("pipeline", exact=True).wait_for()  # the deployment's flow
        screenshot(page, "prefect_deployments")

        page.goto(f"{url}/runs/flow-run/{run_id}")
        page.get_by_text("Task Runs", exact=True).click()
        for stage in STAGES:
            page.get_by_text(stage, exact=True).first.wait_for()
        screenshot(page, "prefect_flow_run")
        assert not page.errors, page.errors
