"""What every stage flow shares: params loading, runtime set-up and the task runner."""

from __future__ import annotations

import os
import random

import numpy as np

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")

from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from cxrsynth.tasks import threads  # noqa: E402
from cxrsynth.tasks.params import Params, load_params  # noqa: E402


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(params_path: str) -> Params:
    """Load and validate params, then fix seeds and torch threads for this process (printed here; every
    MLflow stage run logs them too), and let the long CPU loops adapt the threads to the machine's load
    (``runtime.adaptive_threads``)."""
    params = load_params(params_path)
    setting = threads.set_torch_threads(params.runtime.torch_threads)
    print(setting.describe())
    threads.govern(setting.threads if params.runtime.adaptive_threads and runs_on_cpu(params.runtime.device) else None)
    seed_everything(params.seed)
    return params


def runs_on_cpu(device: str) -> bool:
    """Whether the stages' networks run on the CPU under ``runtime.device`` (cuda without a GPU: the stage
    that needs it refuses)."""
    from cxrsynth.tasks.device import resolve_device

    return device != "cuda" and resolve_device(device).type == "cpu"


def task_runner(params: Params, max_workers: int | None = None):
    """Dask when a scheduler address is configured, threads otherwise."""
    if params.runtime.dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=params.runtime.dask_address)
    return ThreadPoolTaskRunner(max_workers=max_workers)
