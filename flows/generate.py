"""generate: synthetic images of the rare findings from the trained model, with their masks and manifest."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from cxrsynth.flows.common import setup, task_runner
from cxrsynth.tasks import manifest, tracking
from cxrsynth.tasks.diffusion import generation
from cxrsynth.tasks.diffusion.data import MANIFEST
from cxrsynth.tasks.device import resolve_device
from cxrsynth.tasks.diffusion.model_io import WEIGHTS_FILE
from cxrsynth.tasks.diffusion.pipeline import GenerationPipeline
from cxrsynth.tasks.diffusion.train_stage import MODEL_DIR
from cxrsynth.tasks.io import write_json
from cxrsynth.tasks.params import Params

METRICS = "metrics/generate.json"
SYNTHETIC_MANIFEST = generation.OUT / "manifest.parquet"

sample_part = task(generation.sample_part, name="sample_part", cache_policy=NO_CACHE)


def sample_all(requests, maps, params: Params, device) -> dict:
    """Sample every image not on disk yet, in ``generate.workers`` parts over the task runner."""
    root = Path.cwd()  # absolute paths: Dask workers need not share our working directory
    generation.write_condition_masks(maps, root)
    todo = generation.pending(requests, root)
    started = time.perf_counter()
    with task_runner(params, max_workers=params.generate.workers) as runner:
        futures = [runner.submit(sample_part, parameters={
            "model_dir": str(root / MODEL_DIR), "todo": part, "maps": {i: maps[i] for i in part["image_id"] if i in maps},
            "generate": params.generate, "root": str(root), "device": str(device),
            "torch_threads": params.runtime.torch_threads,
        }) for part in generation.parts(todo, params.generate.workers)]
        generated = sum(future.result() for future in futures)
    return generation.run_stats(len(requests), generated, time.perf_counter() - started)


@flow(name="generate", log_prints=True)
def generate_flow(params_path: str = "params.yaml") -> dict:
    params = setup(params_path)
    settings = params.generate
    weights = MODEL_DIR / WEIGHTS_FILE
    with tracking.stage_run("generate", params, sections=("generate",), inputs=(MANIFEST, weights)):
        device = resolve_device(params.runtime.device)
        config = GenerationPipeline.load_config(MODEL_DIR)  # the model itself is loaded where its part is sampled
        checkpoint_digest = tracking.md5_digest(weights)
        counts, requests, maps = generation.plan_for(manifest.read(MANIFEST), ".", settings, config)
        generation.prepare_output(".", generation.plan_digest(requests, {
            "checkpoint": checkpoint_digest, "sampler": settings.sampler, "steps": settings.steps,
            "guidance_scale": settings.guidance_scale}))
        stats = sample_all(requests, maps, params, device)
        synthetic = generation.synthetic_manifest(requests, config.image_size, checkpoint_digest, settings)
        manifest.write(synthetic, SYNTHETIC_MANIFEST, "generate")
        grids = generation.write_grids(requests, maps) if len(requests) else []
        metrics = generation.generation_metrics(counts, requests, stats)
        write_json(METRICS, metrics)
        # MLflow metric names may not hold "+", which condition types do.
        tracking.log_metrics({k.replace("+", "_"): v for k, v in tracking.flatten(metrics).items()
                              if isinstance(v, (int, float))})
        for path in grids:
            mlflow.log_artifact(str(path), "grids")
        for finding, plan in metrics["per_finding"].items():
            print(f"{finding}: {plan['n_positive']} real of {plan['n_train']}, target {plan['target']}, "
                  f"{plan['generated']} synthetic under {plan['condition_types'] or 'no usable condition type'}")
        print(f"generated {stats['generated']} images ({stats['kept']} kept from an earlier run): "
              f"{metrics['per_condition_type']}")
    return metrics
