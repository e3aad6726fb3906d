"""The train_diffusion and generate flows end to end on the tiny profile (toy prepare_masks data)."""

import json

import mlflow
import pandas as pd
import pytest
import torch

from cxrsynth.tasks import manifest
from cxrsynth.tasks.device import choose_memory_format, choose_precision
from tests.conftest import write_tiny_params
from tests.diffusion_data import make_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    """One temporary Prefect server for the module, stopped while pytest still captures its log."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prefect_server):
    from cxrsynth.flows.train_diffusion import train_diffusion_flow

    root = tmp_path_factory.mktemp("flows")
    write_tiny_params(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        make_project(root, n_images=40, size=32, lesion_rate=0.15)
        metrics = train_diffusion_flow("params.yaml")
    return root, metrics


def test_train_diffusion_flow_writes_model_curve_metrics_and_mlflow_run(trained, monkeypatch):
    root, metrics = trained
    monkeypatch.chdir(root)
    assert metrics["steps"] == 6 and metrics["n_train_images"] == 28
    assert {"config.json", "model.pt", "vocab.json"} <= {p.name for p in (root / "data/train_diffusion/model").iterdir()}
    assert [p.name for p in (root / "data/train_diffusion/checkpoints").iterdir()] == ["step_00000006.pt"]
    curve = pd.read_csv(root / "plots/train_diffusion/loss.csv")
    assert curve["step"].tolist() == list(range(1, 7))
    assert json.loads((root / "metrics/train_diffusion.json").read_text())["steps"] == 6
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["cxrsynth"], filter_string="tags.`cxrsynth.stage` = 'train_diffusion'",
                             output_format="list")[0]
    assert len(mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "loss")) == 6
    artifacts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"model", "samples", "loss.csv", "checkpoint"} <= artifacts
    assert run.data.params["diffusion.loss.lesion_weight"] == "2.0"
    assert run.data.params["runtime.precision"] == "fp32"  # the tiny profile trains in float32
    assert run.data.params["runtime.precision_reason"] == "diffusion.train.mixed_precision = no"
    assert run.data.params["runtime.memory_format.unet"] == "contiguous"  # channels_last: auto keeps float32 so
    assert "float32" in run.data.params["runtime.memory_format_reason.unet"]


def test_generate_flow_writes_images_manifest_grids_and_resumes(trained, monkeypatch):
    from cxrsynth.flows.generate import generate_flow

    root, _ = trained
    monkeypatch.chdir(root)
    metrics = generate_flow("params.yaml")
    synthetic = manifest.read(root / "data/generate/manifest.parquet")
    assert len(synthetic) == metrics["planned"] > 0 and (synthetic["source"] == "synthetic").all()
    assert all((root / p).exists() for p in synthetic["path"])
    assert any((root / "data/generate/grids").glob("finding_*.png"))
    assert any((root / "data/generate/grids").glob("condition_*.png"))
    assert json.loads((root / "metrics/generate.json").read_text())["planned"] == len(synthetic)
    again = generate_flow("params.yaml")
    assert again["generated"] == 0 and again["kept_from_earlier_run"] == len(synthetic)
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["cxrsynth"], filter_string="tags.`cxrsynth.stage` = 'generate'",
                             output_format="list")[0]
    sampling = choose_precision("auto", torch.device("cpu"))  # generate samples under auto: this CPU's flags decide
    assert run.data.params["runtime.precision"] == sampling.name
    assert run.data.params["runtime.precision_reason"] == sampling.reason
    layout = choose_memory_format("auto", "unet", "cpu", sampling.dtype)  # and so they decide the memory format
    assert run.data.params["runtime.memory_format.unet"] == ("channels_last" if layout.channels_last else "contiguous")
    assert run.data.params["runtime.memory_format_reason.unet"] == layout.reason


def test_generate_on_a_local_dask_cluster_writes_the_same_images(trained, tmp_path, monkeypatch):
    import shutil

    distributed = pytest.importorskip("distributed")
    from cxrsynth.flows.generate import generate_flow
    from cxrsynth.tasks.tracking import md5_digest

    source, _ = trained
    copies = {}
    for name in ("threads", "dask"):
        copies[name] = tmp_path / name
        shutil.copytree(source, copies[name], ignore=shutil.ignore_patterns("generate", "mlflow.db"))
    monkeypatch.chdir(copies["threads"])
    generate_flow("params.yaml")

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            write_tiny_params(copies["dask"], runtime={"dask_address": cluster.scheduler_address}, generate={"workers": 2})
            monkeypatch.chdir(copies["dask"])
            with distributed.get_task_stream(client) as stream:
                metrics = generate_flow("params.yaml")
    assert len({record["worker"] for record in stream.data}) == 2, "the two parts did not run on two Dask workers"
    assert metrics["generated"] == metrics["planned"] > 1
    assert md5_digest(copies["dask"] / "data/generate/images") == md5_digest(copies["threads"] / "data/generate/images")


def test_a_controlnet_model_trains_base_then_branch_through_the_flow_and_generates(tmp_path, monkeypatch):
    from cxrsynth.flows.generate import generate_flow
    from cxrsynth.flows.train_diffusion import train_diffusion_flow

    write_tiny_params(tmp_path, diffusion={"mask_control": "controlnet", "train": {"steps": 2},
                                           "controlnet": {"steps": 2}})
    monkeypatch.chdir(tmp_path)
    make_project(tmp_path, n_images=40, size=32, lesion_rate=0.15)
    metrics = train_diffusion_flow("params.yaml")
    assert metrics["steps"] == 4
    checkpoints = tmp_path / "data/train_diffusion/checkpoints"
    assert [p.name for p in (checkpoints / "base").iterdir()] == ["step_00000002.pt"]
    assert [p.name for p in checkpoints.glob("step_*.pt")] == ["step_00000002.pt"]
    assert pd.read_csv(tmp_path / "plots/train_diffusion/loss.csv")["step"].tolist() == [1, 2, 3, 4]
    config = json.loads((tmp_path / "data/train_diffusion/model/config.json").read_text())
    assert config["mask_control"] == "controlnet"
    assert generate_flow("params.yaml")["planned"] > 0


def test_latent_space_trains_and_generates_through_train_autoencoders_model(tmp_path, monkeypatch):
    """diffusion.space: latent end to end: train_diffusion encodes with data/train_autoencoder/model,
    generate decodes with it to images of the working resolution."""
    from cxrsynth.flows.generate import generate_flow
    from cxrsynth.flows.train_diffusion import train_diffusion_flow
    from cxrsynth.models.autoencoder import AutoencoderConfig, build_autoencoder
    from cxrsynth.tasks.autoencoder.model_io import save_autoencoder
    from cxrsynth.tasks.io import read_png16

    write_tiny_params(tmp_path, diffusion={"space": "latent"})
    monkeypatch.chdir(tmp_path)
    make_project(tmp_path, n_images=40, size=32, lesion_rate=0.15)
    shape = AutoencoderConfig(downsampling=4, latent_channels=3, base_channels=8)
    save_autoencoder(tmp_path / "data/train_autoencoder/model", build_autoencoder(shape), shape)
    metrics = train_diffusion_flow("params.yaml")
    config = json.loads((tmp_path / "data/train_diffusion/model/config.json").read_text())
    assert config["space"] == "latent" and config["latent"]["scale_factor"] == metrics["latent_scale_factor"] > 0
    generated = generate_flow("params.yaml")
    synthetic = manifest.read(tmp_path / "data/generate/manifest.parquet")
    assert len(synthetic) == generated["planned"] > 0
    assert {read_png16(tmp_path / path).shape for path in synthetic["path"]} == {(32, 32)}
