"""The whole DAG on the tiny profile (two ratios), as a user runs it, from a fresh copy of the repository.

1. the ``pipeline`` flow under a local Prefect server runs every stage through DVC; the server's
   API lists the pipeline and every stage flow run, and MLflow holds one evaluate run per variant
   with its ratio, nested under the pipeline's parent run;
2. a second ``dvc repro`` does nothing;
3. ``dvc exp run -S`` on the ratio list re-runs only the stages that depend on it (the new ratio's and the
   ceiling's), all under the one temporary Prefect server they share (no ``PREFECT_API_URL`` there).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import ROOT, TINY_PARAMS

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
# The tiny profile with two ratios, not three (step 3 adds a third): each ratio is two more stage processes
# (mix, train_classifier; about 20 s each, mostly imports), and two exercise the ratio foreach as three do.
RATIOS = [0.5, 1]


def _copy_repository(target: Path) -> Path:
    """What a fresh clone holds: tracked files plus untracked ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for relative in filter(None, listed):
        source = ROOT / relative
        if source.is_file():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)
    params = yaml.safe_load(TINY_PARAMS.read_text())
    params["mix"]["ratios"] = RATIOS
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return target


def _environment(root: Path, prefect_home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "CXRSYNTH_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(root),  # the copy's code, whatever the editable install points at
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="1",
        GIT_AUTHOR_NAME="cxrsynth test", GIT_AUTHOR_EMAIL="test@cxrsynth.invalid",
        GIT_COMMITTER_NAME="cxrsynth test", GIT_COMMITTER_EMAIL="test@cxrsynth.invalid",
    )
    return env


