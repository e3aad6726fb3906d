"""One temporary Prefect API server per project, shared by the stages of a ``dvc repro`` run.

Starting Prefect's API server costs several seconds (its imports, database set-up); ``dvc repro``
runs every stage in a new process, so a server per stage paid that once per stage. Here the first
stage that needs an API starts a detached server and records it in ``.cxrsynth/prefect-server.json``
(pid, port, URL, start time, a digest of the Prefect database it serves); later stages find it there,
check it (the pid is alive and runs this module, ``/health`` answers) and use it.

Who still needs it: each stage registers its pid as a file in ``.cxrsynth/prefect-clients/`` while it
runs. The server watches that folder (``watch``, once a second): files of processes that are gone
(a stage killed with SIGKILL never removes its own) are dropped, and after ``idle_seconds`` with no
live client it clears the state file and stops. So a killed run leaves a server for at most
``idle_seconds`` more, and the grace covers the gap between two stages (DVC committing outputs).

Every read-modify-write of the state and the clients happens under an exclusive lock on
``.cxrsynth/prefect-server.lock``: stages starting at once start one server, and the server never
stops while a stage registers. A state file whose process is gone, or is now another program, or
whose server does not answer in time, is stale and replaced.

The server itself is ``python -m cxrsynth.flows.prefect_server``: Prefect's own server app under
uvicorn (what Prefect's temporary server runs), plus the watchdog thread.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

STATE_DIR = ".cxrsynth"
IDLE_SECONDS_ENV = "CXRSYNTH_PREFECT_IDLE_SECONDS"
DEFAULT_IDLE_SECONDS = 60.0
WATCH_INTERVAL_S = 1.0
SERVER_MODULE = "cxrsynth.flows.prefect_server"


@dataclass(frozen=True)
class ServerState:
    """What ``.cxrsynth/prefect-server.json`` records of the running shared server."""

    pid: int
    port: int
    url: str
    started: float  # time.time() at spawn
    database: str  # digest of the Prefect database URL it serves: a stage with another database starts its own


@dataclass(frozen=True)
class StatePaths:
    """The files of one project's shared server."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / "prefect-server.json"

    @property
    def lock(self) -> Path:
        return self.root / "prefect-server.lock"

    @property
    def clients(self) -> Path:
        return self.root / "prefect-clients"

    @property
    def log(self) -> Path:
        return self.root / "prefect-server.log"


def state_paths(project: str | Path = ".") -> StatePaths:
    return StatePaths(Path(project).resolve() / STATE_DIR)


def idle_seconds() -> float:
    """How long the server waits without a live client before it stops (``CXRSYNTH_PREFECT_IDLE_SECONDS``)."""
    raw = os.environ.get(IDLE_SECONDS_ENV, str(DEFAULT_IDLE_SECONDS))
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{IDLE_SECONDS_ENV}={raw!r}: not a number of seconds") from None
    if seconds <= 0:
        raise ValueError(f"{IDLE_SECONDS_ENV}={raw!r}: must be above 0")
    return seconds


