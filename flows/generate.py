"""generate: synthetic images of the rare findings from the trained model, with their masks and manifest."""

from __future__ import annotations

import mlflow
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.common import setup
from tasks import manifest, tracking
from tasks.diffusion import generation
from tasks.diffusion.data import MANIFEST
from tasks.diffusion.model_io import WEIGHTS_FILE, load_model
from tasks.diffusion.train_stage import MODEL_DIR, resolve_device
from tasks.diffusion.training import autocast_dtype
from tasks.io import write_json

METRICS = "metrics/generate.json"
SYNTHETIC_MANIFEST = generation.OUT / "manifest.parquet"


@flow(name="generate", log_prints=True)
def generate_flow(params_path: str = "params.yaml") -> dict:
    params = setup(params_path)
    settings = params.generate
    weights = MODEL_DIR / WEIGHTS_FILE
    with tracking.stage_run("generate", params, sections=("generate",), inputs=(MANIFEST, weights)):
        device = resolve_device(params.runtime.device)
        model, config, tokenizer = load_model(MODEL_DIR, device)
        checkpoint_digest = tracking.md5_digest(weights)
        counts, requests, maps = generation.plan_for(manifest.read(MANIFEST), ".", settings, config)
        generation.prepare_output(".", generation.plan_digest(requests, {
            "checkpoint": checkpoint_digest, "sampler": settings.sampler, "steps": settings.steps,
            "guidance_scale": settings.guidance_scale}))
        stats = task(generation.generate_images, cache_policy=NO_CACHE)(
            model, config, tokenizer, requests, maps, settings, ".", device, autocast_dtype("auto", device))
        synthetic = generation.synthetic_manifest(requests, config["image_size"], checkpoint_digest, settings)
        manifest.write(synthetic, SYNTHETIC_MANIFEST, "generate")
        grids = generation.write_grids(requests, maps) if len(requests) else []
        metrics = generation.generation_metrics(counts, requests, stats)
        write_json(METRICS, metrics)
        # MLflow metric names may not hold "+", which condition types do.
        tracking.log_metrics({k.replace("+", "_"): v for k, v in tracking.flatten(metrics).items()
                              if isinstance(v, (int, float))})
        for path in grids:
            mlflow.log_artifact(str(path), "grids")
        print(f"generated {stats['generated']} images ({stats['kept']} kept from an earlier run): "
              f"{metrics['per_condition_type']}")
    return metrics