def _run(command: list[str], root: Path, env: dict[str, str], timeout: int = 900) -> str:
    completed = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, f"{' '.join(command)} failed:\n{output[-6000:]}"
    return output


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_prefect_server(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-services"],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return server, api
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            break
        time.sleep(1)
    server.kill()
    pytest.fail(f"Prefect server did not start:\n{log.read_text()[-3000:]}")


def _stages_run(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = _copy_repository(tmp_path_factory.mktemp("e2e") / "cxrsynth")
    env = _environment(root, tmp_path_factory.mktemp("prefect_home"))
    _run(["git", "init", "-q"], root, env)
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-q", "-m", "fresh copy"], root, env)
    return root, env


def test_dag_end_to_end(project, tmp_path):
    root, env = project
    params = yaml.safe_load((root / "params.yaml").read_text())
    variants = list(params["mix"]["baselines"]) + [f"ratio_{r}" for r in params["mix"]["ratios"]]

    # 1. the scheduled path: the pipeline flow under a local Prefect server
    server, api = _start_prefect_server(env, tmp_path / "prefect_server.log")
    try:
        pipeline_env = {**env, "PREFECT_API_URL": api}
        _run([str(BIN / "cxrsynth"), "pipeline"], root, pipeline_env, timeout=1500)
        flow_runs = httpx.post(f"{api}/flow_runs/filter", json={"limit": 200}, timeout=30).json()
        flows = {flow["id"]: flow["name"] for flow in httpx.post(f"{api}/flows/filter", json={}, timeout=30).json()}
    finally:
        server.terminate()
        server.wait(timeout=30)
    by_flow: dict[str, list[str]] = {}
    for run in flow_runs:
        by_flow.setdefault(flows[run["flow_id"]], []).append(run["state_type"])
    expected = {"pipeline", "phantom", "ingest", "parse_reports", "prepare_masks", "train_autoencoder",
                "train_diffusion", "generate", "mix", "train_classifier", "evaluate"}
    assert expected <= set(by_flow), f"flow runs missing from the Prefect API: {expected - set(by_flow)}"
    assert all(state == "COMPLETED" for states in by_flow.values() for state in states), by_flow
    assert len(by_flow["train_classifier"]) == len(variants)

    metrics = json.loads((root / "metrics/evaluate.json").read_text())
    assert set(metrics["downstream"]) == set(variants), "evaluate.json's variants are not the params' variants"
    assert (root / "reports/evaluation.md").is_file() and (root / "plots/evaluate/roc.csv").is_file()
    shown = json.loads(subprocess.run([str(BIN / "dvc"), "plots", "show", "--json", "plots/evaluate/auroc_by_ratio.csv"],
                                      cwd=root, env=env, capture_output=True, text=True, check=True).stdout)
    (ratio_plot,) = shown["data"]["plots/evaluate/auroc_by_ratio.csv"]
    assert {row["variant"] for row in ratio_plot["content"]["data"]["values"]} == set(variants)

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(params["tracking"]["experiment"])
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    (pipeline_run,) = [run for run in runs if run.info.run_name == "pipeline"]
    evaluate_runs = {run.info.run_name: run for run in runs if run.info.run_name.startswith("evaluate:")}
    for variant in variants:
        assert f"evaluate:{variant}" in evaluate_runs, f"no MLflow run for {variant}"
        assert "ratio" in evaluate_runs[f"evaluate:{variant}"].data.params
    stage_runs = [run for run in runs if run.info.run_name != "pipeline"]
    seed_runs = [run for run in stage_runs if ":seed_" in run.info.run_name]  # nested under their variant's run
    variant_runs = {run.info.run_id: run.info.run_name for run in stage_runs if run not in seed_runs}
    assert len(seed_runs) == len(variants) * len(params["classifier"]["seeds"])
    assert all(variant_runs[run.data.tags["mlflow.parentRunId"]] == run.info.run_name.rsplit(":", 1)[0]
               for run in seed_runs)
    assert all(run.data.tags.get("mlflow.parentRunId") == pipeline_run.info.run_id for run in stage_runs
               if run not in seed_runs)
    # the pipeline's run opens with the verdict: the table as its description, the numbers as metrics
    assert pipeline_run.data.tags["mlflow.note.content"].startswith("# cxrsynth verdict")
    assert any(key.startswith("verdict.") for key in pipeline_run.data.metrics)
    assert list(json.loads((root / "metrics/evaluate.json").read_text()))[0] == "verdict"
    assert all(run.data.tags.get("cxrsynth.pipeline_run") == pipeline_run.data.tags["cxrsynth.pipeline_run"]
               for run in stage_runs)
    assert any(key.startswith("cxrsynth.input_md5.") for key in evaluate_runs[f"evaluate:{variants[0]}"].data.tags)

    # 2. nothing changed: nothing runs
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-q", "-m", "first run"], root, env)
    noop = _run([str(BIN / "dvc"), "repro"], root, env)
    assert _stages_run(noop) == set(), noop[-3000:]

    # 3. one more ratio: only its mix and classifier, and evaluate, run; being the largest, it is also the
    #    ceiling's ratio (mix.ceiling_ratio null), so the ceiling is drawn again and retrained, and only it
    new_ratio = max(params["mix"]["ratios"]) * 2
    ratios = [*params["mix"]["ratios"], new_ratio]
    experiment_started = datetime.now(timezone.utc)
    experiment_output = _run(
        [str(BIN / "dvc"), "exp", "run", "-S", f"mix.ratios=[{','.join(map(str, ratios))}]"], root, env, timeout=900
    )
    assert _stages_run(experiment_output) == {f"mix@{new_ratio}", f"train_classifier@{new_ratio}", "evaluate",
                                              "mix_baselines", "train_baseline@ceiling"}, (
        experiment_output[-3000:]
    )
    metrics = json.loads((root / "metrics/evaluate.json").read_text())
    assert set(metrics["downstream"]) == {*variants, f"ratio_{new_ratio}"}
    assert f"ratio_{new_ratio}," in (root / "plots/evaluate/auroc_by_ratio.csv").read_text()
    assert _flows_run_on_one_shared_server(root, since=experiment_started) == {"mix", "train_classifier", "evaluate"}


def _flows_run_on_one_shared_server(root: Path, since: datetime) -> set[str]:
    """The flows of the runs started after ``since``, all completed under the project's shared temporary server,
    which was up before the first of them (one server for the whole run, not one per stage); it is then stopped."""
    import signal

    from cxrsynth.flows import prefect_server

    state = prefect_server.read_state(prefect_server.state_paths(root))
    assert state is not None and prefect_server.runs_server(state.pid), "no shared Prefect server after dvc exp run"
    try:
        query = {"limit": 200, "flow_runs": {"start_time": {"after_": since.isoformat()}}}
        runs = httpx.post(f"{state.url}/flow_runs/filter", json=query, timeout=30).json()
        flows = {flow["id"]: flow["name"] for flow in httpx.post(f"{state.url}/flows/filter", json={}, timeout=30).json()}
    finally:
        os.kill(state.pid, signal.SIGTERM)
    assert runs and all(run["state_type"] == "COMPLETED" for run in runs), runs
    first_start = min(datetime.fromisoformat(run["start_time"]) for run in runs)
    assert datetime.fromtimestamp(state.started, timezone.utc) < first_start, "a server was started after the first stage"
    return {flows[run["flow_id"]] for run in runs}
