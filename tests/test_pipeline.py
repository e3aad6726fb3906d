import os
import subprocess
import sys

import pytest
import yaml

from cxrsynth.tasks import dvc_repro
from cxrsynth.tasks.dvc_repro import StageFailed
from tests.conftest import ROOT


def test_stage_order_follows_the_dag():
    order = dvc_repro.stage_order(ROOT)
    assert order[:4] == ["phantom", "ingest", "parse_reports", "prepare_masks"]
    assert order[-1] == "evaluate"
    assert order.index("train_diffusion") < order.index("generate") < order.index("mix@0.5")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for ratio in params["mix"]["ratios"]:
        assert order.index(f"mix@{ratio}") < order.index(f"train_classifier@{ratio}")
    for baseline in params["mix"]["baselines"]:
        assert f"train_baseline@{baseline}" in order


def _scratch_repo(tmp_path, cmd):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*dvc_repro._dvc_command(), "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"make": {"cmd": cmd, "outs": ["out.txt"]}}}))
    return tmp_path


def test_repro_stage_runs_then_skips(tmp_path):
    repo = _scratch_repo(tmp_path, "echo hello > out.txt")
    lines = []
    assert dvc_repro.repro_stage("make", repo, on_line=lines.append).status == "ran"
    assert (repo / "out.txt").read_text().strip() == "hello"
    assert dvc_repro.repro_stage("make", repo).status == "skipped"
    assert any("make" in line for line in lines)


def test_failed_stage_is_named_with_its_output(tmp_path):
    repo = _scratch_repo(tmp_path, "echo boom-on-purpose >&2; exit 3")
    with pytest.raises(StageFailed, match="stage 'make' failed") as failure:
        dvc_repro.repro_stage("make", repo)
    assert "boom-on-purpose" in str(failure.value)
    assert not failure.value.transient


def test_lock_contention_counts_as_transient():
    failure = StageFailed("ingest", 1, "ERROR: Unable to acquire lock. Most likely another DVC process is running", True)
    assert failure.transient


def test_prefect_yaml_deployment_loads():
    from prefect.client.schemas.schedules import CronSchedule

    from cxrsynth.flows.cli import load_flow

    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (deployment,) = config["deployments"]
    path, function = deployment["entrypoint"].split(":")
    module = path.removesuffix(".py").replace("/", ".")
    flow = load_flow(f"{module}:{function}")
    assert flow.name == "pipeline"
    assert set(deployment["parameters"]) <= set(flow.parameters.properties)
    for schedule in deployment["schedules"]:
        CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])


def test_serve_deployment_has_the_schedule():
    from cxrsynth.flows.cli import deployment

    built = deployment("nightly", "30 1 * * 1-5", params_path="tests/params.tiny.yaml")
    assert built.entrypoint == "flows/pipeline.py:pipeline_flow"
    assert built.schedules[0].schedule.cron == "30 1 * * 1-5"
    assert built.parameters == {"params_path": "tests/params.tiny.yaml"}
    assert built.concurrency_limit == 1


def test_serve_runner_webserver_binds_loopback_unless_told():
    """`cxrsynth serve` reads Prefect's runner host after importing cxrsynth.flows: 127.0.0.1 by
    default (Prefect's own default is "localhost"), the environment's host when it names one."""
    probe = ("from cxrsynth.flows.cli import deployment; deployment('nightly', '0 2 * * *'); "
             "from prefect.settings import PREFECT_RUNNER_SERVER_HOST; print(PREFECT_RUNNER_SERVER_HOST.value())")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_RUNNER_SERVER_HOST"}
    for told, expected in ((None, "127.0.0.1"), ("0.0.0.0", "0.0.0.0")):
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=ROOT,
                              env=env | ({"PREFECT_RUNNER_SERVER_HOST": told} if told else {}))
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == expected
