"""Shared fixtures: the tiny profile, a scratch project root, and the optional real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Prefect logs "Stopping temporary server" from an atexit hook, after pytest has closed the
# captured streams; at WARNING that line (and the noise it causes) is not emitted.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

# Browser-test fixtures (Chromium, servers on 127.0.0.1, screenshots) and their summary line.
pytest_plugins = ["tests.browser"]

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
TINY_PARAMS = ROOT / "tests" / "params.tiny.yaml"


@pytest.fixture
def tiny_params():
    from cxrsynth.tasks.params import load_params

    return load_params(TINY_PARAMS)


@pytest.fixture
def shared_data() -> Path:
    """The real files under ../shared/data; the test is skipped when they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA
