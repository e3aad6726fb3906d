"""Torch's CPU threads in this process: as many as the CPUs it may use (or its share of them), and
OpenMP threads that stop spinning soon when they wait.

Why: when the cores are shared (a laptop running other things, a Dask worker, two stages at once),
OpenMP threads that spin at their barriers take the cores from the one thread that has work; a
diffusion training step beside one busy process on 2 cores was 5.4x slower with torch's defaults,
where a fair share is about 1.5x (issue 12). ``benchmarks/bench_threads.py`` measures the choices.

libgomp, the OpenMP runtime of torch's wheels, reads ``OMP_WAIT_POLICY`` and ``GOMP_SPINCOUNT`` once,
when it is loaded (``import torch``), so :func:`apply_spin_default` runs in the ``cxrsynth`` command
before anything imports torch; child processes (DVC's stage commands, DataLoader workers) inherit it.
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
# How many times an idle OpenMP thread polls before it sleeps. libgomp's default, 300000, is about 3 ms
# by its own estimate of 100000 spins a millisecond: a thread whose partner was preempted holds its
# core that long, which is the collapse beside a busy process. It shortens spinning only when its own
# threads outnumber the CPUs, and it cannot see other processes. 10000 (about 0.1 ms) gives a shared
# core back within a small part of a scheduler time slice, yet spins through short gaps between
# parallel regions that never spinning (OMP_WAIT_POLICY=PASSIVE, about 5 % slower alone) pays a
# futex wake-up for. Chosen with benchmarks/bench_threads.py, where 1000 and 10000 both avoided the
# collapse on a loaded machine; of the two, the longer spin risks less alone. Confirm on a quiet one.
SPINCOUNT_DEFAULT = "10000"


def apply_spin_default(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Shorten OpenMP spin-waiting for this process and its children, unless the user already chose
    (either variable set): True when the default was applied. Effective only before torch is imported."""
    if WAIT_POLICY_ENV in environ or SPINCOUNT_ENV in environ:
        return False
    environ[SPINCOUNT_ENV] = SPINCOUNT_DEFAULT
    return True


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
