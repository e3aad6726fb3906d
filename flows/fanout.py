"""Mapped fan-out shared by the stages: cut the work into chunks, submit one Prefect task per chunk
over the configured task runner, show progress as chunks finish, return the results in chunk order.

One chunking rule for every stage: contiguous, balanced chunks (sizes differ by at most one), about
``per_worker`` of them per worker, each within ``min_size``..``max_size`` items. Chunks are
contiguous and results come back in chunk order, so the order of the work never depends on the
chunking; only how many Prefect tasks carry it does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from prefect import Task
from prefect.futures import as_completed
from tqdm import tqdm

from cxrsynth.flows.common import task_runner
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

    task: Task
    desc: str  # progress bar label
    unit: str  # what one item is, for the progress bar
    rule: ChunkRule = ChunkRule()

    def run(
        self,
        params: Params,
        workers: int,
        items: Sequence | pd.DataFrame,
        arguments: Callable[[Any], dict[str, Any]],
    ) -> list:
        """Submit ``self.task(**arguments(chunk))`` per chunk over the task runner (Dask when configured,
        else ``workers`` threads); the results, one per chunk, in chunk order."""
        parts = chunks(items, workers, self.rule)
        results: dict[int, Any] = {}
        with task_runner(params, max_workers=workers) as runner:
            futures = [runner.submit(self.task, parameters=arguments(part)) for part in parts]
            position = {future.task_run_id: number for number, future in enumerate(futures)}
            with tqdm(total=len(items), desc=self.desc, unit=self.unit) as progress:
                for future in as_completed(futures):
                    number = position[future.task_run_id]
                    results[number] = future.result()
                    progress.update(len(parts[number]))
        return [results[number] for number in range(len(parts))]
