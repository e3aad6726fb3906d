"""generate: synthetic images of the rare findings from the trained model, with their masks and manifest."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from cxrsynth.flows.common import setup
from cxrsynth.flows.fanout import ChunkRule, Fanout
from cxrsynth.tasks import manifest, sites, stages, threads, tracking
from cxrsynth.tasks.diffusion import generation
from cxrsynth.tasks.device import autocast_dtype, precision_params, resolve_device
from cxrsynth.tasks.diffusion.model_io import WEIGHTS_FILE
from cxrsynth.tasks.diffusion.pipeline import GenerationPipeline, diffusion_memory_formats
from cxrsynth.tasks.io import write_json
from cxrsynth.tasks.params import Params


# One part per worker: each part loads the model, so more parts would only load it more often.
SAMPLE = Fanout(task(generation.sample_part, name="sample_part", cache_policy=NO_CACHE),
                "generate", "img", ChunkRule(per_worker=1, min_size=1, max_size=None), holds_gil=False)


def sample_all(requests, maps, params: Params, device, model_dir: Path, autoencoder_dir: Path | None = None) -> dict:
    """Sample every image not on disk yet, in ``generate.workers`` parts over the task runner (a
    latent-space model with the autoencoder of ``autoencoder_dir``)."""
    root = Path.cwd()  # absolute paths: Dask workers need not share our working directory
    generation.write_condition_masks(maps, root)
    todo = generation.pending(requests, root)
    started = time.perf_counter()
    workers = params.generate.workers
    generated = sum(SAMPLE.run(params, workers, todo, lambda part: {
        "model_dir": str(root / model_dir), "todo": part, "maps": {i: maps[i] for i in part["image_id"] if i in maps},
        "autoencoder_dir": None if autoencoder_dir is None else str(root / autoencoder_dir),
        "generate": params.generate, "root": str(root), "device": str(device),
        "channels_last": params.runtime.channels_last,
        # on threads, every part runs at once in this process and gets its share of the CPUs
        "cpu": threads.ThreadRequest(params.runtime.torch_threads, SAMPLE.rule.count(len(todo), workers),
                                     adaptive=threads.adaptive()),
    }))
    return generation.run_stats(len(requests), generated, time.perf_counter() - started)


@flow(name="generate", log_prints=True)
def generate_flow(params_path: str = "params.yaml") -> dict:
    params = setup(params_path)
    settings = params.generate
    dag = stages.load()
    spec = dag.stage_for("generate")
    model_dir = dag.input(spec.name, "train_diffusion", "model")
    weights = model_dir / WEIGHTS_FILE
    device = resolve_device(params.runtime.device)
    with tracking.stage_run(spec, params, extra_params=precision_params(generation.SAMPLING_PRECISION, device)):
        config = GenerationPipeline.load_config(model_dir)  # the model itself is loaded where its part is sampled
        for layout in diffusion_memory_formats(params.runtime.channels_last, config.latent is not None, device,
                                               autocast_dtype(generation.SAMPLING_PRECISION, device)).values():
            mlflow.log_params(layout.params())
        # A latent-space model decodes through train_autoencoder's autoencoder; a pixel-space one reads none.
        autoencoder_dir = dag.input(spec.name, "train_autoencoder", "model") if config.latent is not None else None
        checkpoint_digest = tracking.md5_digest(weights)
        real = manifest.read(dag.input(spec.name, "prepare_masks", "manifest.parquet"))
        real = sites.training_sites_only(real, params.evaluate.train_sites)  # templates as the generator trained
        counts, requests, maps = generation.plan_for(real, ".", settings, config)
        generation.prepare_output(".", generation.plan_digest(requests, {
            "checkpoint": checkpoint_digest, "sampler": settings.sampler, "steps": settings.steps,
            "guidance_scale": settings.guidance_scale}))
        stats = sample_all(requests, maps, params, device, model_dir, autoencoder_dir)
        synthetic = generation.synthetic_manifest(requests, config.image_size, checkpoint_digest, settings)
        manifest.write(synthetic, dag.output(spec.name, "manifest.parquet"), "generate")
        grids = generation.write_grids(requests, maps) if len(requests) else []
        metrics = generation.generation_metrics(counts, requests, stats)
        write_json(spec.metric(), metrics)
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
