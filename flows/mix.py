"""Stage mix: write one training-set variant manifest (or all the baselines) for the classifier."""

from __future__ import annotations

import mlflow
import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from cxrsynth.flows.common import setup
from cxrsynth.tasks import manifest, mixing, sites, stages, tracking
from cxrsynth.tasks.params import Params
from cxrsynth.tasks.stages import Dag, StageSpec


def _log_variant(path, config: dict) -> None:
    counts = {f"rows.{key}": value for key, value in config["counts"].items()}
    for finding, drawn in config.get("synthetic_per_finding", {}).items():
        counts.update({f"synthetic.{finding}.{key}": value for key, value in drawn.items()})
    tracking.log_metrics(counts)
    mlflow.log_artifact(str(path.with_suffix(".json")), artifact_path="variants")
    print(f"{config['variant']}: {config['counts']}")


def _read_real(params: Params, dag: Dag, spec: StageSpec) -> pd.DataFrame:
    """The real train and val rows every variant starts from: those of evaluate.train_sites when set."""
    path = dag.input(spec.name, "prepare_masks", "manifest.parquet")
    return sites.training_sites_only(mixing.real_rows(manifest.read(path), path), params.evaluate.train_sites)


def _write_baselines(params: Params, dag: Dag, spec: StageSpec) -> None:
    real = _read_real(params, dag, spec)
    for name in params.mix.baselines:
        frame, config = task(mixing.build_baseline, cache_policy=NO_CACHE)(real, name, params)
        path = mixing.write_variant(frame, config, mixing.variant_path(dag, name, params))
        _log_variant(path, config)


def _write_ratio(params: Params, ratio: int | float, dag: Dag, spec: StageSpec) -> None:
    real = _read_real(params, dag, spec)
    synthetic_path = dag.input(spec.name, "generate", "manifest.parquet")
    synthetic = mixing.check_synthetic(manifest.read(synthetic_path), synthetic_path)
    frame, config = task(mixing.build_ratio, cache_policy=NO_CACHE)(real, synthetic, ratio, params)
    for finding, drawn in config["synthetic_per_finding"].items():
        if drawn["drawn"] < min(drawn["requested"], params.mix.cap_per_finding):
            print(f"warning: {finding}: {drawn['requested']} synthetic images requested, only {drawn['available']} generated")
    path = mixing.write_variant(frame, config, mixing.variant_path(dag, config["variant"], params))
    _log_variant(path, config)


@flow(name="mix", log_prints=True)
def mix_flow(params_path: str = "params.yaml", variant: str = mixing.BASELINES_VARIANT) -> None:
    """``variant='baselines'`` writes every baseline; ``variant='ratio_<r>'`` writes that ratio's mix."""
    params = setup(params_path)
    dag = stages.load()
    if variant == mixing.BASELINES_VARIANT:
        spec = dag.stage_for("mix", variant)
        with tracking.stage_run(spec, params, run_name="mix:baselines", extra_params={"variant": variant}):
            _write_baselines(params, dag, spec)
        return
    ratio = mixing.ratio_of(variant, params)
    if ratio is None:
        raise ValueError(f"mix builds baselines together: pass --variant {mixing.BASELINES_VARIANT}, not {variant!r}")
    spec = dag.stage_for("mix", variant)
    with tracking.stage_run(spec, params, run_name=f"mix:{variant}", extra_params={"variant": variant, "ratio": ratio}):
        _write_ratio(params, ratio, dag, spec)
