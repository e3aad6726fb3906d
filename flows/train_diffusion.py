"""train_diffusion: the conditional diffusion model on the real training split, EMA weights out.

With ``diffusion.train.processes`` > 1 the stage re-launches itself under torchrun: rank 0 runs
the flow (tracking, checkpoints, outputs), the other ranks only train (``follow``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import mlflow
from mlflow.entities import Metric
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from cxrsynth.flows.common import setup
from cxrsynth.tasks.diffusion.distributed import Replica, replica_from_env, torchrun_command, under_torchrun
from cxrsynth.tasks import manifest, stages, tracking
from cxrsynth.tasks.diffusion import train_stage
from cxrsynth.tasks.diffusion.checkpoints import latest_checkpoint
from cxrsynth.tasks.diffusion.previews import preview_grid, preview_indices
from cxrsynth.tasks.diffusion.training import TrainHooks, training_memory_formats, training_precision
from cxrsynth.tasks.io import write_json
from cxrsynth.tasks.params import Params, load_params

PREVIEW_IMAGES = 4


class LossLogger:
    """Sends the loss history to MLflow in batches, each step once."""

    def __init__(self) -> None:
        self.run_id = mlflow.active_run().info.run_id
        self.up_to = 0

    def __call__(self, history: list[tuple[int, float]]) -> None:
        fresh = [Metric("loss", loss, 0, step) for step, loss in history if step > self.up_to]
        for start in range(0, len(fresh), 1000):  # MLflow's batch limit
            mlflow.tracking.MlflowClient().log_batch(self.run_id, metrics=fresh[start:start + 1000])
        self.up_to = max([self.up_to, *(step for step, _ in history)])


def mlflow_hooks(params: Params, prepared: train_stage.TrainingSetup, losses: LossLogger) -> TrainHooks:
    """Loss curve to MLflow at each checkpoint; a grid per condition type at each sample interval."""
    preview = preview_indices(prepared.dataset, PREVIEW_IMAGES)

    def on_sample(step, ema_model):
        train = params.diffusion.train
        pipeline = prepared.pipeline(ema_model)
        # the grids sample in the training's precision and memory format
        pipeline.to(pipeline.device, train.mixed_precision, prepared.channels_last)
        grid = preview_grid(pipeline, prepared.dataset, preview, train.sample_steps, train.sample_guidance,
                            seed=params.seed)
        mlflow.log_image(grid, f"samples/step_{step:07d}.png")

    return TrainHooks(on_checkpoint=lambda step, path, history: losses(history), on_sample=on_sample)


def train_diffusion_stage(params_path: str = "params.yaml") -> dict | None:
    """What ``cxrsynth stage train_diffusion`` runs: the flow in this process, or under torchrun."""
    processes = load_params(params_path).diffusion.train.processes
    if processes > 1 and not under_torchrun():
        command = torchrun_command(processes, ["stage", "train_diffusion", "--params", params_path])
        subprocess.run(command, check=True)
        return None
    replica = replica_from_env()
    if replica.is_main:
        return train_diffusion_flow(params_path)
    follow(params_path, replica)
    return None


def autoencoder_input(params: Params, dag: stages.Dag) -> Path | None:
    """train_autoencoder's model folder in latent space; in pixel space nothing is read from it."""
    return dag.input("train_diffusion", "train_autoencoder", "model") if params.diffusion.space == "latent" else None


def follow(params_path: str, replica: Replica) -> None:
    """A replica other than rank 0: the same set-up and steps, nothing tracked or written."""
    params, dag = setup(params_path), stages.load()
    frame = manifest.read(dag.input("train_diffusion", "prepare_masks", "manifest.parquet"))
    train_stage.run_training(params, train_stage.training_setup(params, frame, ".", autoencoder_input(params, dag)),
                             replica)


@flow(name="train_diffusion", log_prints=True)
def train_diffusion_flow(params_path: str = "params.yaml") -> dict:
    params, replica = setup(params_path), replica_from_env()
    dag = stages.load()
    spec = dag.stage_for("train_diffusion")
    device = train_stage.training_device(params, replica)
    logged = training_precision(params.diffusion.train, device).params()
    for layout in training_memory_formats(params.runtime.channels_last, params.diffusion.space == "latent",
                                          params.diffusion.train, device).values():
        logged |= layout.params()
    with tracking.stage_run(spec, params, extra_params=logged):
        frame = manifest.read(dag.input(spec.name, "prepare_masks", "manifest.parquet"))
        prepared = train_stage.training_setup(params, frame, ".", autoencoder_input(params, dag))
        if prepared.init_report is not None:
            tracking.log_init_report(prepared.init_report)
        losses = LossLogger()
        outcome = task(train_stage.run_training, cache_policy=NO_CACHE)(
            params, prepared, replica, mlflow_hooks(params, prepared, losses),
        )
        losses(outcome.history)
        train_stage.write_training_outputs(outcome, prepared)
        metrics = train_stage.training_metrics(outcome, prepared)
        write_json(spec.metric(), metrics)
        tracking.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        for bad in prepared.quarantined:
            print(f"quarantined {bad['image_id']}: {bad['reason']}")
        mlflow.log_artifacts(str(dag.output(spec.name, "model")), "model")
        mlflow.log_artifact(str(latest_checkpoint(dag.output(spec.name, "checkpoints"))), "checkpoint")  # resumable state
        mlflow.log_artifact(str(spec.plot()))
        print(f"trained {metrics['steps']} steps on {metrics['n_train_images']} images: "
              f"loss {metrics['loss_first']:.4f} -> {metrics['loss_final']:.4f}, {metrics['images_per_s']} img/s")
    return metrics
