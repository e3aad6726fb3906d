"""The Prefect API a stage process talks to, and what a killed stage left behind in it.

Without ``PREFECT_API_URL`` Prefect starts a temporary API server per process; when the process is
killed (SIGKILL, OOM) its atexit hook never runs and the server (about 220 MB) keeps listening.
Here the temporary server is started as a child that the kernel terminates when its parent dies
(Linux ``PR_SET_PDEATHSIG``, requested from the thread that stays for the process's life: the main one), its start-up is retried with a longer wait (a loaded machine once
timed out Prefect's own 20 s), and child processes (``dvc repro`` running stages under the
``pipeline`` flow) reuse it through ``PREFECT_API_URL`` instead of starting one each.

Each stage's flow run carries an owner tag (``owner:<host>:<pid>``); on the next start of the same
flow, a run still marked running or pending whose owner process is gone is set to Crashed with
the reason.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from cxrsynth.tasks.tracking import OWNER_TAG, owner, owner_alive

STARTUP_ATTEMPTS = 3
STARTUP_SECONDS = 60.0
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class ServerStartError(RuntimeError):
    """The temporary Prefect API server did not answer after every attempt."""


# Runs first in the server's process: asks the kernel for SIGTERM when the parent dies (the request
# survives exec), checks the parent is still there, then becomes the server. A launcher rather than
# Popen's preexec_fn, which is unsafe in a process that already runs threads.
_LAUNCHER = (
    "import ctypes, os, signal, sys; "
    f"ctypes.CDLL(None, use_errno=True).prctl({PR_SET_PDEATHSIG}, signal.SIGTERM); "
    "os.getppid() == int(sys.argv[1]) or os._exit(1); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _spawn(port: int) -> subprocess.Popen:
    """Prefect's own ephemeral server command (uvicorn on its app factory, no UI), as our child."""
    import prefect

    command = [
        sys.executable, "-c", _LAUNCHER, str(os.getpid()), "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent), "--factory",
        "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "error",
        "--lifespan", "on",
    ]
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _healthy(url: str, process: subprocess.Popen, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{url}/health").status_code == 200:
                    return True
            time.sleep(0.2)
    return False


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_server(attempts: int = STARTUP_ATTEMPTS, seconds: float = STARTUP_SECONDS) -> tuple[subprocess.Popen, str]:
    """A temporary API server that dies with this process: (process, API URL); retried on a slow start."""
    for attempt in range(1, attempts + 1):
        port = _free_port()
        url = f"http://127.0.0.1:{port}/api"
        process = _spawn(port)
        if _healthy(url, process, seconds):
            return process, url
        stop_server(process)
        print(f"Prefect API server did not answer within {seconds:g} s (attempt {attempt} of {attempts})", file=sys.stderr)
    raise ServerStartError(
        f"the temporary Prefect API server did not start in {attempts} attempts of {seconds:g} s each; start one with "
        "`prefect server start` and set PREFECT_API_URL"
    )


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """The configured API (PREFECT_API_URL), else a temporary server of this process, shared with its children."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    process, url = start_server()
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url  # children (dvc repro -> cxrsynth stage) use this server too
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        stop_server(process)


def owner_tags() -> Iterator[None]:
    """Tag flow runs started inside with this process, so a later start can tell they were left behind."""
    from prefect import tags

    return tags(f"{OWNER_TAG}:{owner()}")


def close_stale_flow_runs(flow_name: str) -> list[str]:
    """Set to Crashed every running or pending run of ``flow_name`` whose owner process is gone; their ids."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    prefix = f"{OWNER_TAG}:"
    closed = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING]))),
        )
        for run in runs:
            process = next((tag[len(prefix):] for tag in run.tags if tag.startswith(prefix)), None)
            if process is None or owner_alive(process):
                continue  # not ours to judge, or still running
            message = f"process {process} ended without finishing this run (killed?); marked at the next start of {flow_name}"
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            closed.append(str(run.id))
    return closed
