"""Torch's CPU threads in this process: as many as the CPUs it may use (or its share of them), and the
OpenMP wait setting it runs under, for the log.

Why: when the cores are shared (a laptop running other things, a Dask worker, two stages at once),
OpenMP threads that spin at their barriers take the cores from the one thread that has work; a
diffusion training step beside one busy process on 2 cores was 5.4x slower with torch's defaults,
where a fair share is about 1.5x (issue 12). Threads are therefore sized to the CPUs this process may
use and to the tasks sharing them; ``benchmarks/bench_threads.py`` measures the spin-wait choices.

libgomp, the OpenMP runtime of torch's wheels, reads ``OMP_WAIT_POLICY`` and ``GOMP_SPINCOUNT`` once,
when it is loaded (``import torch``): they belong in the environment of the ``cxrsynth`` command, whose
child processes (DVC's stage commands, DataLoader workers) inherit them.
This module imports torch only inside the functions that set threads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
SPINCOUNT_ENV = "GOMP_SPINCOUNT"
# libgomp's own spin-waiting is left as it is. Measured with benchmarks/bench_threads.py on a quiet 2-core
# Xeon (bare U-Net step, batch 16): shorter spinning avoids part of the slowdown beside one busy process
# (GOMP_SPINCOUNT=10000: 2.0x, OMP_WAIT_POLICY=PASSIVE: 1.75x, torch's default: 2.6-3.1x) but costs 30 %
# when the machine is not shared (1.30x both), which is how `dvc repro` usually runs; GOMP_SPINCOUNT=30000
# cost nothing alone and helped nothing beside a busy process. So on shared cores the user sets one of these
# variables (README, "Threads on shared cores"); every stage logs what it ran under.


def wait_policy(environ: MutableMapping[str, str] = os.environ) -> str:
    """The OpenMP wait settings in the environment, as logged: e.g. ``GOMP_SPINCOUNT=10000``, or
    ``default`` when neither variable is set."""
    chosen = [f"{name}={environ[name]}" for name in (WAIT_POLICY_ENV, SPINCOUNT_ENV) if name in environ]
    return ",".join(chosen) or "default"


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: taskset, cgroup cpusets, Slurm), not the
    machine's count."""
    return len(os.sched_getaffinity(0))


def dask_worker_tasks() -> int | None:
    """How many tasks this process runs at once when it is a Dask worker (its thread count), else None.
    (Dask's nanny also sets ``OMP_NUM_THREADS=1`` in the workers it starts.)"""
    try:
        from distributed import get_worker
    except ImportError:
        return None
    try:
        return max(1, get_worker().state.nthreads)
    except ValueError:  # not inside a Dask worker
        return None


def environment_threads(environ: MutableMapping[str, str] = os.environ) -> int | None:
    """``OMP_NUM_THREADS`` when it holds one positive count: a user's choice, or torchrun's 1 for each of
    several processes on a node, which torch's own default honours too."""
    value = environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


@dataclass(frozen=True)
class ThreadSetting:
    """What :func:`set_torch_threads` set, for the stage's log and MLflow params."""

    threads: int
    usable_cpus: int
    sharing: int  # tasks that share this process's CPUs
    requested: int | None  # runtime.torch_threads, else OMP_NUM_THREADS
    omp_wait_policy: str

    def describe(self) -> str:
        share = f", shared by {self.sharing} tasks" if self.sharing > 1 else ""
        asked = "all usable" if self.requested is None else f"{self.requested} requested"
        return (f"torch threads: {self.threads} ({asked}; {self.usable_cpus} usable CPUs{share}); "
                f"OpenMP wait: {self.omp_wait_policy}")


def thread_count(requested: int | None, usable: int, sharing: int = 1) -> int:
    """``requested`` threads (None: all), at most this task's share of the usable CPUs, at least 1."""
    share = max(1, usable // max(1, sharing))
    if requested is None:
        return share
    if requested > share:
        log.warning("%d torch threads requested (runtime.torch_threads or OMP_NUM_THREADS) but this process "
                    "may use %d CPUs%s: using %d threads",
                    requested, usable, f" shared by {sharing} tasks" if sharing > 1 else "", share)
        return share
    return requested


def set_torch_threads(requested: int | None, sharing: int = 1) -> ThreadSetting:
    """Set torch's intra-op threads from the usable CPUs, ``requested`` (``runtime.torch_threads``; None:
    ``OMP_NUM_THREADS`` if set, else all) and how many tasks share the CPUs; the inter-op pool (used only
    by ``torch.jit.fork``-style work) gets as many. Returns what was set."""
    import torch

    if requested is None:
        requested = environment_threads()
    usable = usable_cpus()
    threads = thread_count(requested, usable, sharing)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # torch allows it once, before inter-op work starts; a second stage in-process keeps it
        pass
    return ThreadSetting(threads, usable, max(1, sharing), requested, wait_policy())


@dataclass(frozen=True)
class ThreadRequest:
    """The threads a mapped task asks for (``runtime.torch_threads``) and how many such tasks run at once
    as threads of one process; applied where the task runs, since only there is a Dask worker known."""

    torch_threads: int | None = None
    tasks_at_once: int = 1

    def apply(self) -> ThreadSetting:
        """This task's share of the usable CPUs: among the tasks running at once here, or, in a Dask
        worker, among the worker's threads."""
        return set_torch_threads(self.torch_threads, sharing=dask_worker_tasks() or self.tasks_at_once)


def logged_params() -> dict[str, object]:
    """The thread setting in effect in this process, as the MLflow params every stage run logs."""
    import torch

    return {"runtime.threads": torch.get_num_threads(), "runtime.usable_cpus": usable_cpus(),
            "runtime.omp_wait_policy": wait_policy()}
