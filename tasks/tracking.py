"""MLflow bookkeeping shared by every stage: one run per stage execution.

A run records the params dvc.yaml declares for the stage, the git commit, the hash ``dvc.lock``
holds for each stage output it reads (``cxrsynth.input_md5.<output>``: DVC's own md5, nothing is
hashed again), and the pipeline execution it belongs to (``CXRSYNTH_PIPELINE_RUN`` tag, and the parent run when
the ``pipeline`` flow started one), so the MLflow UI groups and compares runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sys
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import psutil

from cxrsynth.tasks import stages, threads
from cxrsynth.tasks.params import Params

if TYPE_CHECKING:  # init_from loads torch and MONAI, which most stages never import
    from cxrsynth.tasks.init_from import InitReport

PIPELINE_RUN_ENV = "CXRSYNTH_PIPELINE_RUN"
PARENT_RUN_ENV = "CXRSYNTH_PARENT_RUN_ID"
OWNER_TAG = "owner"  # <host>:<pid> of the process that opened a run (MLflow tag cxrsynth.owner, Prefect tag owner:...)
KILLED_REASON_TAG = "cxrsynth.killed_reason"

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def flatten(mapping: Mapping, prefix: str = "") -> dict[str, object]:
    """Nested dict to dotted keys, the form MLflow params take."""
    flat: dict[str, object] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def md5_digest(path: str | Path) -> str:
    """md5 of a file, or of a folder's sorted (relative path, file md5) listing: a content identity a
    stage keeps in its own outputs (generate's checkpoint), valid outside DVC too. MLflow input tags
    use dvc.lock's hashes instead."""
    path = Path(path)
    if path.is_file():
        digest = hashlib.md5()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    if path.is_dir():
        listing = hashlib.md5()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            listing.update(f"{child.relative_to(path).as_posix()}:{md5_digest(child)}\n".encode())
        return listing.hexdigest() + ".dir"
    return "missing"


def git_commit(root: str | Path = ".") -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def configure(params: Params) -> None:
    mlflow.set_tracking_uri(params.tracking.mlflow_uri)
    mlflow.set_experiment(params.tracking.experiment)


def declared_params(params: Params, keys: tuple[str, ...]) -> dict[str, object]:
    """The values of dvc.yaml's param keys (a section, or a dotted key inside one), flattened."""
    dumped = params.model_dump(mode="json")
    values: dict[str, object] = {}
    for key in keys:
        node: object = dumped
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise stages.StageSpecError(f"{stages.DVC_FILE}: param {key!r} is not in the params model")
            node = node[part]
        values.update(flatten(node, f"{key}.") if isinstance(node, Mapping) else {key: node})
    return values


@contextlib.contextmanager
def stage_run(
    spec: stages.StageSpec,
    params: Params,
    run_name: str | None = None,
    extra_params: Mapping[str, object] | None = None,
    inputs: tuple[str | Path, ...] | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Open the MLflow run of one stage execution: its declared params, this process's torch threads,
    commit, DVC's hashes of what it reads (``inputs``, by default every dep) and grouping tags. A run
    that ends without an error logs what its stage process has cost so far: ``runtime.process_s`` (seconds
since the process started: imports, Prefect start-up and the work) and ``runtime.peak_rss_mib``. A stage
that opens several runs after its work (evaluate, mix) logs the same costs on each."""
    configure(params)
    command = spec.command[0] or spec.name
    tags = {
        "cxrsynth.stage": command,
        "cxrsynth.dvc_stage": spec.name,
        "mlflow.source.git.commit": git_commit(),
        "cxrsynth.pipeline_run": os.environ.get(PIPELINE_RUN_ENV, "manual"),
    }
    read = spec.deps if inputs is None else inputs
    tags.update({f"cxrsynth.input_md5.{out}": digest
                 for out, digest in stages.input_hashes(read, stages.lock_hashes()).items()})
    tags[f"cxrsynth.{OWNER_TAG}"] = owner()
    close_stale_runs(command, params.tracking.experiment)
    parent = os.environ.get(PARENT_RUN_ENV) or None
    with mlflow.start_run(run_name=run_name or command, tags=tags, parent_run_id=parent,
                          nested=parent is not None) as run:
        logged = {"seed": params.seed, **declared_params(params, spec.params), **threads.logged_params(),
                  **(extra_params or {})}
        mlflow.log_params({key: _param_value(value) for key, value in logged.items()})
        yield run
        log_metrics({"runtime.process_s": time.time() - psutil.Process().create_time(),
                     "runtime.peak_rss_mib": peak_rss_mib()})


@contextlib.contextmanager
def child_run(run_name: str, params: Mapping[str, object], tags: Mapping[str, str] | None = None
              ) -> Iterator[mlflow.ActiveRun]:
    """A run nested under the active one (one seed of a variant), carrying its grouping tags (pipeline
    run, stage, commit, input hashes, owner) so that the UI groups and filters it with its parent."""
    parent = mlflow.active_run()
    if parent is None:
        raise RuntimeError(f"child run {run_name!r} needs an active parent run (open stage_run first)")
    inherited = {key: value for key, value in mlflow.get_run(parent.info.run_id).data.tags.items()
                 if key.startswith("cxrsynth.") or key == "mlflow.source.git.commit"}
    with mlflow.start_run(run_name=run_name, nested=True, tags={**inherited, **(tags or {})}) as run:
        mlflow.log_params({key: _param_value(value) for key, value in params.items()})
        yield run


def log_to_pipeline_run(metrics: Mapping[str, float], tags: Mapping[str, str], note: str | None = None,
                        texts: Mapping[str, str] | None = None) -> str | None:
    """Log onto the ``pipeline`` flow's parent run, when this stage runs under one: numeric
    ``metrics`` (None and NaN skipped), ``tags``, ``note`` as the run's description (shown first on its
    page) and ``texts`` as artifacts (file name -> content). Returns the parent's id, or None (no parent)."""
    parent = os.environ.get(PARENT_RUN_ENV)
    if not parent:
        return None
    client = mlflow.tracking.MlflowClient()
    clean = {key: float(value) for key, value in metrics.items() if value is not None and value == value}
    notes = {"mlflow.note.content": note} if note is not None else {}
    client.log_batch(parent, metrics=[mlflow.entities.Metric(key, value, _now_ms(), 0) for key, value in clean.items()],
                     tags=[mlflow.entities.RunTag(key, _param_value(value)) for key, value in {**tags, **notes}.items()])
    for name, text in (texts or {}).items():
        client.log_text(parent, text, name)
    return parent


def peak_rss_mib() -> float | None:
    """The largest resident memory, in MiB, of this process or of any child it has waited for
    (DataLoader and Dask workers), over its life so far; None where the OS does not report it."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, KiB on Linux
    largest = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return largest * unit / 2**20


def _now_ms() -> int:
    return int(time.time() * 1000)


def _param_value(value: object) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log numeric metrics, skipping None and NaN (MLflow rejects or misplots them)."""
    clean = {k: float(v) for k, v in metrics.items() if v is not None and v == v}
    if clean:
        mlflow.log_metrics(clean, step=step)


def log_init_report(report: InitReport) -> None:
    """What ``init_from`` loaded and did not: the full list as an artifact, the counts as params."""
    from cxrsynth.tasks.init_from import REPORT_FILE

    mlflow.log_dict(report.as_dict(), REPORT_FILE)
    mlflow.log_params({"init_from.kind": report.kind, "init_from.loaded": len(report.loaded),
                       "init_from.adapted": len(report.adapted), "init_from.not_loaded": len(report.not_loaded),
                       "init_from.unused": len(report.unused)})


# ------------------------------------------------------------------------------ runs left by a killed stage


def owner() -> str:
    """This process as a run's owner: ``<host>:<pid>``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(process: str) -> bool:
    """Whether the owner process still runs; one on another host cannot be checked and counts as alive."""
    host, _, pid = process.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def close_stale_runs(stage: str, experiment_name: str) -> list[str]:
    """Mark KILLED every RUNNING MLflow run of ``stage`` whose owner process is gone, with the reason; their ids.

    Called as a stage starts, after ``configure``: a killed stage never closed its run.
    """
    client = mlflow.tracking.MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`cxrsynth.stage` = '{stage}'"
    )
    closed = []
    for run in runs:
        process = run.data.tags.get(f"cxrsynth.{OWNER_TAG}")
        if process is None or owner_alive(process):
            continue
        reason = f"process {process} ended without closing this run (killed?); marked KILLED at the next start of {stage}"
        client.set_tag(run.info.run_id, KILLED_REASON_TAG, reason)
        client.set_terminated(run.info.run_id, status="KILLED")
        closed.append(run.info.run_id)
    return closed
