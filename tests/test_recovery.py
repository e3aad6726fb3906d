"""Clean recovery after a kill: no server left behind, stale runs closed, same weights same bytes, serve leaves on SIGTERM."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from types import SimpleNamespace

import mlflow
import pytest
import torch

from cxrsynth.flows import cli, prefect_api, prefect_server
from cxrsynth.tasks import torch_files, tracking
from cxrsynth.tasks.classifier.inference import save_classifier
from cxrsynth.tasks.diffusion.checkpoints import save_checkpoint
from tests.conftest import ROOT

DEAD = f"{socket.gethostname()}:{2**22 + 17}"  # above the kernel's pid_max default: no such process


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as stat:  # a zombie not yet reaped by init counts as gone
        return stat.read().split(") ")[1].startswith("Z")


def test_owner_liveness():
    assert tracking.owner_alive(tracking.owner())
    assert not tracking.owner_alive(DEAD)
    assert tracking.owner_alive("another-host:1")  # cannot be checked from here: left alone


# ---------------------------------------------------------------------------------------------- MLflow


def test_stale_mlflow_runs_are_marked_killed_with_the_reason(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = mlflow.tracking.MlflowClient()
    experiment = client.create_experiment("cxrsynth")

    def running(stage, owner):
        return client.create_run(experiment, tags={"cxrsynth.stage": stage, "cxrsynth.owner": owner}).info.run_id

    stale, alive, other_stage = running("ingest", DEAD), running("ingest", tracking.owner()), running("mix", DEAD)
    assert tracking.close_stale_runs("ingest", "cxrsynth") == [stale]
    run = client.get_run(stale)
    assert run.info.status == "KILLED" and run.data.tags[tracking.KILLED_REASON_TAG] == (
        f"process {DEAD} ended without closing this run (killed?); marked KILLED at the next start of ingest")
    assert client.get_run(alive).info.status == client.get_run(other_stage).info.status == "RUNNING"
    assert tracking.close_stale_runs("ingest", "no-such-experiment") == []


# ---------------------------------------------------------------------------------------------- Prefect


def test_server_start_up_is_retried_and_the_slow_server_stopped(monkeypatch):
    spawned, answers = [], iter([False, True])
    monkeypatch.setattr(prefect_api, "_spawn", lambda port: spawned.append(subprocess.Popen(["sleep", "600"])) or spawned[-1])
    monkeypatch.setattr(prefect_api, "_healthy", lambda url, process, seconds: next(answers))
    process, url = prefect_api.start_server(attempts=3, seconds=0.1)
    assert process is spawned[1] and url.startswith("http://127.0.0.1:") and url.endswith("/api")
    assert spawned[0].poll() is not None  # the first, which never answered, was stopped
    prefect_api.stop_server(process)

    monkeypatch.setattr(prefect_api, "_healthy", lambda url, process, seconds: False)
    with pytest.raises(prefect_api.ServerStartError, match="did not start in 2 attempts of 0.1 s each"):
        prefect_api.start_server(attempts=2, seconds=0.1)
    assert all(p.poll() is not None for p in spawned)


def test_the_temporary_server_process_dies_with_its_parent(tmp_path):
    """The child is spawned as prefect_api spawns it; SIGKILL of the parent must take it along."""
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import subprocess, sys, time
        from cxrsynth.flows import prefect_api
        real = subprocess.Popen  # the launcher as _spawn runs it, with sleep in place of the server
        prefect_api.subprocess.Popen = lambda command, **kw: real([*command[:command.index("-m")], "-c",
                                                                   "import time; time.sleep(600)"], **kw)
        child = prefect_api._spawn(0)
        print(child.pid, flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    child = int(parent.stdout.readline())
    assert not _gone(child)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 20
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(child), "the server outlived its killed parent"


@pytest.mark.slow
def test_stale_flow_runs_are_crashed_with_the_reason():
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Running
    from prefect.testing.utilities import prefect_test_harness

    @flow(name="recovery-probe")
    def probe():
        return 1

    with prefect_test_harness(server_startup_timeout=180), get_client(sync_client=True) as client:
        stale = client.create_flow_run(probe, tags=[f"owner:{DEAD}"], state=Running())
        alive = client.create_flow_run(probe, tags=[f"owner:{tracking.owner()}"], state=Running())
        untagged = client.create_flow_run(probe, state=Running())
        assert prefect_api.close_stale_flow_runs("recovery-probe") == [str(stale.id)]
        state = client.read_flow_run(stale.id).state
        assert state.type.value == "CRASHED" and state.message == (
            f"process {DEAD} ended without finishing this run (killed?); marked at the next start of recovery-probe")
        assert {client.read_flow_run(r.id).state.type.value for r in (alive, untagged)} == {"RUNNING"}


def test_serve_leaves_on_sigterm_when_the_graceful_stop_hangs(monkeypatch):
    from prefect.runner import Runner

    exits = []
    monkeypatch.setattr(Runner, "handle_sigterm", lambda self, *a: threading.Event().wait(0.2))  # never stops the runner
    monkeypatch.setattr(os, "_exit", exits.append)
    cli.exit_on_sigterm(grace_seconds=0.3)
    Runner.handle_sigterm(SimpleNamespace())
    deadline = time.monotonic() + 5
    while not exits and time.monotonic() < deadline:
        time.sleep(0.05)
    assert exits == [128 + signal.SIGTERM]


# ---------------------------------------------------------------------------------------------- bytes


def test_identical_weights_give_identical_files(tmp_path):
    torch.manual_seed(0)
    state = {"weight": torch.randn(4, 3), "step": 7}
    torch_files.save(state, tmp_path / "a" / "model.pt")
    torch_files.save({k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}, tmp_path / "b" / "model.pt")
    assert (tmp_path / "a/model.pt").read_bytes() == (tmp_path / "b/model.pt").read_bytes()
    assert torch.equal(torch.load(tmp_path / "a/model.pt", weights_only=True)["weight"], state["weight"])
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["model.pt"]  # no temporary file left


def test_checkpoints_and_classifiers_are_byte_identical_across_writes(tmp_path):
    from cxrsynth.models.classifier import build_classifier

    torch.manual_seed(0)
    model = build_classifier("densenet_small")
    first, second = tmp_path / "1" / "model.pt", tmp_path / "2" / "model.pt"
    save_classifier(model, first)
    save_classifier(model, second)
    assert first.read_bytes() == second.read_bytes()
    one = save_checkpoint(tmp_path / "c1", 5, {"model": model.state_dict()})
    two = save_checkpoint(tmp_path / "c2", 5, {"model": model.state_dict()})
    assert one.read_bytes() == two.read_bytes()


# ---------------------------------------------------------------------------------------------- a real kill


def _children(pid: int) -> set[int]:
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as listing:
            found |= {int(child) for child in listing.read().split()}
    return found


def _servers_of(paths) -> list[int]:
    """Live processes running the shared server of the project whose state folder is ``paths.root``."""
    found = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            command = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            if prefect_server.SERVER_MODULE.encode() in command and str(paths.root).encode() in command:
                found.append(int(entry))
    return [pid for pid in found if prefect_server.process_alive(pid)]


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)
    return condition()


@pytest.mark.slow
def test_a_killed_stage_leaves_no_server_and_its_runs_are_closed_on_the_next_start(tmp_path):
    """The project's shared server (started by the stage, detached) stops within its idle grace once the stage
    that used it is killed, and after the next, finished, run as well."""
    import numpy as np
    import yaml

    from tests.sourcefiles import write_csv, write_picture

    rng = np.random.default_rng(0)
    rows = [[write_picture(tmp_path / "export" / f"{n}.png", rng.integers(0, 255, (24, 24), dtype=np.uint8)).name, f"P{n}", ""]
            for n in range(600)]
    write_csv(tmp_path / "export" / "index.csv", ["path", "patient_id", "pneumothorax"], rows)
    params = yaml.safe_load((ROOT / "tests" / "params.tiny.yaml").read_text())
    params["ingest"].update(source="folder", path=str(tmp_path / "export"), workers=1)
    params["mix"]["baselines"].remove("ceiling")  # a folder source has no reserve to draw the ceiling from
    params["tracking"]["mlflow_uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    idle_s = 3
    env.update(PYTHONPATH=str(ROOT), PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               CXRSYNTH_PREFECT_SERVER="shared", CXRSYNTH_PREFECT_IDLE_SECONDS=str(idle_s))
    paths = prefect_server.state_paths(tmp_path)
    command = [sys.executable, "-m", "cxrsynth.flows.cli", "stage", "ingest"]

    stage = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = mlflow.tracking.MlflowClient(params["tracking"]["mlflow_uri"])
    deadline = time.monotonic() + 400
    running = []
    while not running and time.monotonic() < deadline and stage.poll() is None:
        time.sleep(1)
        experiment = client.get_experiment_by_name("cxrsynth") if (tmp_path / "mlflow.db").exists() else None
        running = experiment and client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
    assert running, "the stage never opened its MLflow run"
    server = prefect_server.read_state(paths)
    assert server and server.pid in _children(stage.pid), "the stage did not start the project's server"
    assert prefect_server.runs_server(server.pid)
    stage.kill()
    stage.wait()
    assert _wait_for(lambda: _gone(server.pid), idle_s + 30), "the temporary Prefect server outlived the killed stage"
    assert not paths.state.exists(), "the stopped server's record was left behind"

    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert _wait_for(lambda: not _servers_of(paths), idle_s + 30), "the server outlived the finished run"
    killed = client.get_run(running[0].info.run_id)
    assert killed.info.status == "KILLED"
    assert killed.data.tags[tracking.KILLED_REASON_TAG].startswith(f"process {socket.gethostname()}:{stage.pid} ended")
    assert "was left running by a process that is gone: marked Crashed" in second.stdout


def test_every_stage_flow_is_named_after_its_stage():
    """run_flow closes stale runs by stage name, including for train_diffusion's plain-function wrapper."""
    for stage, target in cli.STAGES.items():
        module, _, function = target.partition(":")
        flow = cli.load_flow(f"{module}:{function.replace('_stage', '_flow')}")
        assert flow.name == stage
    assert cli.load_flow(cli.PIPELINE).name == "pipeline"
