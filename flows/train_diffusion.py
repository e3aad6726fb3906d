"""train_diffusion: the conditional diffusion model on the real training split, EMA weights out."""

from __future__ import annotations

import mlflow
from mlflow.entities import Metric
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.common import setup
from tasks import manifest, tracking
from tasks.diffusion import train_stage
from tasks.diffusion.data import MANIFEST
from tasks.diffusion.previews import preview_grid, preview_indices
from tasks.diffusion.training import TrainHooks, train_diffusion
from tasks.io import write_json
from tasks.params import Params

METRICS = "metrics/train_diffusion.json"
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


def mlflow_hooks(params: Params, prepared: train_stage.TrainingSetup, device, losses: LossLogger) -> TrainHooks:
    """Loss curve to MLflow at each checkpoint; a grid per condition type at each sample interval."""
    preview = preview_indices(prepared.dataset, PREVIEW_IMAGES)

    def on_sample(step, ema_model):
        train = params.diffusion.train
        grid = preview_grid(ema_model, prepared.config, prepared.dataset, preview, train.sample_steps,
                            train.sample_guidance, device, seed=params.seed)
        mlflow.log_image(grid, f"samples/step_{step:07d}.png")

    return TrainHooks(on_checkpoint=lambda step, path, history: losses(history), on_sample=on_sample)


@flow(name="train_diffusion", log_prints=True)
def train_diffusion_flow(params_path: str = "params.yaml") -> dict:
    params = setup(params_path)
    with tracking.stage_run("train_diffusion", params, sections=("diffusion",), inputs=(MANIFEST,)):
        frame = manifest.read(MANIFEST)
        prepared = train_stage.training_setup(params, frame)
        device = train_stage.resolve_device(params.runtime.device)
        losses = LossLogger()
        outcome = task(train_diffusion, cache_policy=NO_CACHE)(
            prepared.model, prepared.dataset, params.diffusion, prepared.config, train_stage.CHECKPOINT_DIR,
            params.seed, device, mlflow_hooks(params, prepared, device, losses),
        )
        losses(outcome.history)
        train_stage.write_training_outputs(outcome, prepared)
        metrics = train_stage.training_metrics(outcome, prepared)
        write_json(METRICS, metrics)
        tracking.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        for bad in prepared.quarantined:
            print(f"quarantined {bad['image_id']}: {bad['reason']}")
        mlflow.log_artifacts(str(train_stage.MODEL_DIR), "model")
        mlflow.log_artifact(str(train_stage.LOSS_CSV))
        print(f"trained {metrics['steps']} steps on {metrics['n_train_images']} images: "
              f"loss {metrics['loss_first']:.4f} -> {metrics['loss_final']:.4f}, {metrics['images_per_s']} img/s")
    return metrics
