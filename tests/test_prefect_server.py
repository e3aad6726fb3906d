"""The project's shared temporary Prefect server: one per project, found again, replaced when stale, stopped when idle.

A stand-in process (sleep, whose command line names the server module) plays the server here; the
real server's start, reuse and stop after a killed stage are in tests/test_recovery.py.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from types import SimpleNamespace

import pytest

from cxrsynth.flows import prefect_api, prefect_server
from tests.conftest import ROOT

DATABASE = prefect_server.database_digest("sqlite+aiosqlite:///somewhere/prefect.db")
# Sleeps; its command line names the server module, as the real server's does (runs_server checks that).
STAND_IN = [sys.executable, "-c", "import time; time.sleep(600)", prefect_server.SERVER_MODULE]


@pytest.fixture
def paths(tmp_path):
    return prefect_server.state_paths(tmp_path)


@pytest.fixture
def stand_ins():
    """Spawns stand-in servers (for acquire's ``spawn``); kills them all afterwards."""
    spawned = []

    def spawn(paths, command):
        assert command[1:3] == ["-m", prefect_server.SERVER_MODULE] and "--state-dir" in command
        spawned.append(subprocess.Popen(STAND_IN))
        return spawned[-1]

    spawn.spawned = spawned
    yield spawn
    for process in spawned:
        process.kill()
        process.wait()


def _wait_gone(process: subprocess.Popen, seconds: float = 10) -> bool:
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_the_first_stage_starts_the_server_and_later_ones_reuse_it(paths, stand_ins):
    first = prefect_server.acquire(paths, DATABASE, 41001, spawn=stand_ins)
    second = prefect_server.acquire(paths, DATABASE, 41002, spawn=stand_ins)
    assert len(stand_ins.spawned) == 1 and first.server == second.server
    assert first.server.url == "http://127.0.0.1:41001/api" and first.server.pid == stand_ins.spawned[0].pid
    recorded = json.loads(paths.state.read_text())
    assert recorded["pid"] == first.server.pid and recorded["database"] == DATABASE and recorded["started"] <= time.time()
    assert prefect_server.live_clients(paths) == [os.getpid()]
    first.release()
    assert prefect_server.live_clients(paths) == []


def test_stale_state_is_replaced(paths, stand_ins):
    gone = subprocess.Popen(["true"])
    gone.wait()
    for stale_pid in (gone.pid, os.getpid()):  # a dead server; a live process that is not one (pid reused)
        prefect_server.write_state(paths, prefect_server.ServerState(stale_pid, 1, "http://127.0.0.1:1/api", 0.0, DATABASE))
        lease = prefect_server.acquire(paths, DATABASE, 41003, spawn=stand_ins)
        assert lease.server.pid == stand_ins.spawned[-1].pid != stale_pid
        paths.state.unlink()
    assert len(stand_ins.spawned) == 2
    paths.state.write_text("{half a reco")  # a torn or foreign file counts as no server
    assert prefect_server.read_state(paths) is None


def test_a_server_of_another_database_is_left_alone(paths, stand_ins):
    prefect_server.acquire(paths, DATABASE, 41004, spawn=stand_ins)
    assert prefect_server.acquire(paths, prefect_server.database_digest("postgresql://elsewhere"), 41005,
                                  spawn=stand_ins) is None
    assert len(stand_ins.spawned) == 1 and prefect_server.read_state(paths).database == DATABASE
    assert "elsewhere" not in paths.state.read_text() and "somewhere" not in paths.state.read_text()


def test_a_server_not_yet_exec_ed_is_not_taken_for_stale(paths):
    """A spawned server's command line names the module only after exec: acquire waits for it, so the
    next stage finds the server it started instead of starting a second one."""
    spawned = []

    def slow_exec(paths, command):  # a child that takes a moment before it becomes the stand-in server
        script = "import json, os, time; time.sleep(0.5); command = json.loads(os.environ['STAND_IN']); os.execv(command[0], command)"
        spawned.append(subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "STAND_IN": json.dumps(STAND_IN)}))
        return spawned[-1]

    try:
        first = prefect_server.acquire(paths, DATABASE, 41006, spawn=slow_exec)
        second = prefect_server.acquire(paths, DATABASE, 41007, spawn=slow_exec)
        assert len(spawned) == 1 and first.server == second.server
    finally:
        for process in spawned:
            process.kill()
            process.wait()


