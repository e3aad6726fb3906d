"""Mapped fan-out shared by the stages: cut the work into chunks, submit one Prefect task per chunk
over the configured task runner, show progress as chunks finish, return the results in chunk order.

One chunking rule for every stage: contiguous, balanced chunks (sizes differ by at most one), about
``per_worker`` of them per worker, each within ``min_size``..``max_size`` items. Chunks are
contiguous and results come back in chunk order, so the order of the work never depends on the
chunking; only how many Prefect tasks carry it does.

Where the chunks run: on Dask when ``runtime.dask_address`` is set; else work that holds Python's lock
(phantom drawing, DICOM decoding, mask filling) runs in worker processes under ``runtime.fanout:
processes``, since threads would take turns at that lock, and torch work, which releases it, on
threads. Each chunk is still one Prefect task run, on a thread of this process that hands the chunk to
a worker and waits: Prefect's per-run bookkeeping stays in this process, where it costs milliseconds
(in a worker process of Prefect's own process runner it cost about 0.4 s a run, and each worker
started by importing Prefect).
"""

from __future__ import annotations

import math
import multiprocessing
from multiprocessing import forkserver
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from tqdm import tqdm

from cxrsynth.flows.common import task_runner
from cxrsynth.tasks import threads
from cxrsynth.tasks.params import Params


@dataclass(frozen=True)
class ChunkRule:
    """How many chunks a stage's work is cut into.

    Each Prefect task run costs tens of milliseconds of API round trips, so chunks are at least
    ``min_size`` items; about ``per_worker`` chunks per worker keep every worker busy and the
    progress bar moving; ``max_size`` (None: no bound) bounds what one retry repeats.
    """

    per_worker: int = 4
    min_size: int = 16
    max_size: int | None = 256

    def __post_init__(self) -> None:
        if self.per_worker < 1 or self.min_size < 1 or (self.max_size is not None and self.max_size < self.min_size):
            raise ValueError(f"bad chunk rule {self}: per_worker and min_size >= 1, max_size >= min_size")

    def count(self, items: int, workers: int) -> int:
        """How many chunks ``items`` items become with ``workers`` workers (0 for no items)."""
        if items == 0:
            return 0
        fewest = 1 if self.max_size is None else math.ceil(items / self.max_size)
        most = max(1, items // self.min_size)
        return max(fewest, min(most, self.per_worker * workers))

    def bounds(self, items: int, workers: int) -> list[tuple[int, int]]:
        """Contiguous ``(start, stop)`` ranges covering ``0..items`` in order, balanced in size."""
        edges = np.linspace(0, items, self.count(items, workers) + 1).astype(int)
        return [(int(start), int(stop)) for start, stop in zip(edges[:-1], edges[1:])]


def chunks(items: Sequence | pd.DataFrame, workers: int, rule: ChunkRule) -> list:
    """``items`` cut by ``rule``: slices of a list or range, row slices of a DataFrame."""
    cut = items.iloc if isinstance(items, pd.DataFrame) else items
    return [cut[start:stop] for start, stop in rule.bounds(len(items), workers)]


@dataclass(frozen=True)
class Fanout:
    """One stage's mapped work: the Prefect task run per chunk, its chunking rule and progress labels."""

    task: Task  # its function is pickled by reference when it runs in worker processes
    desc: str  # progress bar label
    unit: str  # what one item is, for the progress bar
    rule: ChunkRule = ChunkRule()
    holds_gil: bool = True  # Python loops: worker processes under runtime.fanout; torch work: threads

    def run(
        self,
        params: Params,
        workers: int,
        items: Sequence | pd.DataFrame,
        arguments: Callable[[Any], dict[str, Any]],
    ) -> list:
        """Submit ``self.task(**arguments(chunk))`` per chunk over the task runner (Dask when configured,
        else ``workers`` threads, whose chunks run in as many worker processes when :meth:`processes` says
        so); the results, one per chunk, in chunk order."""
        parts = chunks(items, workers, self.rule)
        processes = self.processes(params, workers, len(parts))
        if processes:
            print(f"{self.desc}: {len(parts)} chunks on {processes} worker processes")
        results: dict[int, Any] = {}
        with (task_runner(params, max_workers=workers) as runner,
              worker_processes(processes, preload=self.task.fn.__module__) as pool):
            futures = [self._submit(runner, pool, arguments(part)) for part in parts]
            position = {future.task_run_id: number for number, future in enumerate(futures)}
            with tqdm(total=len(items), desc=self.desc, unit=self.unit) as progress:
                for future in as_completed(futures):
                    number = position[future.task_run_id]
                    results[number] = future.result()
                    progress.update(len(parts[number]))
        return [results[number] for number in range(len(parts))]

    def processes(self, params: Params, workers: int, parts: int) -> int:
        """Worker processes for ``parts`` chunks: one per worker under ``runtime.fanout: processes`` for
        work that holds the GIL; 0 (threads) on Dask, for torch work, or where only one would be busy
        (it would gain nothing but its start-up)."""
        if params.runtime.dask_address or params.runtime.fanout != "processes" or not self.holds_gil:
            return 0
        busy = min(workers, parts)
        return busy if busy > 1 else 0

    def _submit(self, runner, pool: Executor | None, parameters: dict[str, Any]):
        if pool is None:
            return runner.submit(self.task, parameters=parameters)
        return runner.submit(self.task_in_pool, parameters={"pool": pool, "work": self.task.fn, "arguments": parameters})

    @cached_property
    def task_in_pool(self) -> Task:
        """The Prefect task run of one chunk that runs in a worker process: this task's name and retries."""
        return task(run_in_pool, name=self.task.name, cache_policy=NO_CACHE, retries=self.task.retries,
                    retry_delay_seconds=self.task.retry_delay_seconds)


def run_in_pool(pool: Executor, work: Callable[..., Any], arguments: dict[str, Any]) -> Any:
    """One chunk's ``work`` in a worker process of ``pool``; the calling thread, the chunk's Prefect
    task run, waits for its result (an exception raised there is raised here)."""
    return pool.submit(work, **arguments).result()


@contextmanager
def worker_processes(count: int, preload: str) -> Iterator[Executor | None]:
    """``count`` worker processes of one thread each, or None for 0. They are forked from a forkserver
    process, not from this one: a fork of this process would copy the locks its Prefect, MLflow and
    OpenMP threads hold at that moment, with no thread left to release them. The forkserver imports
    the module ``preload`` (the chunks' code) once, when the first pool of this process starts it, so
    that workers, of this pool and of later ones, start with it loaded (about a second saved per
    worker). On an error, chunks not yet started are cancelled."""
    if not count:
        yield None
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([preload])  # no effect once the forkserver runs: workers then import it
    with threads.one_thread_environment():  # what the forkserver loads reads the workers' thread setting
        forkserver.ensure_running()
    pool = ProcessPoolExecutor(count, mp_context=context, initializer=threads.one_thread_worker)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
