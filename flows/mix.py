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
    for kind in ("synthetic", "reserve"):
        for finding, drawn in config.get(f"{kind}_per_finding", {}).items():
            counts.update({f"{kind}.{finding}.{key}": value for key, value in drawn.items()})
    tracking.log_metrics(counts)
    mlflow.log_artifact(str(path.with_suffix(".json")), artifact_path="variants")
    print(f"{config['variant']}: {config['counts']}")


def _read_prepared(params: Params, dag: Dag, spec: StageSpec) -> tuple[pd.DataFrame, str]:
    """The prepared manifest every variant starts from: its training rows (train, val and the
    ceiling's reserve) only from evaluate.train_sites when set."""
    path = dag.input(spec.name, "prepare_masks", "manifest.parquet")
    return sites.training_sites_only(manifest.read(path), params.evaluate.train_sites), path


def _read_real(params: Params, dag: Dag, spec: StageSpec) -> pd.DataFrame:
    return mixing.real_rows(*_read_prepared(params, dag, spec))


def _warn_short(config: dict, kind: str, cap: int) -> None:
    for finding, drawn in config[f"{kind}_per_finding"].items():
        if drawn["drawn"] < min(drawn["requested"], cap):
            print(f"warning: {finding}: {drawn['requested']} {kind} images requested, only {drawn['available']} there")


def _build_baseline(name: str, prepared: pd.DataFrame, source: str, params: Params) -> tuple[pd.DataFrame, dict]:
    real = mixing.real_rows(prepared, source)
    if name != mixing.CEILING:
        return task(mixing.build_baseline, cache_policy=NO_CACHE)(real, name, params)
    reserve = mixing.reserve_rows(prepared, source)
    frame, config = task(mixing.build_ceiling, cache_policy=NO_CACHE)(real, reserve, params)
    _warn_short(config, "reserve", params.mix.cap_per_finding)
    return frame, config


def _write_baselines(params: Params, dag: Dag, spec: StageSpec) -> None:
    prepared, source = _read_prepared(params, dag, spec)
    for name in params.mix.baselines:
        frame, config = _build_baseline(name, prepared, source, params)
        path = mixing.write_variant(frame, config, mixing.variant_path(dag, name, params))
        _log_variant(path, config)


def _write_ratio(params: Params, ratio: int | float, dag: Dag, spec: StageSpec) -> None:
    real = _read_real(params, dag, spec)
    synthetic_path = dag.input(spec.name, "generate", "manifest.parquet")
    synthetic = mixing.check_synthetic(manifest.read(synthetic_path), synthetic_path)
    frame, config = task(mixing.build_ratio, cache_policy=NO_CACHE)(real, synthetic, ratio, params)
    _warn_short(config, "synthetic", params.mix.cap_per_finding)
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
