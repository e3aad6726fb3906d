"""DVC as the pipeline's engine: the stage order from dvc.yaml, and one stage reproduced through DVC.

Running each stage through ``dvc repro --single-item`` keeps a scheduled run exactly like a manual
``dvc repro``: unchanged stages are skipped, outputs are cached and ``dvc.lock`` is updated.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

# Failures worth a retry: another DVC process holding the repo lock, a busy SQLite store.
TRANSIENT_MARKERS = ("Unable to acquire lock", "database is locked", "Resource temporarily unavailable")


class StageFailed(RuntimeError):
    """A stage that failed under ``dvc repro``; the message names it and ends with its output."""

    def __init__(self, stage: str, returncode: int, output: str, transient: bool) -> None:
        tail = "\n".join(output.strip().splitlines()[-25:])
        super().__init__(f"stage {stage!r} failed (dvc repro exit code {returncode}):\n{tail}")
        self.stage = stage
        self.transient = transient


@dataclass(frozen=True)
class StageResult:
    stage: str
    status: str  # "ran" or "skipped"
    seconds: float


def stage_order(root: str | Path = ".") -> list[str]:
    """Every stage of dvc.yaml in the order ``dvc repro`` would run them (foreach items expanded)."""
    from dvc.repo import Repo
    from dvc.repo.reproduce import get_active_graph, plan_repro

    with Repo(str(root)) as repo:
        return [stage.addressing for stage in plan_repro(get_active_graph(repo.index.graph))]


def _dvc_command() -> list[str]:
    # The dvc beside this interpreter, so a scheduled run uses the project's environment.
    dvc = Path(sys.executable).with_name("dvc")
    return [str(dvc)] if dvc.exists() else ["dvc"]


def repro_stage(
    stage: str,
    root: str | Path = ".",
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] = lambda line: None,
) -> StageResult:
    """Reproduce one stage through DVC (skipped by DVC when nothing it depends on changed).

    The stage's output is streamed line by line to ``on_line`` as it runs.
    """
    started = time.monotonic()
    lines: list[str] = []
    with subprocess.Popen(
        [*_dvc_command(), "repro", "--single-item", stage],
        cwd=root,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        for line in process.stdout:
            line = line.rstrip()
            lines.append(line)
            on_line(line)
    output = "\n".join(lines)
    if process.returncode != 0:
        transient = any(marker in output for marker in TRANSIENT_MARKERS)
        raise StageFailed(stage, process.returncode, output, transient)
    status = "skipped" if "didn't change, skipping" in output else "ran"
    return StageResult(stage, status, time.monotonic() - started)
