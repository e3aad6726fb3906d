"""Browser-test support: Chromium from the system (Debian's ``chromium`` package) driven by
Playwright, servers started on 127.0.0.1 at an ephemeral port, and screenshots kept as artefacts.

Loaded as a pytest plugin by ``conftest.py``, so its fixtures reach every test module and its
summary hook prints where the screenshots went.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Screenshots and server logs of the browser tests (git-ignored); CXRSYNTH_TEST_ARTIFACTS moves them.
ARTIFACTS = Path(os.environ.get("CXRSYNTH_TEST_ARTIFACTS", ROOT / "test-artifacts"))
# Where a Chromium may be, first hit wins; CXRSYNTH_CHROMIUM names another one.
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "/usr/bin/chromium")
VIEWPORT = {"width": 1400, "height": 900}
_saved: list[Path] = []


def chromium_executable() -> str | None:
    """The system Chromium Playwright drives (no browser is ever downloaded)."""
    named = os.environ.get("CXRSYNTH_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module (Playwright's sync API keeps an event loop in this thread while it
    runs, and Prefect's sync calls in later tests would take it for an async context); the test skips,
    saying why, when none can run."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    executable = chromium_executable()
    if executable is None:
        pytest.skip("no Chromium found: install Debian's package (apt-get install -y chromium, as .ci/run does) "
                    "or set CXRSYNTH_CHROMIUM to a Chromium executable")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=executable)
        except Error as error:
            pytest.skip(f"Chromium at {executable} does not start: {error.message.splitlines()[0]}")
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (own local storage) and page; console errors collected on ``page.errors``."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(30_000)
    opened = context.new_page()
    opened.errors = []
    opened.on("pageerror", lambda error: opened.errors.append(str(error)))
    yield opened
    context.close()


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot under the artefacts folder and remember it for the summary."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    _saved.append(path)
    return path


def pytest_terminal_summary(terminalreporter) -> None:
    if _saved:
        terminalreporter.write_line(f"browser screenshots ({len(_saved)}) in {ARTIFACTS}: "
                                    + ", ".join(path.name for path in _saved))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


class Server:
    """A server process being started; ``ready()`` waits until its URL answers."""

    def __init__(self, process: subprocess.Popen, ready_url: str, log: Path) -> None:
        self.process, self.ready_url, self.log = process, ready_url, log

    def ready(self, timeout: float = 120) -> subprocess.Popen:
        deadline = time.monotonic() + timeout
        while not _answers(self.ready_url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{self.process.args[0]} did not answer {self.ready_url} within {timeout:.0f} s "
                            f"(exit code {self.process.poll()}); end of {self.log}:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)
        return self.process


@contextlib.contextmanager
def started_server(command: Sequence[str], ready_url: str, log_name: str, env: dict[str, str] | None = None,
                   cwd: Path | None = None) -> Iterator[Server]:
    """Start a server in its own process group and stop it after; the caller may work while it starts.

    Its output goes to ``<artefacts>/<log_name>.log``, whose tail a failure to start shows.
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = ARTIFACTS / f"{log_name}.log"
    with log.open("w") as handle:
        process = subprocess.Popen(list(command), env={**os.environ, **(env or {})}, cwd=cwd, stdout=handle,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield Server(process, ready_url, log)
    finally:
        _stop(process)


@contextlib.contextmanager
def running_server(command: Sequence[str], ready_url: str, log_name: str, env: dict[str, str] | None = None,
                   cwd: Path | None = None, timeout: float = 90) -> Iterator[subprocess.Popen]:
    """Start a server (as ``started_server``) and wait until ``ready_url`` answers 200."""
    with started_server(command, ready_url, log_name, env, cwd) as server:
        yield server.ready(timeout)


def _stop(server: subprocess.Popen) -> None:
    # The group holds the server's workers too (uvicorn children), and only them: it was started
    # with a new session.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)


def listening_addresses(server: subprocess.Popen) -> set[str]:
    """The IP addresses the server's process tree listens on (TCP)."""
    import psutil

    root = psutil.Process(server.pid)
    addresses = set()
    for process in (root, *root.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            addresses |= {c.laddr.ip for c in process.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
    return addresses


def assert_loopback_only(server: subprocess.Popen, name: str) -> None:
    """Started without a host option, the server must listen on loopback alone."""
    addresses = listening_addresses(server)
    assert addresses, f"{name}: no listening socket found"
    outside = sorted(a for a in addresses if not ipaddress.ip_address(a).is_loopback)
    assert not outside, f"{name} listens beyond loopback by default: {outside}"
