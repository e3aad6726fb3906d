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

While a stage runs, other processes may start and stop. A :class:`ThreadGovernor`, ticked once per
step of the long CPU loops (diffusion, autoencoder and classifier training, generate's sampling),
measures every few seconds how many CPUs other processes kept busy and runs one thread fewer for each
(never more than the count set at the start, never fewer than one): all threads while the machine is
quiet, where spinning costs nothing, and fewer while it is shared, where spinning threads collapse
(``runtime.adaptive_threads``). No static setting is both as fast alone and safe when shared (the
README's table).

This module imports torch only inside the functions that set threads.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Collection, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
SPINCOUNT_ENV = "GOMP_SPINCOUNT"
# libgomp's own spin-waiting is left as it is. Measured with benchmarks/bench_threads.py on a quiet 2-core
# Xeon (bare U-Net step, batch 16): shorter spinning avoids part of the slowdown beside one busy process
# (GOMP_SPINCOUNT=10000: 2.0x, OMP_WAIT_POLICY=PASSIVE: 1.75x, torch's default: 2.6-3.1x) but costs 30 %
# when the machine is not shared (1.30x both), which is how `dvc repro` usually runs; GOMP_SPINCOUNT=30000
# cost nothing alone and helped nothing beside a busy process. One thread is not slowed by a busy process
# (0.98x its time alone), though alone it takes 2.1x as long as two. So spinning stays, and on shared cores the ThreadGovernor below runs fewer threads; a user
# may still set one of these variables (README, "Threads on shared cores"); every stage logs what it ran under.


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
    adaptive: bool = False  # runtime.adaptive_threads in effect: the task's loop adapts its own threads

    def apply(self) -> ThreadSetting:
        """This task's share of the usable CPUs: among the tasks running at once here, or, in a Dask
        worker, among the worker's threads."""
        return set_torch_threads(self.torch_threads, sharing=dask_worker_tasks() or self.tasks_at_once)

    def step_hook(self, setting: ThreadSetting) -> Callable[[], object]:
        """What the task's loop calls after each step: when adaptive, the tick of a governor of the task's
        own thread, below its share (torch's count is per thread for OpenMP); else nothing."""
        return ThreadGovernor(setting.threads).tick if self.adaptive else _no_step_hook


def _no_step_hook() -> None:
    pass


# The thread counts of the numeric libraries a fan-out worker process may load: read when each loads.
WORKER_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
ONE_THREAD_ENV = dict.fromkeys(WORKER_THREAD_ENV, "1")


def one_thread_worker() -> None:
    """Set-up of a fan-out worker process (``runtime.fanout: processes``): one thread for torch, OpenMP and
    BLAS, as DataLoader workers get, since the workers already share the CPUs among themselves. Run
    before the worker unpickles its first chunk, so the libraries the work imports read one thread from
    the environment; torch is not imported for it (phantom, ingest and prepare_masks do not use torch,
    and importing it costs each worker seconds), but set to one thread if already loaded."""
    os.environ.update(ONE_THREAD_ENV)
    if "torch" in sys.modules:
        set_torch_threads(1)


@contextmanager
def one_thread_environment() -> Iterator[None]:
    """Within: the environment a fan-out worker runs under (WORKER_THREAD_ENV at 1), for a process
    started here that loads libraries for the workers (their forkserver); restored after."""
    saved = {name: os.environ.get(name) for name in WORKER_THREAD_ENV}
    os.environ.update(ONE_THREAD_ENV)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def logged_params() -> dict[str, object]:
    """The thread setting in effect in this process, as the MLflow params every stage run logs."""
    import torch

    return {"runtime.threads": torch.get_num_threads(), "runtime.usable_cpus": usable_cpus(),
            "runtime.omp_wait_policy": wait_policy(), "runtime.adaptive_threads": adaptive()}


# ------------------------------------------------------------------------------ adaptive thread count

PROC_STAT = Path("/proc/stat")
GOVERNOR_INTERVAL_S = 2.0  # about one training step of the default profile: reacts within a step or two
# Hysteresis, in CPUs kept busy by other processes beyond those already left to them: one thread fewer
# above DROP_ABOVE, one more below RESTORE_BELOW, so a reading near half a CPU does not flap the count.
DROP_ABOVE = 0.6
RESTORE_BELOW = 0.3


def busy_cpu_seconds(cpus: Collection[int], stat_text: str | None = None) -> float:
    """CPU time, in seconds since boot, that anything spent on ``cpus``: the per-CPU lines of
    ``/proc/stat`` (``stat_text``; read when None), user + nice + system + irq + softirq + steal
    (guest time is inside user). OSError when the file is unreadable or lists none of ``cpus``."""
    text = PROC_STAT.read_text() if stat_text is None else stat_text
    ticks, found = 0, 0
    for line in text.splitlines():
        name, *fields = line.split() or [""]
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in (fields + ["0"] * 8)[:8])
            ticks += user + nice + system + irq + softirq + steal
            found += 1
    if not found:
        raise OSError(f"{PROC_STAT} lists none of CPUs {sorted(cpus)}")
    return ticks / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU time this process (all its threads) has used. Child processes, DataLoader workers among
    them, are not in it: their busy cores stall OpenMP barriers like any other program's."""
    times = os.times()
    return times.user + times.system


def threads_to_run(ceiling: int, current: int, others: float) -> int:
    """Torch threads for ``others`` CPUs kept busy by other processes, running ``current`` of at most
    ``ceiling``: ``ceiling - round(others)``, between 1 and ``ceiling``, with hysteresis (a CPU more is
    left to others above DROP_ABOVE of it, a CPU taken back below RESTORE_BELOW)."""
    left = ceiling - current
    if math.ceil(others - DROP_ABOVE) > left:
        left = math.ceil(others - DROP_ABOVE)
    elif math.floor(others - RESTORE_BELOW) + 1 < left:
        left = math.floor(others - RESTORE_BELOW) + 1
    return min(ceiling, max(1, ceiling - left))


@dataclass(frozen=True)
class CpuReading:
    wall_s: float
    busy_s: float  # every process's busy time on the usable CPUs
    own_s: float  # this process's

    def others_since(self, earlier: "CpuReading") -> float:
        """CPUs other processes kept busy, on average, between ``earlier`` and this reading."""
        elapsed = self.wall_s - earlier.wall_s
        if elapsed <= 0:
            return 0.0
        return max(0.0, ((self.busy_s - earlier.busy_s) - (self.own_s - earlier.own_s)) / elapsed)


def _set_torch_intraop_threads(count: int) -> None:
    import torch

    torch.set_num_threads(count)


class ThreadGovernor:
    """Torch's intra-op threads that follow the load of other processes, ticked from a training loop.

    Every ``interval_s`` of wall time (at the first :meth:`tick` after it), it reads how many CPUs
    other processes kept busy since the last reading (the usable CPUs' busy time in ``/proc/stat``
    less this process's own CPU time, over the elapsed time) and runs :func:`threads_to_run` threads:
    never above ``ceiling``, the count :func:`set_torch_threads` chose (so ``runtime.torch_threads`` or
    ``OMP_NUM_THREADS`` still bound it). Each change prints one line. Where ``/proc/stat`` cannot be read
    (not Linux) it says so once and does nothing. The clock, the two CPU-time readers, the thread setter
    and the printer are parameters so that tests can drive it without sleeping.
    """

    def __init__(self, ceiling: int, interval_s: float = GOVERNOR_INTERVAL_S, *,
                 clock: Callable[[], float] = time.monotonic,
                 machine_busy: Callable[[], float] | None = None,
                 own_busy: Callable[[], float] = own_cpu_seconds,
                 set_threads: Callable[[int], None] = _set_torch_intraop_threads,
                 report: Callable[[str], None] = print):
        if ceiling < 1:
            raise ValueError(f"a thread ceiling of {ceiling}: at least 1")
        self.ceiling = self.threads = ceiling
        self.interval_s = interval_s
        self._clock, self._own_busy, self._set_threads, self._report = clock, own_busy, set_threads, report
        self._machine_busy = machine_busy or self._usable_cpus_busy
        self._last = self._read(self._clock())

    @staticmethod
    def _usable_cpus_busy() -> float:
        return busy_cpu_seconds(os.sched_getaffinity(0))

    @property
    def active(self) -> bool:
        """False once the CPU times could not be read: the thread count then stays as it is."""
        return self._last is not None

    def _read(self, now: float) -> CpuReading | None:
        try:
            return CpuReading(now, self._machine_busy(), self._own_busy())
        except OSError as error:
            self._report(f"adaptive threads off, {self.threads} torch threads kept: cannot read CPU times ({error})")
            return None

    def tick(self) -> int:
        """Called once per step (cheap: one clock read between measurements). Returns the threads now."""
        if self._last is None:
            return self.threads
        now = self._clock()
        if now - self._last.wall_s < self.interval_s:
            return self.threads
        reading = self._read(now)
        if reading is not None:
            self._adapt(reading.others_since(self._last))
        self._last = reading
        return self.threads

    def _adapt(self, others: float) -> None:
        wanted = threads_to_run(self.ceiling, self.threads, others)
        if wanted != self.threads:
            self._report(f"threads {self.threads} -> {wanted}: other processes busy on {others:.1f} CPU")
            self._set_threads(wanted)
            self.threads = wanted


_governor: ThreadGovernor | None = None  # this process's, installed by the stage's set-up


def govern(ceiling: int | None) -> ThreadGovernor | None:
    """From now on let :func:`tick` adapt torch's threads below ``ceiling`` (None: keep them fixed).
    One per process, as torch's thread count is."""
    global _governor
    _governor = None if ceiling is None else ThreadGovernor(ceiling)
    return _governor


def tick() -> None:
    """One step of a long CPU loop: the process's governor, if any, may change the thread count."""
    if _governor is not None:
        _governor.tick()


def adaptive() -> bool:
    """Whether a governor adapts this process's threads (for the log)."""
    return _governor is not None and _governor.active