def test_stages_starting_at_once_start_one_server(paths):
    """Separate processes race for the lock; each prints the server it got and stays registered until told."""
    script = textwrap.dedent(f"""
        import subprocess, sys
        from pathlib import Path
        from cxrsynth.flows import prefect_server
        paths = prefect_server.StatePaths(Path(sys.argv[1]))
        spawn = lambda paths, command: subprocess.Popen({STAND_IN!r}, stdout=subprocess.DEVNULL, start_new_session=True)
        lease = prefect_server.acquire(paths, {DATABASE!r}, 41006, spawn=spawn)
        print(lease.server.pid, flush=True)
        sys.stdin.read()
    """)
    stages = [subprocess.Popen([sys.executable, "-c", script, str(paths.root)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(4)]
    try:
        servers = {int(stage.stdout.readline()) for stage in stages}
        assert len(servers) == 1, f"{len(servers)} servers started"
        assert sorted(prefect_server.live_clients(paths)) == sorted(stage.pid for stage in stages)
        assert prefect_server.read_state(paths).pid in servers
    finally:
        for stage in stages:
            stage.communicate("")
        for pid in servers:
            os.kill(pid, signal.SIGKILL)
    assert prefect_server.live_clients(paths) == []  # the markers of finished stages are dropped


def _watching(paths, pid, idle_s):
    server = SimpleNamespace(should_exit=False)
    watcher = threading.Thread(target=prefect_server.watch, args=(server, paths, idle_s, pid), kwargs={"interval_s": 0.05})
    watcher.start()
    return server, watcher


def test_the_server_stops_after_the_idle_grace_once_no_live_stage_is_registered(paths):
    client = subprocess.Popen(["sleep", "600"])
    state = prefect_server.ServerState(12345, 1, "http://127.0.0.1:1/api", time.time(), DATABASE)
    prefect_server.write_state(paths, state)
    with prefect_server.locked(paths):
        prefect_server.register_client(paths, client.pid)
        prefect_server.register_client(paths, 2**22 + 17)  # above pid_max: a stage long gone (killed)
    server, watcher = _watching(paths, state.pid, idle_s=0.3)
    time.sleep(1.0)
    assert not server.should_exit, "stopped while a stage was running"
    assert prefect_server.live_clients(paths) == [client.pid]  # the dead stage's marker is gone
    client.kill()
    client.wait()
    killed_at = time.monotonic()
    watcher.join(timeout=10)
    assert server.should_exit and 0.3 - 0.05 <= time.monotonic() - killed_at < 5  # the grace, less one check interval
    assert not paths.state.exists(), "the stopped server's record was left behind"


def test_the_server_stops_when_its_record_names_another(paths):
    prefect_server.write_state(paths, prefect_server.ServerState(777, 1, "http://127.0.0.1:1/api", time.time(), DATABASE))
    server, watcher = _watching(paths, pid=888, idle_s=600)
    watcher.join(timeout=10)
    assert server.should_exit and prefect_server.read_state(paths).pid == 777  # the other's record is kept


def test_a_server_that_never_answers_is_discarded_and_started_again(paths, stand_ins, monkeypatch):
    monkeypatch.setattr(prefect_server, "spawn_detached", stand_ins)
    answers = iter([False, True])
    monkeypatch.setattr(prefect_api, "_answers", lambda url: next(answers))
    monkeypatch.setattr(prefect_api, "_database_url", lambda: "sqlite+aiosqlite:///somewhere/prefect.db")
    warmed = []
    lease = prefect_api.lease_shared_server(warm_up=lambda: warmed.append(1), paths=paths, seconds=0.1)
    assert len(stand_ins.spawned) == 2 and lease.server.pid == stand_ins.spawned[1].pid
    assert _wait_gone(stand_ins.spawned[0]), "the server that never answered was left running"
    assert warmed == [1] and prefect_server.read_state(paths) == lease.server
    lease.release()

    monkeypatch.setattr(prefect_api, "_answers", lambda url: False)
    with pytest.raises(prefect_api.ServerStartError, match="did not start in 2 attempts of 0.1 s each"):
        prefect_api.lease_shared_server(paths=paths, attempts=2, seconds=0.1)
    assert prefect_server.read_state(paths) is None and prefect_server.live_clients(paths) == []


def test_a_failed_warm_up_releases_the_lease(paths, stand_ins, monkeypatch):
    monkeypatch.setattr(prefect_server, "spawn_detached", stand_ins)
    monkeypatch.setattr(prefect_api, "_database_url", lambda: "sqlite+aiosqlite:///somewhere/prefect.db")

    def broken_import():
        raise ImportError("no module named stage")

    with pytest.raises(ImportError):
        prefect_api.lease_shared_server(warm_up=broken_import, paths=paths)
    assert prefect_server.live_clients(paths) == []


def test_settings_are_checked_with_the_variable_named(monkeypatch):
    monkeypatch.setenv(prefect_server.IDLE_SECONDS_ENV, "soon")
    with pytest.raises(ValueError, match="CXRSYNTH_PREFECT_IDLE_SECONDS='soon'"):
        prefect_server.idle_seconds()
    monkeypatch.setenv(prefect_server.IDLE_SECONDS_ENV, "0")
    with pytest.raises(ValueError, match="must be above 0"):
        prefect_server.idle_seconds()
    monkeypatch.setenv(prefect_server.IDLE_SECONDS_ENV, "2.5")
    assert prefect_server.idle_seconds() == 2.5
    monkeypatch.setenv(prefect_api.SERVER_MODE_ENV, "per-stage")
    with pytest.raises(ValueError, match="CXRSYNTH_PREFECT_SERVER='per-stage': expected one of shared, process"):
        prefect_api.server_mode()


def test_process_mode_starts_a_server_of_its_own(monkeypatch, tmp_path):
    """The switch the benchmark's baseline uses: Prefect's behaviour, a server per process, nothing shared."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv(prefect_api.SERVER_MODE_ENV, "process")
    own = subprocess.Popen(["sleep", "600"])
    monkeypatch.setattr(prefect_api, "start_server", lambda: (own, "http://127.0.0.1:41007/api"))
    with temporary_settings(restore_defaults={PREFECT_API_URL}), prefect_api.prefect_api() as url:
        assert url == os.environ["PREFECT_API_URL"] == PREFECT_API_URL.value() == "http://127.0.0.1:41007/api"
    assert _wait_gone(own) and "PREFECT_API_URL" not in os.environ
    assert not (tmp_path / prefect_server.STATE_DIR).exists()
