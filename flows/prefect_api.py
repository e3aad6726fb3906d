"""The Prefect API a stage process talks to, and what a killed stage left behind in it.

Without ``PREFECT_API_URL`` Prefect starts a temporary API server per process: several seconds per
stage of a ``dvc repro``, and when the process is killed (SIGKILL, OOM) its atexit hook never runs
and the server (about 220 MB) keeps listening. Here, by default, the stages of a project share one
temporary server that stops itself when no stage has used it for a while (``prefect_server``);
the stage's own imports run while it starts. With ``CXRSYNTH_PREFECT_SERVER=process`` each process
starts its own instead, as a child that the kernel terminates when its parent dies (Linux
``PR_SET_PDEATHSIG``, requested from the thread that stays for the process's life: the main one).
Either start-up is retried with a longer wait (a loaded machine once timed out Prefect's own 20 s),
and child processes (``dvc repro`` running stages under the ``pipeline`` flow) reuse the server
through ``PREFECT_API_URL`` instead of looking for one each.

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
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from cxrsynth.flows import prefect_server

STARTUP_ATTEMPTS = 3
STARTUP_SECONDS = 60.0
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
SERVER_MODE_ENV = "CXRSYNTH_PREFECT_SERVER"
SERVER_MODES = ("shared", "process")  # one server per project (default) | one per process, as Prefect does
FLUSH_SECONDS = 30.0


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


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/health", timeout=5).status_code == 200
    return False


def _healthy(url: str, process: subprocess.Popen, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        if _answers(url):
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


def server_mode() -> str:
    mode = os.environ.get(SERVER_MODE_ENV, SERVER_MODES[0])
    if mode not in SERVER_MODES:
        raise ValueError(f"{SERVER_MODE_ENV}={mode!r}: expected one of {', '.join(SERVER_MODES)}")
    return mode


def _database_url() -> str:
    from prefect.settings import get_current_settings

    return get_current_settings().server.database.connection_url.get_secret_value()


def lease_shared_server(warm_up: Callable[[], object] = lambda: None, paths: prefect_server.StatePaths | None = None,
                        attempts: int = STARTUP_ATTEMPTS, seconds: float = STARTUP_SECONDS) -> prefect_server.Lease | None:
    """This process's lease on the project's shared server, started if needed; ``warm_up`` runs while it starts.

    None when the running server serves another Prefect database than this process's settings name.
    """
    paths = paths or prefect_server.state_paths()
    database = prefect_server.database_digest(_database_url())
    for attempt in range(1, attempts + 1):
        lease = prefect_server.acquire(paths, database, _free_port())
        if lease is None:
            return None
        try:
            if attempt == 1:
                warm_up()
            if prefect_server.wait_ready(lease, seconds, _answers):
                return lease
        except BaseException:
            lease.release()
            raise
        prefect_server.discard(lease)
        print(f"the shared Prefect API server did not answer within {seconds:g} s (attempt {attempt} of {attempts})",
              file=sys.stderr)
    raise ServerStartError(
        f"the shared temporary Prefect API server did not start in {attempts} attempts of {seconds:g} s each "
        f"(its log: {paths.log}); start one with `prefect server start` and set PREFECT_API_URL"
    )


def flush_to_api(seconds: float = FLUSH_SECONDS) -> None:
    """Send the logs and events Prefect still queues for the API now, while it answers.

    Left to Prefect's exit hook, they went to a server already stopped, and the retries held a
    finished stage's exit for over a minute.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=seconds, at_exit=False)  # not at exit: a later use starts them again


@contextlib.contextmanager
def _own_server() -> Iterator[str]:
    process, url = start_server()
    try:
        yield url
    finally:
        stop_server(process)


@contextlib.contextmanager
def _shared_server(warm_up: Callable[[], object]) -> Iterator[str]:
    lease = lease_shared_server(warm_up)
    if lease is None:
        print("the project's shared Prefect server serves another database; starting one for this process",
              file=sys.stderr)
        warm_up()
        with _own_server() as url:
            yield url
        return
    try:
        yield lease.server.url
    finally:
        lease.release()


@contextlib.contextmanager
def prefect_api(warm_up: Callable[[], object] = lambda: None) -> Iterator[str]:
    """The configured API (PREFECT_API_URL), else a temporary server (the project's shared one, or this
    process's own: ``CXRSYNTH_PREFECT_SERVER``), passed on to this process's children.

    ``warm_up`` (the stage's imports) runs while the shared server starts; it runs first in every other case.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = PREFECT_API_URL.value()
    if configured or server_mode() == "process":
        warm_up()
    if configured:
        yield configured
        return
    server = _own_server() if server_mode() == "process" else _shared_server(warm_up)
    with server as url:
        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url  # children (dvc repro -> cxrsynth stage) use this server too
        try:
            with temporary_settings(updates={PREFECT_API_URL: url}):
                try:
                    yield url
                finally:
                    flush_to_api()
        finally:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous


def owner_tags() -> Iterator[None]:
    """Tag flow runs started inside with this process, so a later start can tell they were left behind."""
    from prefect import tags

    from cxrsynth.tasks.tracking import OWNER_TAG, owner

    return tags(f"{OWNER_TAG}:{owner()}")


def close_stale_flow_runs(flow_name: str) -> list[str]:
    """Set to Crashed every running or pending run of ``flow_name`` whose owner process is gone; their ids."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    from cxrsynth.tasks.tracking import OWNER_TAG, owner_alive

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