def database_digest(connection_url: str) -> str:
    """A digest, not the URL: a database URL can hold a password, and the state file is plain text."""
    return hashlib.sha256(connection_url.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- state


@contextlib.contextmanager
def locked(paths: StatePaths) -> Iterator[None]:
    """Exclusive lock over the state file and the clients folder (released by the kernel if we die)."""
    paths.clients.mkdir(parents=True, exist_ok=True)
    with paths.lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_state(paths: StatePaths) -> ServerState | None:
    """The recorded server, or None when there is none or the file is unreadable (a stale one is replaced)."""
    try:
        return ServerState(**json.loads(paths.state.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def write_state(paths: StatePaths, state: ServerState) -> None:
    from cxrsynth.tasks.io import write_json  # atomic; imported here so the server process stays lean

    write_json(paths.state, asdict(state))


def clear_state_of(paths: StatePaths, pid: int) -> None:
    """Remove the state file if it still names ``pid`` (a newer server's record is left alone). Hold the lock."""
    state = read_state(paths)
    if state is not None and state.pid == pid:
        paths.state.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    return False


def runs_server(pid: int) -> bool:
    """Whether ``pid`` is alive and is this module's server (not a process that reused a dead server's pid)."""
    if not process_alive(pid):
        return False
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc to check against: trust the pid
    return SERVER_MODULE.encode() in command


def await_exec(pid: int, seconds: float = 10.0) -> None:
    """Wait until a just-spawned ``pid`` runs the server (or exits). Between fork and exec its command
    line is still its parent's, and a stage reading the state file then would call the new server stale
    and start a second one."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process_alive(pid) and not runs_server(pid):
        time.sleep(0.01)


# ---------------------------------------------------------------------------------------------- clients


def register_client(paths: StatePaths, pid: int) -> Path:
    """Mark ``pid`` as a stage using the server. Hold the lock."""
    marker = paths.clients / str(pid)
    marker.touch()
    return marker


def live_clients(paths: StatePaths) -> list[int]:
    """The registered stages still running; markers of processes that are gone are removed."""
    alive = []
    for marker in paths.clients.glob("*"):
        if marker.name.isdigit() and process_alive(int(marker.name)):
            alive.append(int(marker.name))
        else:
            marker.unlink(missing_ok=True)
    return alive


# ---------------------------------------------------------------------------------------------- client side


@dataclass(frozen=True)
class Lease:
    """This process's use of the shared server: its record and this process's client marker."""

    paths: StatePaths
    server: ServerState
    marker: Path

    def release(self) -> None:
        self.marker.unlink(missing_ok=True)


def server_command(paths: StatePaths, port: int) -> list[str]:
    return [sys.executable, "-m", SERVER_MODULE, "--port", str(port), "--state-dir", str(paths.root)]


def spawn_detached(paths: StatePaths, command: list[str]) -> subprocess.Popen:
    """Start ``command`` in its own session (a Ctrl-C or kill of the stage does not reach it), its output to the
    log: never to the stage's stdout, which a caller reading to end of file (DVC, a test) would wait on."""
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
           IDLE_SECONDS_ENV: str(idle_seconds())}
    with paths.log.open("w") as log:
        return subprocess.Popen(command, env=env, cwd=paths.root.parent, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def acquire(paths: StatePaths, database: str, port: int,
            spawn: Callable[[StatePaths, list[str]], subprocess.Popen] | None = None) -> Lease | None:
    """Register this process with the project's server, starting it (detached, on ``port``) when there is none.

    Returns immediately, before a new server answers (``wait_ready``): the stage's own imports overlap its
    start. None when a live server serves another database than this process's.
    """
    with locked(paths):
        state = read_state(paths)
        if state is not None and runs_server(state.pid):
            if state.database != database:
                return None
        else:
            process = (spawn or spawn_detached)(paths, server_command(paths, port))
            await_exec(process.pid)
            state = ServerState(process.pid, port, f"http://127.0.0.1:{port}/api", time.time(), database)
            write_state(paths, state)
        return Lease(paths, state, register_client(paths, os.getpid()))


def wait_ready(lease: Lease, seconds: float, healthy: Callable[[str], bool]) -> bool:
    """Wait until the server answers ``/health``; False when it died or ``seconds`` passed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and runs_server(lease.server.pid):
        if healthy(lease.server.url):
            return True
        time.sleep(0.2)
    return False


def discard(lease: Lease) -> None:
    """Stop a server that did not answer in time and forget it, so the next attempt starts a fresh one."""
    lease.release()
    with locked(lease.paths):
        clear_state_of(lease.paths, lease.server.pid)
        if runs_server(lease.server.pid):
            os.kill(lease.server.pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------- server side


class Stoppable(Protocol):
    """What the watchdog stops: uvicorn's Server has this flag."""

    should_exit: bool


def watch(server: Stoppable, paths: StatePaths, idle_s: float, pid: int, interval_s: float = WATCH_INTERVAL_S,
          clock: Callable[[], float] = time.monotonic) -> None:
    """Stop ``server`` after ``idle_s`` without a live client, or at once when the state names another server."""
    last_busy = clock()
    while not server.should_exit:
        time.sleep(interval_s)
        with locked(paths):
            state = read_state(paths)
            if state is None or state.pid != pid:
                server.should_exit = True  # replaced or cleared (judged stale): nobody will find this server
            elif live_clients(paths):
                last_busy = clock()
            elif clock() - last_busy >= idle_s:
                clear_state_of(paths, pid)  # under the lock: a stage registering now finds no server and starts one
                server.should_exit = True


def serve(port: int, paths: StatePaths, idle_s: float) -> None:
    """Prefect's server app on 127.0.0.1:``port`` until the watchdog (or SIGTERM) stops it."""
    import uvicorn

    config = uvicorn.Config("prefect.server.api.server:create_app", factory=True, host="127.0.0.1", port=port,
                            log_level="error", lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    threading.Thread(target=watch, args=(server, paths, idle_s, os.getpid()), daemon=True).start()
    try:
        server.run()
    finally:
        with locked(paths):
            clear_state_of(paths, os.getpid())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A project's shared temporary Prefect API server (started by its stages).")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True, help="the project's .cxrsynth folder")
    args = parser.parse_args(argv)
    serve(args.port, StatePaths(args.state_dir), idle_seconds())
    return 0


if __name__ == "__main__":
    sys.exit(main())
