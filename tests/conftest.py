"""Shared fixtures: the tiny profile, scratch projects that run stages, and the optional real data.

A stage test needs a project folder: ``params.yaml`` (the tiny profile, MLflow in the folder) as
the working directory, and the data of the stages before it. ``tiny_project`` makes the first
part; ``blob_project``, ``diffusion_project`` and ``evaluate_project`` add the toy data of the
stage they stand in for (drawn by ``tests/blob_project.py``, ``tests/diffusion_data.py`` and
``tests/evaluate_project.py``). A module-scoped fixture, which cannot use these function-scoped
ones, writes the params with ``write_tiny_params`` itself.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

if TYPE_CHECKING:
    import pandas as pd

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Flows run in-process start Prefect's temporary server; on a loaded runner (two workers beside other
# jobs) it took longer than Prefect's default startup timeout, failing tests that had nothing wrong.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
# Prefect logs "Stopping temporary server" from an atexit hook, after pytest has closed the
# captured streams; at WARNING that line (and the noise it causes) is not emitted.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

# Browser-test fixtures (Chromium, servers on 127.0.0.1, screenshots) and their summary line.
pytest_plugins = ["tests.browser"]

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CXRSYNTH_SHARED_DATA", ROOT.parent / "shared" / "data"))
TINY_PARAMS = ROOT / "tests" / "params.tiny.yaml"


def _merge(base: dict, updates: dict, where: str) -> None:
    for key, value in updates.items():
        if key not in base:
            raise KeyError(f"{where}{key}: not a key of the profile merged into")
        if isinstance(value, dict) and isinstance(base[key], dict):
            _merge(base[key], value, f"{where}{key}.")
        else:
            base[key] = value


def write_tiny_params(root: Path, **sections: dict) -> Path:
    """``root/params.yaml``: the tiny profile with ``sections`` merged in (``phantom={"n_patients": 24}``).

    MLflow goes to ``root/mlflow.db`` by absolute URI: MLflow caches a store per URI, so a relative
    one would follow the first test's working directory.
    """
    params = yaml.safe_load(TINY_PARAMS.read_text())
    params["tracking"]["mlflow_uri"] = f"sqlite:///{root / 'mlflow.db'}"
    _merge(params, sections, "")
    root.mkdir(parents=True, exist_ok=True)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture
def tiny_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Make a project folder (``tmp_path`` unless given) with the tiny params, as the working
    directory; keyword arguments update params sections. Returns the folder."""

    def make(root: Path | None = None, **sections: dict) -> Path:
        root = tmp_path if root is None else root
        write_tiny_params(root, **sections)
        monkeypatch.chdir(root)
        return root

    return make


@pytest.fixture
def blob_project(tiny_project) -> Callable[..., Path]:
    """A tiny project for mix and train_classifier: the given real and synthetic manifests, whose
    images show each present finding as a blob (``tests/blob_project.py``). Returns the folder."""
    from tests.blob_project import write_manifests

    def make(real: pd.DataFrame, synthetic: pd.DataFrame | None, size: int = 32, **sections: dict) -> Path:
        root = tiny_project(ingest={"image_size": size}, runtime={"torch_threads": 1}, **sections)
        write_manifests(root, real, synthetic, size)
        return root

    return make


@pytest.fixture
def diffusion_project(tiny_project) -> Callable[..., tuple[Path, pd.DataFrame]]:
    """A tiny project for train_diffusion: toy radiographs, lesion masks and the prepare_masks
    manifest (``tests/diffusion_data.py``). Returns the folder and the manifest."""
    from tests.diffusion_data import make_project

    def make(n_images: int = 24, size: int = 32, lesion_rate: float = 0.15, **sections: dict):
        root = tiny_project(**sections)
        return root, make_project(root, n_images=n_images, size=size, lesion_rate=lesion_rate)

    return make


@pytest.fixture
def evaluate_project(tiny_project) -> Path:
    """A tiny project for evaluate: real and synthetic manifests, images and lesion masks
    (``tests/evaluate_project.py``) at the tiny profile's image size. Returns the folder."""
    from cxrsynth.tasks.params import load_params
    from tests.evaluate_project import build_tiny_project

    root = tiny_project()
    build_tiny_project(root, size=load_params(root / "params.yaml").ingest.image_size)
    return root


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


@contextlib.contextmanager
def conv_output_dtypes() -> Iterator[list]:
    """The dtype of every Conv2d output computed inside the block: what autocast really ran."""
    import torch  # here: most tests never load torch through this module

    dtypes: list = []
    original = torch.nn.Conv2d.forward

    def recording(self, x):
        output = original(self, x)
        dtypes.append(output.dtype)
        return output

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.nn.Conv2d, "forward", recording)
        yield dtypes
