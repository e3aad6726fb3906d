"""train_autoencoder: latent diffusion's autoencoder on the real training split, and how much of the
real test split (whole images, and each finding's lesions) survives encoding.

With ``diffusion.space: pixel`` nothing needs an autoencoder: the stage writes its skip note and
metrics in a moment and opens no MLflow run.
"""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
from mlflow.entities import Metric
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from cxrsynth.flows.common import setup
from cxrsynth.tasks import manifest, stages, tracking
from cxrsynth.tasks.autoencoder.outputs import StagePaths, trains, write_skipped
from cxrsynth.tasks.io import write_json
from cxrsynth.tasks.params import Params

MLFLOW_BATCH = 1000  # MLflow's limit of metrics per log_batch call


class StepMetrics:
    """Each step's loss terms, sent to MLflow in batches: one call per ``every`` steps, and at ``flush``."""

    def __init__(self, every: int) -> None:
        self.run_id = mlflow.active_run().info.run_id
        self.every = every
        self.pending: list[Metric] = []

    def __call__(self, step: int, parts: dict[str, float]) -> None:
        stamp = int(time.time() * 1000)
        self.pending += [Metric(name, value, stamp, step) for name, value in parts.items()]
        if step % self.every == 0:
            self.flush()

    def flush(self) -> None:
        client = mlflow.tracking.MlflowClient()
        for start in range(0, len(self.pending), MLFLOW_BATCH):
            client.log_batch(self.run_id, metrics=self.pending[start:start + MLFLOW_BATCH])
        self.pending = []


def stage_paths(dag: stages.Dag, spec: stages.StageSpec) -> StagePaths:
    return StagePaths(model=dag.output(spec.name, "model"), checkpoints=dag.output(spec.name, "checkpoints"),
                      figures=dag.output(spec.name, "figures"), metrics=spec.metric(), loss_csv=spec.plot())


def numeric_metrics(metrics: dict) -> dict[str, float]:
    """The numeric metrics under MLflow names; per finding ``lesions.<finding>.<figure>``."""
    return {key: value for key, value in tracking.flatten(metrics).items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


@flow(name="train_autoencoder", log_prints=True)
def train_autoencoder_flow(params_path: str = "params.yaml") -> dict:
    params = setup(params_path)
    dag = stages.load()
    spec = dag.stage_for("train_autoencoder")
    paths = stage_paths(dag, spec)
    if not trains(params):
        metrics = write_skipped(paths, params.diffusion.space)
        print(f"train_autoencoder skipped: {metrics['reason']}")
        return metrics
    return train_and_measure(params, dag, spec, paths)


def train_and_measure(params: Params, dag: stages.Dag, spec: stages.StageSpec, paths: StagePaths) -> dict:
    """Train (or resume), write the model folder, measure the test split's reconstructions; one MLflow run."""
    # Imported here: torch, MONAI and torchmetrics take seconds to load, which a skipped run never needs.
    from cxrsynth.tasks.autoencoder import stage
    from cxrsynth.tasks.autoencoder.training import autoencoder_memory_format
    from cxrsynth.tasks.device import precision_params, resolve_device

    device = resolve_device(params.runtime.device)
    settings = params.autoencoder
    precision = precision_params(settings.mixed_precision, device, "autoencoder.mixed_precision")
    layout = autoencoder_memory_format(settings, params.runtime.channels_last, device).params()
    with tracking.stage_run(spec, params, extra_params=precision | layout):
        frame = manifest.read(dag.input(spec.name, "prepare_masks", "manifest.parquet"))
        load = task(stage.real_split, cache_policy=NO_CACHE)
        # the absolute root: load_set strips it from quarantine reasons (a "." would strip every dot)
        train_set, test_set = (load(frame, Path.cwd(), params.ingest.image_size, split) for split in ("train", "test"))
        step_metrics = StepMetrics(settings.checkpoint_every)
        outcome = task(stage.train, cache_policy=NO_CACHE)(params, train_set, paths.checkpoints, device, step_metrics)
        step_metrics.flush()
        if outcome.init_report is not None:
            tracking.log_init_report(outcome.init_report)
        stage.write_training_outputs(paths, outcome, params)
        fidelity = task(stage.measure_fidelity, cache_policy=NO_CACHE)(outcome.ema_model, test_set, settings.batch_size,
                                                                      device)
        grid = stage.write_grid(paths.figures, test_set, fidelity, settings.grid_images)
        metrics = stage.stage_metrics(outcome, train_set, test_set, fidelity)
        write_json(paths.metrics, metrics)
        tracking.log_metrics(numeric_metrics(metrics))
        log_artifacts(paths, grid)
        report(metrics)
    return metrics


def log_artifacts(paths: StagePaths, grid: Path | None) -> None:
    from cxrsynth.tasks.diffusion.checkpoints import latest_checkpoint  # (loads torch)

    mlflow.log_artifacts(str(paths.model), "model")
    mlflow.log_artifact(str(latest_checkpoint(paths.checkpoints)), "checkpoint")  # resumable state
    mlflow.log_artifact(str(paths.loss_csv))
    mlflow.log_artifact(str(paths.metrics))
    if grid is not None:
        mlflow.log_artifact(str(grid), "figures")


def report(metrics: dict) -> None:
    for bad in metrics["quarantined_images"]:
        print(f"quarantined {bad['image_id']}: {bad['reason']}")
    print(f"trained {metrics['steps']} steps on {metrics['n_train_images']} images: loss {metrics['loss_first']:.4f} -> "
          f"{metrics['loss_final']:.4f}, {metrics['images_per_s']} img/s; test split ({metrics['n_test_images']} "
          f"images): PSNR {metrics['psnr']}, SSIM {metrics['ssim']}")
    for finding, figures in metrics["lesions"].items():
        if figures["n_lesions"]:
            print(f"  {finding}: {figures['n_lesions']} lesions, crop SSIM {figures['crop_ssim']:.3f}, contrast "
                  f"{figures['contrast_before']:.4f} -> {figures['contrast_after']:.4f} (kept {figures['contrast_kept']})")
