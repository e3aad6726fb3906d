"""The train_autoencoder flow on the tiny profile (toy prepare_masks data): latent space trains,
writes the model folder, checkpoints, curve, grid, metrics and one MLflow run, and resumes an
interrupted run to the same weights; pixel space skips in a moment."""

import json

import mlflow
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrsynth.tasks.autoencoder.model_io import load_autoencoder
from cxrsynth.tasks.autoencoder.outputs import EMPTY_LOSS_CURVE, NOT_TRAINED
from cxrsynth.tasks.diffusion.train_stage import loss_table
from cxrsynth.tasks.findings import FINDINGS
from tests.conftest import write_tiny_params
from tests.diffusion_data import make_project

pytestmark = pytest.mark.slow  # runs the whole stage (a Prefect server, three flow runs)

LATENT = {"diffusion": {"space": "latent"}, "runtime": {"torch_threads": 1}}
LESION_FIGURES = {"n_images", "n_lesions", "crop_ssim", "contrast_before", "contrast_after", "contrast_kept"}


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    """One temporary Prefect server for the module, stopped while pytest still captures its log."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):  # a loaded machine needs more than the default 30 s
        yield


def project(root, **sections):
    write_tiny_params(root, **sections)
    make_project(root, n_images=30, size=32, lesion_rate=0.4)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from cxrsynth.flows.train_autoencoder import train_autoencoder_flow

    root = project(tmp_path_factory.mktemp("autoencoder"), **LATENT)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        metrics = train_autoencoder_flow("params.yaml")
    return root, metrics


def test_latent_space_trains_and_writes_model_checkpoint_curve_grid_and_metrics(trained):
    root, metrics = trained
    out = root / "data/train_autoencoder"
    autoencoder, config = load_autoencoder(out / "model")
    assert config.latent_channels == 3 and config.downsampling == 4 and not (out / "model" / NOT_TRAINED).exists()
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_00000004.pt"]
    assert pd.read_csv(root / "plots/train_autoencoder/loss.csv")["step"].tolist() == [1, 2, 3, 4]
    assert Image.open(out / "figures/reconstructions.png").mode == "RGB"
    assert json.loads((root / "metrics/train_autoencoder.json").read_text()) == json.loads(json.dumps(metrics))
    assert metrics["skipped"] is False and metrics["steps"] == 4 and metrics["resumed_from_step"] == 0
    assert metrics["n_train_images"] == 24 and metrics["n_test_images"] == 4
    assert 0 < metrics["psnr"] < 60 and -1 <= metrics["ssim"] <= 1 and metrics["s_per_step"] > 0
    assert {"final_l1", "final_kl", "loss_first", "loss_final", "images_per_s"} <= set(metrics)
    assert set(metrics["lesions"]) == set(FINDINGS)
    assert all(set(figures) == LESION_FIGURES for figures in metrics["lesions"].values())
    measured = [f for f, figures in metrics["lesions"].items() if figures["n_lesions"]]
    assert measured, "the toy test split has lesions"
    assert all(-1 <= metrics["lesions"][f]["crop_ssim"] <= 1 for f in measured)


def test_latent_space_logs_one_mlflow_run_with_params_step_metrics_and_artifacts(trained):
    root, _ = trained
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    (run,) = mlflow.search_runs(experiment_names=["cxrsynth"], output_format="list",
                                filter_string="tags.`cxrsynth.stage` = 'train_autoencoder'")
    client = mlflow.tracking.MlflowClient()
    assert [m.step for m in client.get_metric_history(run.info.run_id, "l1")] == [1, 2, 3, 4]
    assert run.data.params["autoencoder.downsampling"] == "4" and run.data.params["diffusion.space"] == "latent"
    assert run.data.params["runtime.precision_reason"] == "autoencoder.mixed_precision = no"
    assert run.data.params["runtime.memory_format.autoencoder"] == "contiguous"
    assert {"psnr", "ssim", "steps"} <= set(run.data.metrics)
    assert any(name.startswith("lesions.") and name.endswith(".crop_ssim") for name in run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model", "checkpoint", "figures", "loss.csv", "train_autoencoder.json"} <= artifacts


def test_an_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(trained, tmp_path, monkeypatch):
    from cxrsynth.flows import train_autoencoder as stage_flow

    root = project(tmp_path / "interrupted", **LATENT)
    monkeypatch.chdir(root)
    logged = stage_flow.StepMetrics.__call__

    def stop_at_3(self, step, parts):
        if step == 3:
            raise Interrupt
        logged(self, step, parts)

    with monkeypatch.context() as patch:
        patch.setattr(stage_flow.StepMetrics, "__call__", stop_at_3)
        with pytest.raises(Interrupt):
            stage_flow.train_autoencoder_flow("params.yaml")
    resumed = stage_flow.train_autoencoder_flow("params.yaml")
    assert resumed["resumed_from_step"] == 2 and resumed["steps"] == 4
    whole, _ = load_autoencoder(trained[0] / "data/train_autoencoder/model")
    again, _ = load_autoencoder(root / "data/train_autoencoder/model")
    for (name, a), (_, b) in zip(whole.state_dict().items(), again.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_pixel_space_skips_leaving_a_note_and_clearing_an_old_model(tiny_project):
    from cxrsynth.flows.train_autoencoder import train_autoencoder_flow

    root = tiny_project()
    stale = root / "data/train_autoencoder/model/model.pt"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier latent run's weights")
    metrics = train_autoencoder_flow("params.yaml")
    assert metrics["skipped"] is True and "diffusion.space is pixel" in metrics["reason"]
    assert [p.name for p in stale.parent.iterdir()] == [NOT_TRAINED]
    assert (root / "data/train_autoencoder/checkpoints").is_dir() and (root / "data/train_autoencoder/figures").is_dir()
    assert json.loads((root / "metrics/train_autoencoder.json").read_text()) == metrics
    assert (root / "plots/train_autoencoder/loss.csv").read_text() == EMPTY_LOSS_CURVE == loss_table([])
    assert not (root / "mlflow.db").exists()  # nothing trained, no run opened
